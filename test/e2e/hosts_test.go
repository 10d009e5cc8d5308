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

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The host address suite's address space: 10.235.0.0/16 and
// 2001:db8:e31::/48.
var _ = Describe("Host addresses with kubectl", func() {
	DescribeTable("hands out every address of the pool but the excluded first and last, one a claim, then denies",
		// want is every address the pool may hand out, in first-fit
		// order; first and last are the excluded ones.
		func(pool, cidr string, bits int, want []string, first, last string) {
			mustCreateCIDR(poolYAML(pool, fmt.Sprintf("cidr: %s, excludeFirst: 1, excludeLast: 1", cidr)))
			claim := func(name string) string { return claimYAML("default", name, "pool: "+pool) }
			for i, w := range want {
				Expect(mustCreateCIDR(claim(fmt.Sprintf("%s-%d", pool, i)))).To(Equal(w))
			}
			Expect(denied(claim(pool + "-more"))).To(ContainSubstring("pool %s is exhausted: no free /%d left", pool, bits))
			for _, addr := range []string{first, last} {
				Expect(denied(claimYAML("default", pool+"-edge", fmt.Sprintf("pool: %s, cidr: %s", pool, addr)))).
					To(ContainSubstring(`spec.cidr: Invalid value: "%s": overlaps space reserved in pool %s`, addr, pool))
			}
			eventually(jsonpathOf("{.status.capacity} {.status.allocated} {.status.available} {.status.claims}", "ippool", pool)).
				Should(Equal("8 6 0 6"))
			eventually(jsonpathOf(`{.status.conditions[?(@.type=="Exhausted")].status}`, "ippool", pool)).Should(Equal("True"))

			By("handing a released address out again, and still neither the first nor the last")
			out, err := k("delete", "ipclaim", "-n", "default", pool+"-2", "--wait=true", "--timeout=60s")
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(mustCreateCIDR(claim(pool + "-again"))).To(Equal(want[2]))
			Expect(denied(claim(pool + "-more"))).To(ContainSubstring("pool %s is exhausted: no free /%d left", pool, bits))
		},
		Entry("IPv4: a /29 in /32s", "e2e-host4", "10.235.0.0/29", 32,
			[]string{"10.235.0.1/32", "10.235.0.2/32", "10.235.0.3/32", "10.235.0.4/32", "10.235.0.5/32", "10.235.0.6/32"},
			"10.235.0.0/32", "10.235.0.7/32"),
		Entry("IPv6: a /125 in /128s", "e2e-host6", "2001:db8:e31::/125", 128,
			[]string{"2001:db8:e31::1/128", "2001:db8:e31::2/128", "2001:db8:e31::3/128", "2001:db8:e31::4/128", "2001:db8:e31::5/128", "2001:db8:e31::6/128"},
			"2001:db8:e31::/128", "2001:db8:e31::7/128"),
	)
})
