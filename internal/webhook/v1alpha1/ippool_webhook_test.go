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

package v1alpha1

import (
	"fmt"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

var seq atomic.Int64

func pool(cidr string, mutate func(*ipamv1alpha1.IPPoolSpec)) *ipamv1alpha1.IPPool {
	p := &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pool-%d", seq.Add(1))},
		Spec:       ipamv1alpha1.IPPoolSpec{CIDR: cidr},
	}
	if mutate != nil {
		mutate(&p.Spec)
	}
	return p
}

var _ = Describe("IPPool webhook", func() {
	DescribeTable("denies what the schema cannot see",
		func(p *ipamv1alpha1.IPPool, want ...string) {
			err := k8sClient.Create(ctx, p)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			for _, w := range want {
				Expect(err.Error()).To(ContainSubstring(w))
			}
		},
		Entry("reserved CIDR outside the pool",
			pool("10.200.0.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.Reserved = []string{"10.201.0.0/28"} }),
			`spec.reserved[0]: Invalid value: "10.201.0.0/28": lies outside the pool 10.200.0.0/24`),
		Entry("reserved range of the other family",
			pool("10.200.1.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.Reserved = []string{"2001:db8::1-2001:db8::9"} }),
			"spec.reserved[0]", "is IPv6 but the pool is IPv4"),
		Entry("reserved range backwards",
			pool("10.200.2.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.Reserved = []string{"10.200.2.9-10.200.2.1"} }),
			"spec.reserved[0]", "ends before it starts"),
		Entry("exclusions larger than the pool",
			pool("10.200.3.0/30", func(s *ipamv1alpha1.IPPoolSpec) { s.ExcludeFirst, s.ExcludeLast = 3, 2 }),
			"spec.excludeFirst", "excludeFirst + excludeLast = 5 exceeds the pool's 4 addresses"),
		Entry("gateway outside the pool",
			pool("172.22.0.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.Gateway = "172.22.1.1" }),
			`spec.gateway: Invalid value: "172.22.1.1": lies outside the pool 172.22.0.0/24: a pool's gateway is one of its own addresses`),
		Entry("gateway of the other family",
			pool("172.22.1.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.Gateway = "2001:db8::1" }),
			`spec.gateway: Invalid value: "2001:db8::1": is IPv6 but the pool is IPv4`),
		Entry("gateway not an address",
			pool("172.22.2.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.Gateway = "172.22.2.0/24" }),
			`spec.gateway: Invalid value: "172.22.2.0/24": must be an IP address`),
		Entry("gateway not canonical",
			pool("fd00:22::/64", func(s *ipamv1alpha1.IPPoolSpec) { s.Gateway = "fd00:22:0::1" }),
			`spec.gateway: Invalid value: "fd00:22:0::1": must be written in canonical form: fd00:22::1`),
		Entry("address prefix length past the family's",
			pool("172.22.3.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.AddressPrefixLength = ptr.To[int32](33) }),
			`spec.addressPrefixLength: Invalid value: 33: must be at most 32 for an IPv4 pool`),
	)

	It("denies a carved pool whose gateway lies outside what it was given, and returns the carve", func() {
		parent := createPool("172.22.8.0/22", nil)
		denied := child(parent, 24, "")
		denied.Spec.Gateway = "172.22.11.1"
		err := k8sClient.Create(ctx, denied)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
		Expect(err.Error()).To(ContainSubstring(`spec.gateway: Invalid value: "172.22.11.1": lies outside the pool 172.22.8.0/24`))
		Expect(ledgerOf(parent.Name)).To(BeEmpty())
		ok := child(parent, 24, "")
		ok.Spec.Gateway = "172.22.8.1"
		Expect(k8sClient.Create(ctx, ok)).To(Succeed())
		Expect(ok.Spec.CIDR).To(Equal("172.22.8.0/24"))
	})

	It("denies a gateway set over an address already handed out", func() {
		p := createPool("172.22.12.0/24", nil)
		c := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDR).To(Equal("172.22.12.0/32"))
		patch := client.MergeFrom(p.DeepCopy())
		p.Spec.Gateway = "172.22.12.0"
		Expect(k8sClient.Patch(ctx, p, patch)).To(MatchError(ContainSubstring("gateway would cover 1 allocations")))
		p.Spec.Gateway = "172.22.12.1"
		Expect(k8sClient.Patch(ctx, p, patch)).To(Succeed())
		// The claim webhook reads the pool from kipam's cache: a create in
		// the moment before it shows the update would not see the gateway
		// yet (docs/design.md, "Pools for machines"). A dry run, which
		// commits nothing, tells when it does.
		Eventually(func() string {
			dry := newClaim("default", p.Name, nil)
			Expect(k8sClient.Create(ctx, dry, client.DryRunAll)).To(Succeed())
			return dry.Spec.CIDR
		}).Should(Equal("172.22.12.2/32"))
		next := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, next)).To(Succeed())
		Expect(next.Spec.CIDR).To(Equal("172.22.12.2/32"), "the gateway is never handed out")
	})

	It("denies a pool that overlaps another, naming it", func() {
		a := pool("10.210.0.0/16", nil)
		Expect(k8sClient.Create(ctx, a)).To(Succeed())
		for _, cidr := range []string{"10.210.4.0/24", "10.210.0.0/15", "10.210.0.0/16"} {
			err := k8sClient.Create(ctx, pool(cidr, nil))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%s: want Invalid, got %v", cidr, err)
			Expect(err.Error()).To(ContainSubstring(fmt.Sprintf("overlaps pool %s (10.210.0.0/16)", a.Name)))
		}
		Expect(k8sClient.Create(ctx, pool("10.211.0.0/16", nil))).To(Succeed())
	})

	It("keeps the drain finalizer on a pool", func() {
		parent := pool("10.220.0.0/16", nil)
		Expect(k8sClient.Create(ctx, parent)).To(Succeed())
		Expect(parent.Finalizers).To(ContainElement(ipamv1alpha1.PoolFinalizer), "a pool has its drain finalizer from its creation")
		By("an update that drops the drain finalizer gets it back")
		patch := client.MergeFrom(parent.DeepCopy())
		parent.Finalizers = nil
		Expect(k8sClient.Patch(ctx, parent, patch)).To(Succeed())
		Expect(parent.Finalizers).To(ContainElement(ipamv1alpha1.PoolFinalizer))
	})

	It("checks reserved space again on update", func() {
		p := pool("10.240.0.0/24", nil)
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		patch := client.MergeFrom(p.DeepCopy())
		p.Spec.Reserved = []string{"10.240.1.0/24"}
		p.Spec.DefaultPrefixLength = ptr.To[int32](28)
		Expect(k8sClient.Patch(ctx, p, patch)).To(MatchError(ContainSubstring("lies outside the pool 10.240.0.0/24")))
	})
})
