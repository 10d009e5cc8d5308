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

package controller

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

// The CRD schema is kipam's first line of defence: these tables create each
// kind against the real API server and check that what is invalid is denied
// with the field and the reason, and that what is valid is stored.

var seq atomic.Int64

func uniqueName(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

func newPool(mutate func(*ipamv1alpha1.IPPoolSpec)) *ipamv1alpha1.IPPool {
	p := &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("pool")},
		Spec:       ipamv1alpha1.IPPoolSpec{CIDR: "10.0.0.0/16"},
	}
	if mutate != nil {
		mutate(&p.Spec)
	}
	return p
}

func newClaim(mutate func(*ipamv1alpha1.IPClaimSpec)) *ipamv1alpha1.IPClaim {
	c := &ipamv1alpha1.IPClaim{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("claim"), Namespace: "default"},
		Spec:       ipamv1alpha1.IPClaimSpec{Pool: "tenant-a"},
	}
	if mutate != nil {
		mutate(&c.Spec)
	}
	return c
}

func newAllocation(mutate func(*ipamv1alpha1.IPAllocationSpec)) *ipamv1alpha1.IPAllocation {
	a := &ipamv1alpha1.IPAllocation{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("alloc")},
		Spec: ipamv1alpha1.IPAllocationSpec{
			Pool:     "tenant-a",
			CIDR:     "10.0.0.0/24",
			ClaimRef: ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: "default", Name: "web"},
		},
	}
	if mutate != nil {
		mutate(&a.Spec)
	}
	return a
}

// expectCreate creates obj and expects success when want is empty, or an
// Invalid error whose message contains every string in want.
func expectCreate(obj client.Object, want ...string) {
	GinkgoHelper()
	err := k8sClient.Create(ctx, obj)
	if err == nil {
		// Deleted after the spec: a pool of 0.0.0.0/0 left behind would
		// overlap every later spec's pools.
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, obj))).To(Succeed()) })
	}
	expectInvalid(err, want...)
}

func expectInvalid(err error, want ...string) {
	GinkgoHelper()
	if len(want) == 0 {
		Expect(err).NotTo(HaveOccurred())
		return
	}
	Expect(err).To(HaveOccurred())
	Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
	for _, w := range want {
		Expect(err.Error()).To(ContainSubstring(w))
	}
}

const canonical = "must be a canonical CIDR"

