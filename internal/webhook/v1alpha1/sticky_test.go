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
	"net/netip"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

var _ = Describe("Sticky addresses", func() {
	It("gives a claim created again under its name or stickyKey its prefix back, and others a retained prefix only when nothing else fits", func() {
		p := createPool("10.196.0.0/29", func(s *ipamv1alpha1.IPPoolSpec) {
			s.RetainReleased = &metav1.Duration{Duration: time.Hour}
			s.ReuseGracePeriodSeconds = ptr.To[int64](0)
		})
		ns := waitNamespace()
		named := func(name string) *ipamv1alpha1.IPClaim {
			return newClaim(ns, p.Name, func(c *ipamv1alpha1.IPClaim) { c.Name = name })
		}
		keyed := func() *ipamv1alpha1.IPClaim {
			return newClaim(ns, p.Name, func(c *ipamv1alpha1.IPClaim) { c.Name, c.GenerateName, c.Spec.StickyKey = "", "db-", "db" })
		}

		By("a StatefulSet-style delete and create again")
		web0 := named("web-0")
		Expect(k8sClient.Create(ctx, web0)).To(Succeed())
		first := web0.Spec.CIDR
		Expect(first).NotTo(BeEmpty())
		Expect(k8sClient.Create(ctx, named("web-1"))).To(Succeed())
		deleteAndWait(web0)
		other := named("other")
		Expect(k8sClient.Create(ctx, other)).To(Succeed())
		Expect(other.Spec.CIDR).NotTo(Equal(first), "another claim got web-0's retained prefix while others were free")
		again := named("web-0")
		Expect(k8sClient.Create(ctx, again)).To(Succeed())
		Expect(again.Spec.CIDR).To(Equal(first), "web-0 created again")

		By("who held it stays on record in the ledger")
		l, err := ipam.ReadLedger(ctx, k8sClient, p.Name)
		Expect(err).NotTo(HaveOccurred())
		rec := l.Released[netip.MustParsePrefix(first)]
		Expect(rec.Namespace).To(Equal(ns))
		Expect(rec.Identity).To(Equal("web-0"))
		Expect(rec.UID).To(Equal(string(web0.UID)))

		By("a controller that renames its claims keeps its prefix through spec.stickyKey")
		db := keyed()
		Expect(k8sClient.Create(ctx, db)).To(Succeed())
		kept := db.Spec.CIDR
		deleteAndWait(db)
		By("a claim asking for the retained prefix by cidr is denied, naming who it is retained for")
		err = k8sClient.Create(ctx, newClaim(ns, p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.CIDR = kept }))
		Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("for %s/db, which released %s", ns, kept))))
		db2 := keyed()
		Expect(k8sClient.Create(ctx, db2)).To(Succeed())
		Expect(db2.Spec.CIDR).To(Equal(kept), "db- created again under a new name with the same stickyKey")
		deleteAndWait(db2)

		By("others take the retained prefix only when nothing else fits")
		for i := range 4 { // the /29's last four free addresses
			c := named(fmt.Sprintf("fill-%d", i))
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			Expect(c.Spec.CIDR).NotTo(Equal(kept))
		}
		last := named("last")
		Expect(k8sClient.Create(ctx, last)).To(Succeed())
		Expect(last.Spec.CIDR).To(Equal(kept))
		Expect(k8sClient.Create(ctx, keyed())).To(MatchError(ContainSubstring("exhausted")))
	})

	It("marks Conflict a claim restored with the webhook bypassed over a prefix kept for another, and records one restored under the keeper's name", func() {
		p := pool("10.197.0.0/28", func(s *ipamv1alpha1.IPPoolSpec) { s.RetainReleased = &metav1.Duration{Duration: time.Hour} })
		p.Labels = map[string]string{"restore": p.Name}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		ns := waitNamespace()
		keeper := newClaim(ns, p.Name, func(c *ipamv1alpha1.IPClaim) { c.Name = "keeper" })
		Expect(k8sClient.Create(ctx, keeper)).To(Succeed())
		kept := keeper.Spec.CIDR
		deleteAndWait(keeper)

		bypassWebhook(p.Name)
		restored := func(name string) *ipamv1alpha1.IPClaim {
			GinkgoHelper()
			c := newClaim(ns, p.Name, func(c *ipamv1alpha1.IPClaim) {
				c.Name, c.Labels, c.Spec.CIDR = name, map[string]string{bypassLabel: "yes"}, kept
			})
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			Expect(c.Finalizers).To(BeEmpty(), "the webhook was bypassed")
			return c
		}
		thief := restored("thief")
		Eventually(readyReason(thief)).Should(And(
			HaveField("Reason", ipamv1alpha1.ReasonConflict),
			HaveField("Message", ContainSubstring(fmt.Sprintf("%s is not recorded in pool %s and cannot be: it is retained in pool %s for %s/keeper", kept, p.Name, p.Name, ns)))))
		deleteAndWait(thief)

		again := restored("keeper")
		expectBound(again)
		Expect(ledgerHolders(p.Name)).To(HaveKeyWithValue(kept, ipam.ClaimHolder(ns)))
	})

	It("keeps the record through a failover: a replica that never served the pool restores it from the ledgers alone", func() {
		p := createPool("10.199.0.0/28", func(s *ipamv1alpha1.IPPoolSpec) { s.RetainReleased = &metav1.Duration{Duration: time.Hour} })
		ns := waitNamespace()
		c := newClaim(ns, p.Name, func(c *ipamv1alpha1.IPClaim) { c.Name = "stateful-0" })
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		kept := netip.MustParsePrefix(c.Spec.CIDR)
		deleteAndWait(c)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())

		// A new owner: nothing in memory, only what etcd holds.
		next := ipam.NewManager(ipam.ClientStore{Reader: k8sClient, Writer: k8sClient}, nil)
		other, err := next.Allocate(ctx, ipam.Request{Pool: p, Bits: 32, Holder: ipam.ClaimHolder(ns), Sticky: &ipam.Identity{Namespace: ns, Name: "other"}})
		Expect(err).NotTo(HaveOccurred())
		Expect(other).NotTo(Equal(kept), "another identity got the kept prefix from the new owner")
		back, err := next.Allocate(ctx, ipam.Request{Pool: p, Bits: 32, Holder: ipam.ClaimHolder(ns), Sticky: &ipam.Identity{Namespace: ns, Name: "stateful-0"}})
		Expect(err).NotTo(HaveOccurred())
		Expect(back).To(Equal(kept))
	})
})
