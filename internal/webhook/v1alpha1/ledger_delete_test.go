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
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// The chaos suite's delete-records fault found direct deletes of IPLedgers
// accepted: the ledger then sat Terminating behind its finalizer until its
// pool went. A delete of a live pool's ledger is refused at admission; the
// pool's own deletion still takes its ledgers (the garbage collector, and
// kipam's ledger controller after an orphan deletion: "whatever the
// propagation policy, keeps the ledgers while claims hold prefixes").
var _ = Describe("Deleting an IPLedger directly", func() {
	It("is refused while its pool is served, and the ledger goes with its pool", func() {
		p := createPool("10.232.0.0/24", nil)
		a := newClaim("default", p.Name, nil)
		Eventually(func() error { return k8sClient.Create(ctx, a) }).Should(Succeed())
		root := &ipamv1alpha1.IPLedger{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: p.Name}, root)).To(Succeed())

		err := k8sClient.Delete(ctx, root)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "deleting the ledger of a live pool: %v", err)
		Expect(err.Error()).To(ContainSubstring("the record of what the live IPPool " + p.Name + " has allocated"))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(root), root)).To(Succeed())
		Expect(root.DeletionTimestamp).To(BeNil())
		Expect(ledgerOf(p.Name)).To(ConsistOf(a.Spec.CIDR))

		By("the address space's ledger, which no pool's deletion takes")
		space := &ipamv1alpha1.IPLedger{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ipam.SpaceIPv4}, space)).To(Succeed())
		err = k8sClient.Delete(ctx, space)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "deleting the IPv4 space's ledger: %v", err)

		By("deleting the claim and the pool")
		Expect(k8sClient.Delete(ctx, a)).To(Succeed())
		Expect(k8sClient.Delete(ctx, p)).To(Succeed())
		Eventually(func(g Gomega) {
			var ledgers ipamv1alpha1.IPLedgerList
			g.Expect(k8sClient.List(ctx, &ledgers, client.MatchingLabels{ipamv1alpha1.LabelPool: p.Name})).To(Succeed())
			g.Expect(ledgers.Items).To(BeEmpty())
		}).WithTimeout(collectTimeout).Should(Succeed())
	})
})
