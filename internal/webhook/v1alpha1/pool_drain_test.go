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
})
