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
	"net/netip"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

var _ = Describe("A claim's deletion", func() {
	var (
		m      *ipam.Manager
		cached client.Client
		held   *holdings
	)
	BeforeEach(func() {
		m = ipam.NewManager(ipam.ClientStore{Reader: k8sClient, Writer: k8sClient}, nil)
		cached, held = startCache(func(c cache.Cache) error { return indexAddressClaims(ctx, c) })
	})

	It("of an IPAddressClaim wakes the sweep of the ledger recording its entry alone, which releases the entry of a claim gone without kipam's finalizer at once", func() {
		// A pool of hosts sharded by /26: four shards, one claim's address
		// in each.
		pool := fencePool("10.203.0.0/24")
		ns := fenceNamespace()
		var claims []*capiv1beta2.IPAddressClaim
		var addrs []netip.Prefix
		for i := range 4 {
			c := &capiv1beta2.IPAddressClaim{
				// No finalizer: as one removed by hand, kipam never
				// releases its entry.
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("machine-%d", i)},
				Spec: capiv1beta2.IPAddressClaimSpec{PoolRef: capiv1beta2.IPPoolReference{
					APIGroup: ipamv1alpha1.GroupVersion.Group, Kind: "IPPool", Name: pool.Name}},
			}
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			x := netip.MustParsePrefix(fmt.Sprintf("10.203.0.%d/32", 64*i+1))
			_, err := m.Allocate(ctx, ipam.Request{Pool: pool, CIDR: x, Bits: 32, Holder: ipam.AddressClaimHolder(ns), ID: string(c.UID)})
			Expect(err).NotTo(HaveOccurred())
			claims, addrs = append(claims, c), append(addrs, x)
		}
		var ledgers ipamv1alpha1.IPLedgerList
		Expect(k8sClient.List(ctx, &ledgers, client.MatchingLabels{ipamv1alpha1.LabelPool: pool.Name})).To(Succeed())
		Expect(len(ledgers.Items)).To(BeNumerically(">=", 5), "the root and a shard per address")
		for i, x := range addrs {
			Eventually(func(g Gomega) {
				e, ok, err := ipam.LookupEntry(ctx, cached, pool.Name, x)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(ok).To(BeTrue())
				g.Expect(e.ID).To(Equal(string(claims[i].UID)))
				var c capiv1beta2.IPAddressClaim
				g.Expect(cached.Get(ctx, client.ObjectKeyFromObject(claims[i]), &c)).To(Succeed())
			}).Should(Succeed(), "the cache shows %s and its claim", x)
		}

		// The leader swept every ledger while the claims lived, and the
		// entries have been its for longer than the grace since.
		clock := &fakeClock{t: time.Now()}
		sweep := newSweeper(cached, held, m, clock)
		sweep.AddressClaims = true
		for i := range ledgers.Items {
			res, err := sweep.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(&ledgers.Items[i])})
			Expect(err).NotTo(HaveOccurred())
			Expect(res.RequeueAfter).To(BeElementOf(time.Duration(0), DefaultOrphanGrace),
				"every entry is carried by its claim, none answered yet (no IPAddress): looked at again a grace later, not published")
		}
		clock.Add(DefaultOrphanGrace + time.Second)

		gone := claims[1]
		Expect(k8sClient.Delete(ctx, gone)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(cached.Get(ctx, client.ObjectKeyFromObject(gone), &capiv1beta2.IPAddressClaim{}))
		}).Should(BeTrue(), "the cache no longer holds the claim, as when its delete event comes")
		woken := sweep.ledgersOfAddressClaim(ctx, gone)
		Expect(woken).To(ConsistOf(reconcile.Request{NamespacedName: client.ObjectKey{Name: ledgerOf(pool, addrs[1])}}),
			"only the ledger recording its entry, of %d", len(ledgers.Items))

		for _, req := range woken {
			_, err := sweep.Reconcile(ctx, req)
			Expect(err).NotTo(HaveOccurred())
		}
		_, ok, err := m.Recorded(ctx, pool, addrs[1])
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeFalse(), "the sweep its deletion woke released its entry, with no grace left to wait")
		for _, i := range []int{0, 2, 3} {
			Expect(recordedEntry(m, pool, addrs[i]).Is(ipam.AddressClaimHolder(ns), string(claims[i].UID))).To(BeTrue(), "%s stays its claim's", addrs[i])
		}

		// A claim whose finalizer released its entry wakes no sweep, once
		// the cache shows the release.
		released := claims[2]
		freed, err := m.Release(ctx, pool, addrs[2], ipam.AddressClaimHolder(ns), string(released.UID), 0, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(freed).To(BeTrue())
		Expect(k8sClient.Delete(ctx, released)).To(Succeed())
		Eventually(func(g Gomega) {
			_, ok, err := ipam.LookupEntry(ctx, cached, pool.Name, addrs[2])
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(ok).To(BeFalse())
			g.Expect(apierrors.IsNotFound(cached.Get(ctx, client.ObjectKeyFromObject(released), &capiv1beta2.IPAddressClaim{}))).To(BeTrue())
		}).Should(Succeed(), "the cache shows the release and the claim gone")
		Expect(sweep.ledgersOfAddressClaim(ctx, released)).To(BeEmpty())
	})

	It("of an IPAddressClaim leaves an entry the cache shows only after the claim's delete to the sweep of that change, which finds no claim carrying it", func() {
		pool := fencePool("10.203.1.0/24")
		ns := fenceNamespace()
		c := &capiv1beta2.IPAddressClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "machine-late"},
			Spec: capiv1beta2.IPAddressClaimSpec{PoolRef: capiv1beta2.IPPoolReference{
				APIGroup: ipamv1alpha1.GroupVersion.Group, Kind: "IPPool", Name: pool.Name}},
		}
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Eventually(func() error { return cached.Get(ctx, client.ObjectKeyFromObject(c), &capiv1beta2.IPAddressClaim{}) }).Should(Succeed())
		Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(cached.Get(ctx, client.ObjectKeyFromObject(c), &capiv1beta2.IPAddressClaim{}))
		}).Should(BeTrue())
		clock := &fakeClock{t: time.Now()}
		sweep := newSweeper(cached, held, m, clock)
		sweep.AddressClaims = true
		Expect(sweep.ledgersOfAddressClaim(ctx, c)).To(BeEmpty(), "no ledger the cache holds records its entry yet")

		// Its commit lands after: a version of the ledger the cache shows
		// only now, whose own event sweeps it.
		x := netip.MustParsePrefix("10.203.1.65/32")
		_, err := m.Allocate(ctx, ipam.Request{Pool: pool, CIDR: x, Bits: 32, Holder: ipam.AddressClaimHolder(ns), ID: string(c.UID)})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			_, ok, err := ipam.LookupEntry(ctx, cached, pool.Name, x)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(ok).To(BeTrue())
		}).Should(Succeed(), "the cache shows the entry")
		req := ctrl.Request{NamespacedName: client.ObjectKey{Name: ledgerOf(pool, x)}}
		res, err := sweep.Reconcile(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		Expect(res.RequeueAfter).To(BeNumerically(">", 0), "no claim carries it: the sweep looks again")
		Expect(res.RequeueAfter).To(BeNumerically("<=", DefaultOrphanGrace), "by the end of the grace since it first saw it")
		clock.Add(DefaultOrphanGrace)
		_, err = sweep.Reconcile(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		_, ok, err := m.Recorded(ctx, pool, x)
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeFalse(), "released once the grace has passed")
	})

	It("of a waiting IPClaim wakes only the ledger recording the entry a bind left for it", func() {
		pool := fencePool("10.203.2.0/24")
		ns := fenceNamespace()
		var claims []*ipamv1alpha1.IPClaim
		var addrs []netip.Prefix
		for i := range 4 {
			// Waiting claims (no cidr), as a bind whose patch was lost
			// leaves them: an entry with the claim's uid as its ID.
			c := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("waiter-%d", i)},
				Spec: ipamv1alpha1.IPClaimSpec{Pool: pool.Name, PrefixLength: ptr.To(int32(32))}}
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			x := netip.MustParsePrefix(fmt.Sprintf("10.203.2.%d/32", 64*i+1))
			_, err := m.Allocate(ctx, ipam.Request{Pool: pool, CIDR: x, Bits: 32, Holder: ipam.ClaimHolder(ns), ID: string(c.UID)})
			Expect(err).NotTo(HaveOccurred())
			claims, addrs = append(claims, c), append(addrs, x)
		}
		sweep := newSweeper(cached, held, m, &fakeClock{t: time.Now()})
		for _, x := range addrs {
			Eventually(func(g Gomega) {
				_, ok, err := ipam.LookupEntry(ctx, cached, pool.Name, x)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(ok).To(BeTrue())
			}).Should(Succeed(), "the cache shows %s", x)
		}
		gone := claims[2]
		Expect(k8sClient.Delete(ctx, gone)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(cached.Get(ctx, client.ObjectKeyFromObject(gone), &ipamv1alpha1.IPClaim{}))
		}).Should(BeTrue())
		Expect(sweep.ledgerOfClaim(ctx, gone, true)).To(ConsistOf(reconcile.Request{NamespacedName: client.ObjectKey{Name: ledgerOf(pool, addrs[2])}}),
			"only the ledger recording its entry")
	})
})
