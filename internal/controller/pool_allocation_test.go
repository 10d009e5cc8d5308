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
	"net/netip"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

var _ = Describe("A child pool's IPAllocation", func() {
	It("deleted from under the live pool is created again, and the parent's ledger is left as it was", func() {
		By("starting kipam's controllers")
		startKipam(Options{OrphanGrace: time.Hour}, nil)

		By("creating a parent and a child carved from it, as kipam's webhook stores them")
		parent := fencePool("10.207.0.0/16")
		cidr := netip.MustParsePrefix("10.207.4.0/24")
		child := newPool(func(s *ipamv1alpha1.IPPoolSpec) {
			s.CIDR, s.ParentPool, s.PrefixLength = cidr.String(), parent.Name, ptr.To[int32](24)
		})
		child.Finalizers = []string{ipamv1alpha1.PoolFinalizer}
		child.Annotations = map[string]string{ipam.EntryAnnotation: ipam.NewEntryID()}
		// The webhook commits the carve before the pool is stored.
		tm := ipam.NewManager(ipam.ClientStore{Reader: k8sClient, Writer: k8sClient}, nil)
		_, err := tm.Allocate(ctx, ipam.Request{
			Pool: parent, CIDR: cidr, Bits: cidr.Bits(), Holder: ipam.PoolHolder(child.Name), ID: ipam.PoolEntryID(child)})
		Expect(err).NotTo(HaveOccurred())
		Expect(k8sClient.Create(ctx, child)).To(Succeed())
		carved := recordedEntry(tm, parent, cidr)
		Expect(carved.Is(ipam.PoolHolder(child.Name), ipam.PoolEntryID(child))).To(BeTrue())

		name := ipam.AllocationName(parent.Name, cidr)
		boundToChild := func(g Gomega, a *ipamv1alpha1.IPAllocation) {
			g.Expect(a.Spec.ClaimRef).To(Equal(ipamv1alpha1.ClaimRef{Kind: "IPPool", Name: child.Name, UID: child.UID}))
			g.Expect(a.Spec.Pool).To(Equal(parent.Name))
			g.Expect(a.Spec.CIDR).To(Equal(cidr.String()))
			g.Expect(a.Spec.Entry).To(Equal(ipam.PoolEntryID(child)))
		}
		var first ipamv1alpha1.IPAllocation
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &first)).To(Succeed())
			boundToChild(g, &first)
			// Its status says its prefix is recorded (NoOverlap), so that
			// its later passes read the records, not the parent's ledger.
			var p ipamv1alpha1.IPPool
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(child), &p)).To(Succeed())
			c := meta.FindStatusCondition(p.Status.Conditions, ipamv1alpha1.ConditionOverlapping)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(ipamv1alpha1.ReasonNoOverlap))
		}).WithTimeout(time.Minute).Should(Succeed(), "the pool controller records the child's prefix in its IPAllocation")

		// Until its passes stop (a status write is followed by another pass
		// a status interval later), any pass would find the allocation
		// gone; once they stop, only the deletion can wake it.
		Eventually(func(g Gomega) {
			var p ipamv1alpha1.IPPool
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(child), &p)).To(Succeed())
			g.Consistently(func(g Gomega) string {
				var now ipamv1alpha1.IPPool
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(child), &now)).To(Succeed())
				return now.ResourceVersion
			}).WithTimeout(4 * statusInterval).Should(Equal(p.ResourceVersion))
		}).WithTimeout(time.Minute).Should(Succeed(), "the child's status settles")

		By("deleting the IPAllocation from under the live child, its finalizer removed by hand")
		before := first.DeepCopy()
		controllerutil.RemoveFinalizer(&first, ipamv1alpha1.AllocationFinalizer)
		Expect(k8sClient.Patch(ctx, &first, client.MergeFrom(before))).To(Succeed())
		Expect(k8sClient.Delete(ctx, &first, client.Preconditions{UID: &first.UID})).To(Succeed())

		Eventually(func(g Gomega) {
			var a ipamv1alpha1.IPAllocation
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &a)).To(Succeed())
			g.Expect(a.UID).NotTo(Equal(first.UID), "a new object, not the deleted one")
			g.Expect(a.DeletionTimestamp).To(BeNil())
			g.Expect(a.Finalizers).To(ContainElement(ipamv1alpha1.AllocationFinalizer))
			boundToChild(g, &a)
		}).WithTimeout(30*time.Second).Should(Succeed(), "the child's IPAllocation is created again")

		var p ipamv1alpha1.IPPool
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(child), &p)).To(Succeed())
		Expect(p.DeletionTimestamp).To(BeNil())
		Expect(recordedEntry(tm, parent, cidr)).To(Equal(carved), "the carve in the parent's ledger is left as it was")
	})
})