var _ = Describe("IPPool schema", func() {
	DescribeTable("create",
		func(mutate func(*ipamv1alpha1.IPPoolSpec), want ...string) {
			expectCreate(newPool(mutate), want...)
		},
		Entry("IPv4 /16", nil),
		Entry("IPv6 /48", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "2001:db8:1::/48" }),
		Entry("IPv4 /0", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "0.0.0.0/0" }),
		Entry("IPv6 /0", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "::/0" }),
		Entry("IPv4 /32", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "10.0.0.1/32" }),
		Entry("IPv6 /128", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "2001:db8::1/128" }),
		Entry("every option", func(s *ipamv1alpha1.IPPoolSpec) {
			s.Reserved = []string{"10.0.0.0/28", "10.0.1.5-10.0.1.9"}
			s.ExcludeFirst, s.ExcludeLast = 1, 1
			s.DefaultPrefixLength = ptr.To[int32](24)
			s.PrefixLength = ptr.To[int32](16)
			s.Strategy = ipamv1alpha1.Random
			s.ReuseGracePeriodSeconds = ptr.To[int64](60)
			s.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}}
		}),
		Entry("carved from a parent", func(s *ipamv1alpha1.IPPoolSpec) {
			s.CIDR, s.ParentPool, s.PrefixLength = "", "parent", ptr.To[int32](24)
		}),
		Entry("host bits set", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "10.0.0.1/16" }, "spec.cidr", canonical),
		Entry("prefix length 33", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "10.0.0.0/33" }, "spec.cidr", canonical),
		Entry("not a CIDR", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "banana" }, "spec.cidr", canonical),
		Entry("a bare address", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "10.0.0.0" }, "spec.cidr", canonical),
		Entry("IPv6 upper case", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "2001:DB8::/32" }, "spec.cidr", canonical),
		Entry("IPv4-mapped IPv6", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "::ffff:10.0.0.0/104" }, "spec.cidr", canonical),
		Entry("neither cidr nor parent", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "" },
			"spec.cidr", "cidr is required unless parentPool is set"),
		Entry("parent without a size", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR, s.ParentPool = "", "parent" },
			"spec.prefixLength", "prefixLength is required when cidr is empty"),
		Entry("prefixLength disagrees with cidr", func(s *ipamv1alpha1.IPPoolSpec) { s.PrefixLength = ptr.To[int32](20) },
			"spec.prefixLength", "must equal the prefix length of cidr"),
		Entry("prefixLength 129", func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR, s.ParentPool, s.PrefixLength = "", "p", ptr.To[int32](129) },
			"spec.prefixLength", "less than or equal to 128"),
		Entry("IPv4 default /33", func(s *ipamv1alpha1.IPPoolSpec) { s.DefaultPrefixLength = ptr.To[int32](33) },
			"spec.defaultPrefixLength", "family's maximum"),
		Entry("default wider than the pool", func(s *ipamv1alpha1.IPPoolSpec) { s.DefaultPrefixLength = ptr.To[int32](8) },
			"spec.defaultPrefixLength", "between the pool's own prefix length"),
		Entry("reserved not canonical", func(s *ipamv1alpha1.IPPoolSpec) { s.Reserved = []string{"10.0.0.1/24"} },
			"spec.reserved[0]", "must be a canonical CIDR (10.0.0.0/28) or an address range"),
		Entry("reserved range half open", func(s *ipamv1alpha1.IPPoolSpec) { s.Reserved = []string{"10.0.0.1-"} },
			"spec.reserved[0]", "address range first-last"),
		Entry("unknown strategy", func(s *ipamv1alpha1.IPPoolSpec) { s.Strategy = "BestFit" },
			"spec.strategy", `supported values: "FirstFit", "Random"`),
		Entry("negative exclusion", func(s *ipamv1alpha1.IPPoolSpec) { s.ExcludeFirst = -1 },
			"spec.excludeFirst", "greater than or equal to 0"),
		Entry("negative grace", func(s *ipamv1alpha1.IPPoolSpec) { s.ReuseGracePeriodSeconds = ptr.To[int64](-1) },
			"spec.reuseGracePeriodSeconds", "greater than or equal to 0"),
	)

	It("defaults the strategy to FirstFit", func() {
		p := newPool(nil)
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		Expect(p.Spec.Strategy).To(Equal(ipamv1alpha1.FirstFit))
	})

	DescribeTable("update",
		func(create, update func(*ipamv1alpha1.IPPoolSpec), want ...string) {
			p := newPool(create)
			Expect(k8sClient.Create(ctx, p)).To(Succeed())
			update(&p.Spec)
			expectInvalid(k8sClient.Update(ctx, p), want...)
		},
		Entry("cidr changed", nil, func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "10.1.0.0/16" },
			"spec.cidr", "cidr is immutable once set"),
		Entry("cidr removed", func(s *ipamv1alpha1.IPPoolSpec) { s.ParentPool = "parent" },
			func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR, s.PrefixLength = "", ptr.To[int32](16) },
			"spec.cidr", "cidr is immutable once set"),
		Entry("cidr set once, carved", func(s *ipamv1alpha1.IPPoolSpec) {
			s.CIDR, s.ParentPool, s.PrefixLength = "", "parent", ptr.To[int32](24)
		},
			func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "10.0.0.0/24" }),
		Entry("parentPool changed", func(s *ipamv1alpha1.IPPoolSpec) { s.ParentPool = "a" },
			func(s *ipamv1alpha1.IPPoolSpec) { s.ParentPool = "b" }, "spec.parentPool", "parentPool is immutable"),
		Entry("parentPool added", nil,
			func(s *ipamv1alpha1.IPPoolSpec) { s.ParentPool = "b" }, "spec.parentPool", "parentPool is immutable"),
		Entry("reserved changed", nil, func(s *ipamv1alpha1.IPPoolSpec) { s.Reserved = []string{"10.0.0.0/24"} }),
	)
})

