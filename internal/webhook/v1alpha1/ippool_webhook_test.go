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
	)

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
