//go:build e2e

/*
Copyright 2026 The kipam Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package e2e

import (
	"fmt"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The overlap suite's address space: 10.234.0.0/16 and 2001:db8:e40::/44.
var _ = Describe("Overlap prevention with kubectl", func() {
	DescribeTable("denies a top-level pool that overlaps another, naming it, and takes its neighbour",
		func(name, cidr string, overlapping []string, neighbour string) {
			createPool(name, cidr)
			for i, o := range overlapping {
				other := fmt.Sprintf("%s-x%d", name, i)
				Expect(denied(poolYAML(other, "cidr: "+o))).To(ContainSubstring(
					`spec.cidr: Invalid value: "%s": overlaps pool %s (%s) in the cluster's pools`, o, name, cidr))
				out, err := k("get", "ippool", other, "--ignore-not-found", "-o", "name")
				Expect(err).NotTo(HaveOccurred(), out)
				Expect(out).To(BeEmpty(), "a denied pool was stored")
			}
			Expect(mustCreateCIDR(poolYAML(name+"-next", "cidr: "+neighbour))).To(Equal(neighbour))
		},
		// Overlapping: the same cidr, one inside it, one around it.
		Entry("IPv4", "e2e-ov4", "10.234.0.0/20", []string{"10.234.0.0/20", "10.234.8.0/24", "10.234.0.0/18"}, "10.234.16.0/20"),
		Entry("IPv6", "e2e-ov6", "2001:db8:e40::/48", []string{"2001:db8:e40::/48", "2001:db8:e40:ff00::/56", "2001:db8:e40::/46"}, "2001:db8:e41::/48"),
	)

	DescribeTable("lets exactly one of 20 concurrent kubectl creates of overlapping pools through",
		// cidr(i) is the pool the i-th kubectl asks for: they all contain
		// one address, so every two of them overlap.
		func(name string, cidr func(i int) string) {
			const n = 20
			outs, errs := make([]string, n), make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					outs[i], errs[i] = createCIDR(poolYAML(fmt.Sprintf("%s-%02d", name, i), "cidr: "+cidr(i), "labels: {e2e: "+name+"}"))
				})
			}
			wg.Wait()
			var won []int
			for i, err := range errs {
				if err == nil {
					won = append(won, i)
				}
			}
			Expect(won).To(HaveLen(1), "kubectl create succeeded for %v: %q", won, outs)
			w := won[0]
			winner := fmt.Sprintf("%s-%02d", name, w)
			Expect(outs[w]).To(Equal(cidr(w)))
			for i, out := range outs {
				if i != w {
					Expect(out).To(ContainSubstring(`spec.cidr: Invalid value: "%s": overlaps pool %s (%s) in the cluster's pools`, cidr(i), winner, cidr(w)))
				}
			}
			out, err := k("get", "ippools", "-l", "e2e="+name, "-o", "name")
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(Equal("ippool.ipam.kipam.dev/" + winner + "\n"))
			eventually(jsonpathOf(readyOf, "ippool", winner)).Should(Equal("True/PoolReady"))
		},
		Entry("IPv4, /17 to /24 around 10.234.128.0", "e2e-race4", func(i int) string { return fmt.Sprintf("10.234.128.0/%d", 17+i%8) }),
		Entry("IPv6, /48 to /55 around 2001:db8:e44::", "e2e-race6", func(i int) string { return fmt.Sprintf("2001:db8:e44::/%d", 48+i%8) }),
	)
})