var _ = Describe("IPClaim schema", func() {
	DescribeTable("create",
		func(mutate func(*ipamv1alpha1.IPClaimSpec), want ...string) {
			expectCreate(newClaim(mutate), want...)
		},
		Entry("by pool name", nil),
		Entry("by selector and family", func(s *ipamv1alpha1.IPClaimSpec) {
			s.Pool = ""
			s.PoolSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "shared"}}
			s.IPFamily = ipamv1alpha1.IPv6
		}),
		Entry("a specific IPv6 prefix", func(s *ipamv1alpha1.IPClaimSpec) { s.CIDR = "2001:db8::/64"; s.PrefixLength = ptr.To[int32](64) }),
		Entry("a /24 with a lifetime that waits", func(s *ipamv1alpha1.IPClaimSpec) {
			s.PrefixLength, s.IPFamily = ptr.To[int32](24), ipamv1alpha1.IPv4
			s.TTLSeconds, s.WhenExhausted = ptr.To[int64](3600), ipamv1alpha1.Wait
		}),
		Entry("neither pool nor selector", func(s *ipamv1alpha1.IPClaimSpec) { s.Pool = "" },
			"spec.pool", "exactly one of pool, pools or poolSelector must be set"),
		Entry("both pool and selector", func(s *ipamv1alpha1.IPClaimSpec) {
			s.PoolSelector = &metav1.LabelSelector{}
			s.IPFamily = ipamv1alpha1.IPv4
		},
			"spec.pool", "exactly one of pool, pools or poolSelector must be set"),
		Entry("selector without a family", func(s *ipamv1alpha1.IPClaimSpec) { s.Pool, s.PoolSelector = "", &metav1.LabelSelector{} },
			"spec.ipFamily", "ipFamily (ipFamilies for a dual-stack claim) is required with poolSelector"),
		Entry("cidr of the other family", func(s *ipamv1alpha1.IPClaimSpec) { s.CIDR, s.IPFamily = "10.0.0.0/24", ipamv1alpha1.IPv6 },
			"spec.cidr", "cidr is not of the family given by ipFamily"),
		Entry("IPv4 /33", func(s *ipamv1alpha1.IPClaimSpec) { s.PrefixLength, s.IPFamily = ptr.To[int32](33), ipamv1alpha1.IPv4 },
			"spec.prefixLength", "at most 32 for IPv4"),
		Entry("/129", func(s *ipamv1alpha1.IPClaimSpec) { s.PrefixLength = ptr.To[int32](129) },
			"spec.prefixLength", "less than or equal to 128"),
		Entry("prefixLength disagrees with cidr", func(s *ipamv1alpha1.IPClaimSpec) { s.CIDR, s.PrefixLength = "10.0.0.0/24", ptr.To[int32](28) },
			"spec.prefixLength", "must equal the prefix length of cidr"),
		Entry("cidr not canonical", func(s *ipamv1alpha1.IPClaimSpec) { s.CIDR = "10.0.0.7/24" }, "spec.cidr", canonical),
		Entry("unknown family", func(s *ipamv1alpha1.IPClaimSpec) { s.IPFamily = "IPv5" }, "spec.ipFamily", "supported values"),
		Entry("unknown exhaustion policy", func(s *ipamv1alpha1.IPClaimSpec) { s.WhenExhausted = "Retry" },
			"spec.whenExhausted", `supported values: "Deny", "Wait"`),
		Entry("zero lifetime", func(s *ipamv1alpha1.IPClaimSpec) { s.TTLSeconds = ptr.To[int64](0) },
			"spec.ttlSeconds", "greater than or equal to 1"),
	)

	It("defaults whenExhausted to Deny", func() {
		c := newClaim(nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.WhenExhausted).To(Equal(ipamv1alpha1.Deny))
	})

	DescribeTable("update",
		func(create, update func(*ipamv1alpha1.IPClaimSpec), want ...string) {
			c := newClaim(create)
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			update(&c.Spec)
			expectInvalid(k8sClient.Update(ctx, c), want...)
		},
		Entry("cidr set once", nil, func(s *ipamv1alpha1.IPClaimSpec) { s.CIDR = "10.0.0.4/32" }),
		Entry("cidr changed", func(s *ipamv1alpha1.IPClaimSpec) { s.CIDR = "10.0.0.4/32" },
			func(s *ipamv1alpha1.IPClaimSpec) { s.CIDR = "10.0.0.5/32" }, "spec.cidr", "cidr is immutable once set"),
		Entry("cidr removed", func(s *ipamv1alpha1.IPClaimSpec) { s.CIDR = "10.0.0.4/32" },
			func(s *ipamv1alpha1.IPClaimSpec) { s.CIDR = "" }, "spec.cidr", "cidr is immutable once set"),
		Entry("pool changed", nil, func(s *ipamv1alpha1.IPClaimSpec) { s.Pool = "other" }, "spec.pool", "pool is immutable"),
		Entry("prefixLength changed", nil, func(s *ipamv1alpha1.IPClaimSpec) { s.PrefixLength = ptr.To[int32](30) },
			"spec.prefixLength", "prefixLength is immutable"),
		Entry("ipFamily changed", nil, func(s *ipamv1alpha1.IPClaimSpec) { s.IPFamily = ipamv1alpha1.IPv6 },
			"spec.ipFamily", "ipFamily is immutable"),
		Entry("lifetime renewed", func(s *ipamv1alpha1.IPClaimSpec) { s.TTLSeconds = ptr.To[int64](60) },
			func(s *ipamv1alpha1.IPClaimSpec) { s.TTLSeconds = ptr.To[int64](600) }),
	)
})

