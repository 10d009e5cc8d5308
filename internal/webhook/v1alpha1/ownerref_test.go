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
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/metrics"
)

// collectTimeout bounds how long the suite's kube-controller-manager may
// take to delete what it collects, on a machine shared with other suites.
const collectTimeout = time.Minute

// waitBound waits until the claim's IPAllocation exists.
func waitBound(c *ipamv1alpha1.IPClaim) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
		g.Expect(c.Status.Allocation).NotTo(BeEmpty())
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: c.Status.Allocation}, &ipamv1alpha1.IPAllocation{})).To(Succeed())
	}).WithTimeout(collectTimeout).Should(Succeed())
}

// expectReleased fails unless the claims are gone and their finalizer
// released each CIDR on the way: the IPAllocation is gone and the pool's
// ledger no longer holds the CIDR as soon as the claim is, and the release
// is counted as a deletion, not as the orphan sweep's repair (which would
// free the CIDR too, only later).
func expectReleased(pool string, claims ...*ipamv1alpha1.IPClaim) {
	GinkgoHelper()
	for _, c := range claims {
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKeyFromObject(c), &ipamv1alpha1.IPClaim{})
		}).WithTimeout(collectTimeout).Should(Satisfy(apierrors.IsNotFound), "claim %s/%s", c.Namespace, c.Name)
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: c.Status.Allocation}, &ipamv1alpha1.IPAllocation{})).
			To(Satisfy(apierrors.IsNotFound), "the IPAllocation %s of a deleted claim", c.Status.Allocation)
		Expect(ledgerOf(pool)).NotTo(ContainElement(c.Spec.CIDR), "the ledger of pool %s still holds the CIDR of a deleted claim", pool)
	}
	Expect(promtestutil.ToFloat64(metrics.Released.WithLabelValues(pool, "Deleted"))).To(BeEquivalentTo(len(claims)))
	Expect(promtestutil.ToFloat64(metrics.Released.WithLabelValues(pool, "Orphaned"))).To(BeZero())
}

// expectReusable fails unless a new claim can take each claim's CIDR again
// (the pool has no reuse grace).
func expectReusable(pool string, claims ...*ipamv1alpha1.IPClaim) {
	GinkgoHelper()
	for _, c := range claims {
		again := newClaim("default", pool, func(n *ipamv1alpha1.IPClaim) { n.Spec.CIDR = c.Spec.CIDR })
		Expect(k8sClient.Create(ctx, again)).To(Succeed(), "taking %s again", c.Spec.CIDR)
		Expect(again.Spec.CIDR).To(Equal(c.Spec.CIDR))
	}
}

var _ = Describe("Release through Kubernetes' garbage collector and namespace controller", func() {
	DescribeTable("releases a claim whose owner is deleted",
		func(cidr string, propagation metav1.DeletionPropagation) {
			p := createPool(cidr, nil)
			owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "owner-", Namespace: "default"}}
			Expect(k8sClient.Create(ctx, owner)).To(Succeed())
			c := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) {
				c.OwnerReferences = []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID,
					BlockOwnerDeletion: ptr.To(true),
				}}
			})
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			Expect(c.Spec.CIDR).NotTo(BeEmpty())
			waitBound(c)
			Expect(ledgerOf(p.Name)).To(ConsistOf(c.Spec.CIDR))

			By("deleting the owner with propagation " + string(propagation))
			Expect(k8sClient.Delete(ctx, owner, client.PropagationPolicy(propagation))).To(Succeed())
			Eventually(func() error {
				return k8sClient.Get(ctx, client.ObjectKeyFromObject(owner), owner)
			}).WithTimeout(collectTimeout).Should(Satisfy(apierrors.IsNotFound))
			if propagation == metav1.DeletePropagationForeground {
				// The claim blocks its owner's deletion: the owner goes only
				// after the claim, so after kipam released it.
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), &ipamv1alpha1.IPClaim{})).
					To(Satisfy(apierrors.IsNotFound), "the owner went before the claim that blocks its deletion")
			}
			expectReleased(p.Name, c)
			expectReusable(p.Name, c)
		},
		Entry("in the background", "10.90.0.0/30", metav1.DeletePropagationBackground),
		Entry("in the foreground", "10.91.0.0/30", metav1.DeletePropagationForeground),
	)

	It("releases every claim of a deleted namespace", func() {
		p := createPool("10.92.0.0/28", nil)
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "doomed-"}}
		Expect(k8sClient.Create(ctx, ns)).To(Succeed())
		var claims []*ipamv1alpha1.IPClaim
		var cidrs []string
		for _, bits := range []int32{32, 31, 30} {
			c := newClaim(ns.Name, p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To(bits) })
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			waitBound(c)
			claims = append(claims, c)
			cidrs = append(cidrs, c.Spec.CIDR)
		}
		Expect(ledgerOf(p.Name)).To(ConsistOf(cidrs))

		Expect(k8sClient.Delete(ctx, ns)).To(Succeed())
		expectReleased(p.Name, claims...)
		var allocs ipamv1alpha1.IPAllocationList
		Expect(k8sClient.List(ctx, &allocs, client.MatchingLabels{ipamv1alpha1.LabelClaimNamespace: ns.Name})).To(Succeed())
		Expect(allocs.Items).To(BeEmpty())
		By("letting the namespace go once its claims are released")
		Eventually(func() error {
			return k8sClient.Get(ctx, client.ObjectKeyFromObject(ns), ns)
		}).WithTimeout(collectTimeout).Should(Satisfy(apierrors.IsNotFound))
		expectReusable(p.Name, claims...)
	})
})
