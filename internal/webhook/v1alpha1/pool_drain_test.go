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

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

var _ = Describe("Deleting a pool", func() {
	It("waits until nothing is allocated from it, and takes no new claims meanwhile", func() {
		p := createPool("10.93.0.0/24", nil)
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(p.Finalizers).To(ContainElement(ipamv1alpha1.PoolFinalizer))
		}).WithTimeout(10 * time.Second).Should(Succeed())
		a := newClaim("default", p.Name, nil)
		b := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, a)).To(Succeed())
		Expect(k8sClient.Create(ctx, b)).To(Succeed())

		Expect(k8sClient.Delete(ctx, p)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			ready := meta.FindStatusCondition(p.Status.Conditions, ipamv1alpha1.ConditionReady)
			g.Expect(ready).NotTo(BeNil())
			g.Expect(ready.Reason).To(Equal(ipamv1alpha1.ReasonDraining))
			g.Expect(ready.Message).To(ContainSubstring("2 prefixes are still allocated"))
		}).WithTimeout(10 * time.Second).Should(Succeed())
		Expect(ledgerOf(p.Name)).To(ConsistOf(a.Spec.CIDR, b.Spec.CIDR), "the ledgers outlive the pool's delete")

		err := k8sClient.Create(ctx, newClaim("default", p.Name, nil))
		Expect(err).To(MatchError(ContainSubstring("spec.pool: Forbidden: pool %s is being deleted", p.Name)))

		Expect(k8sClient.Delete(ctx, a)).To(Succeed())
		Consistently(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p) }).Should(Succeed(), "one claim still holds a prefix")
		Expect(k8sClient.Delete(ctx, b)).To(Succeed())
		// Claim deleted, its release committed, the pool woken by the ledger
		// change: several steps, so more than the default second.
		Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)) }).
			WithTimeout(collectTimeout).Should(BeTrue())
		By("the garbage collector then deletes its ledgers")
		Eventually(func(g Gomega) {
			var ledgers ipamv1alpha1.IPLedgerList
			g.Expect(k8sClient.List(ctx, &ledgers, client.MatchingLabels{ipamv1alpha1.LabelPool: p.Name})).To(Succeed())
			g.Expect(ledgers.Items).To(BeEmpty())
		}).WithTimeout(collectTimeout).Should(Succeed())
	})

	// A foreground deletion has the garbage collector delete the pool's
	// dependents, its ledgers, first; --cascade=orphan leaves them without
	// an owner. Either way the claims keep their prefixes recorded, the
	// pool goes when they are gone, and its ledgers with it.
	DescribeTable("whatever the propagation policy, keeps the ledgers while claims hold prefixes",
		func(cidr string, policy metav1.DeletionPropagation) {
			p := createPool(cidr, nil)
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
				g.Expect(p.Finalizers).To(ContainElement(ipamv1alpha1.PoolFinalizer))
			}).Should(Succeed())
			a := newClaim("default", p.Name, nil)
			Expect(k8sClient.Create(ctx, a)).To(Succeed())

			Expect(k8sClient.Delete(ctx, p, client.PropagationPolicy(policy))).To(Succeed())
			Eventually(func(g Gomega) {
				var ledgers ipamv1alpha1.IPLedgerList
				g.Expect(k8sClient.List(ctx, &ledgers, client.MatchingLabels{ipamv1alpha1.LabelPool: p.Name})).To(Succeed())
				g.Expect(ledgers.Items).NotTo(BeEmpty())
				for _, l := range ledgers.Items {
					if policy == metav1.DeletePropagationForeground {
						g.Expect(l.DeletionTimestamp).NotTo(BeNil(), "the garbage collector deletes %s", l.Name)
					} else {
						g.Expect(l.OwnerReferences).To(BeEmpty(), "the garbage collector orphans %s", l.Name)
					}
				}
			}).WithTimeout(collectTimeout).Should(Succeed())
			Consistently(func() []string { return ledgerOf(p.Name) }).WithTimeout(2*time.Second).
				Should(ConsistOf(a.Spec.CIDR), "the claim's prefix stays recorded")

			Expect(k8sClient.Delete(ctx, a)).To(Succeed())
			Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)) }).
				WithTimeout(collectTimeout).Should(BeTrue())
			Eventually(func(g Gomega) {
				var ledgers ipamv1alpha1.IPLedgerList
				g.Expect(k8sClient.List(ctx, &ledgers, client.MatchingLabels{ipamv1alpha1.LabelPool: p.Name})).To(Succeed())
				g.Expect(ledgers.Items).To(BeEmpty())
			}).WithTimeout(collectTimeout).Should(Succeed())

			By("a pool created again under the name serves claims from its own ledger")
			again := pool(cidr, nil)
			again.Name = p.Name
			Expect(k8sClient.Create(ctx, again)).To(Succeed())
			c := newClaim("default", again.Name, nil)
			Eventually(func() error { return k8sClient.Create(ctx, c) }).WithTimeout(collectTimeout).Should(Succeed())
			Expect(c.Spec.CIDR).To(Equal(a.Spec.CIDR))
		},
		Entry("foreground", "10.165.0.0/24", metav1.DeletePropagationForeground),
		Entry("orphan", "10.166.0.0/24", metav1.DeletePropagationOrphan),
	)
})