var _ = Describe("IPAllocation schema", func() {
	DescribeTable("create",
		func(mutate func(*ipamv1alpha1.IPAllocationSpec), want ...string) {
			expectCreate(newAllocation(mutate), want...)
		},
		Entry("bound to a claim", nil),
		Entry("bound to a child pool", func(s *ipamv1alpha1.IPAllocationSpec) {
			s.ClaimRef = ipamv1alpha1.ClaimRef{Kind: "IPPool", Name: "child"}
		}),
		Entry("no pool", func(s *ipamv1alpha1.IPAllocationSpec) { s.Pool = "" }, "spec.pool"),
		Entry("cidr not canonical", func(s *ipamv1alpha1.IPAllocationSpec) { s.CIDR = "10.0.0.1/24" }, "spec.cidr", canonical),
		Entry("unknown holder kind", func(s *ipamv1alpha1.IPAllocationSpec) { s.ClaimRef.Kind = "Pod" },
			"spec.claimRef.kind", "supported values"),
	)

	DescribeTable("update",
		func(update func(*ipamv1alpha1.IPAllocationSpec), want ...string) {
			a := newAllocation(nil)
			Expect(k8sClient.Create(ctx, a)).To(Succeed())
			update(&a.Spec)
			expectInvalid(k8sClient.Update(ctx, a), want...)
		},
		Entry("holder uid completed", func(s *ipamv1alpha1.IPAllocationSpec) { s.ClaimRef.UID = "0b4a4c3e-0000-4000-8000-000000000001" }),
		Entry("cidr changed", func(s *ipamv1alpha1.IPAllocationSpec) { s.CIDR = "10.0.1.0/24" },
			"spec.cidr", "pool and cidr are immutable"),
		Entry("holder changed", func(s *ipamv1alpha1.IPAllocationSpec) { s.ClaimRef.Name = "other" },
			"spec.claimRef", "claimRef may only be completed, never changed"),
		Entry("holder namespace changed", func(s *ipamv1alpha1.IPAllocationSpec) { s.ClaimRef.Namespace = "other" },
			"spec.claimRef", "claimRef may only be completed, never changed"),
	)
})
