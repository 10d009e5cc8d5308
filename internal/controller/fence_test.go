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
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// These specs replay, against the real API server and with no kipam
// webhook in front of it, the states in which a release used to free a
// prefix that had gone to another holder, and call the reconciler that
// releases on them.

type nopRecorder struct{}

func (nopRecorder) Eventf(runtime.Object, runtime.Object, string, string, string, string, ...any) {}

// fakeClock is a clock the spec moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fencePool creates a pool of hosts with no reuse grace, so that a
// released prefix is handed out again at once.
func fencePool(cidr string) *ipamv1alpha1.IPPool {
	GinkgoHelper()
	pool := newPool(func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = cidr; s.ReuseGracePeriodSeconds = ptr.To[int64](0) })
	pool.Finalizers = []string{ipamv1alpha1.PoolFinalizer} // as kipam's pool webhook gives it
	createPlaced(pool)
	return pool
}

// createPlaced creates pool and records its prefix in the address space,
// as kipam's webhook (or the pool controller, adopting it) records every
// pool before it serves it.
func createPlaced(pool *ipamv1alpha1.IPPool) {
	GinkgoHelper()
	Expect(k8sClient.Create(ctx, pool)).To(Succeed())
	p := netip.MustParsePrefix(pool.Spec.CIDR)
	_, err := ipam.NewManager(ipam.ClientStore{Reader: k8sClient, Writer: k8sClient}, nil).Allocate(ctx, ipam.Request{
		Pool: ipam.Space(p.Addr()), CIDR: p, Bits: p.Bits(), Holder: ipam.PoolHolder(pool.Name), ID: ipam.PoolEntryID(pool), Adopt: true})
	Expect(err).NotTo(HaveOccurred())
}

func fenceNamespace() string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("fence")}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// storedClaim stores a claim that carries cidr of pool as entry id, as
// kipam's webhook would have left it.
func storedClaim(namespace string, pool *ipamv1alpha1.IPPool, cidr netip.Prefix, id string) *ipamv1alpha1.IPClaim {
	GinkgoHelper()
	c := &ipamv1alpha1.IPClaim{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("claim"), Namespace: namespace, Finalizers: []string{ipamv1alpha1.ClaimFinalizer},
			Annotations: map[string]string{ipam.PoolAnnotation: pool.Name, ipam.EntryAnnotation: id}},
		Spec: ipamv1alpha1.IPClaimSpec{Pool: pool.Name, CIDR: cidr.String()},
	}
	Expect(k8sClient.Create(ctx, c)).To(Succeed())
	return c
}

func recordedEntry(m *ipam.Manager, pool *ipamv1alpha1.IPPool, cidr netip.Prefix) ipam.Entry {
	GinkgoHelper()
	e, ok, err := m.Recorded(ctx, pool, cidr)
	Expect(err).NotTo(HaveOccurred())
	Expect(ok).To(BeTrue(), "the ledger records %s", cidr)
	return e
}

var _ = Describe("Releases name the entry they free", func() {
	var (
		m *ipam.Manager
		// cached reads through an informer cache with kipam's options and
		// field indexes, as the reconcilers do in the manager.
		cached client.Client
		held   *holdings
	)
	BeforeEach(func() {
		m = ipam.NewManager(ipam.ClientStore{Reader: k8sClient, Writer: k8sClient}, nil)
		cached, held = startCache(nil)
	})

	It("a claim's finalizer, retried after its prefix went to another claim, leaves that claim's entry", func() {
		pool := fencePool("10.200.0.0/30")
		ns := fenceNamespace()
		x, err := m.Allocate(ctx, ipam.Request{Pool: pool, Bits: 32, Holder: ipam.ClaimHolder(ns), ID: "entry-a"})
		Expect(err).NotTo(HaveOccurred())
		a := storedClaim(ns, pool, x, "entry-a")
		// The finalizer released x, then its IPAllocation delete failed
		// (kipam's own webhook, failurePolicy Fail): the record is still
		// bound to a, and the claim still carries the finalizer.
		alloc := &ipamv1alpha1.IPAllocation{
			ObjectMeta: metav1.ObjectMeta{Name: ipam.AllocationName(pool.Name, x), Finalizers: []string{ipamv1alpha1.AllocationFinalizer}},
			Spec: ipamv1alpha1.IPAllocationSpec{Pool: pool.Name, CIDR: x.String(), Entry: "entry-a",
				ClaimRef: ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: ns, Name: a.Name, UID: a.UID}},
		}
		Expect(k8sClient.Create(ctx, alloc)).To(Succeed())
		freed, err := m.Release(ctx, pool, x, ipam.ClaimHolder(ns), "entry-a", 0, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(freed).To(BeTrue())
		// Claim b, in the same namespace, gets x.
		y, err := m.Allocate(ctx, ipam.Request{Pool: pool, Bits: 32, Holder: ipam.ClaimHolder(ns), ID: "entry-b"})
		Expect(err).NotTo(HaveOccurred())
		Expect(y).To(Equal(x))
		storedClaim(ns, pool, y, "entry-b")

		Expect(k8sClient.Delete(ctx, a)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(cached.Get(ctx, client.ObjectKeyFromObject(a), a)).To(Succeed())
			g.Expect(a.DeletionTimestamp).NotTo(BeNil())
		}).Should(Succeed())
		r := &IPClaimReconciler{Client: cached, APIReader: k8sClient, Manager: m, Recorder: nopRecorder{}, Now: time.Now, Holdings: held}
		Eventually(func(g Gomega) {
			_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(a)})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(a), &ipamv1alpha1.IPClaim{})).NotTo(Succeed(), "claim a is gone")
		}).Should(Succeed())
		Expect(recordedEntry(m, pool, x).Is(ipam.ClaimHolder(ns), "entry-b")).To(BeTrue(), "b's entry is left in the ledger")

		// The IPAllocation's own orphan path, run on a's record, frees
		// nothing either.
		Expect(releaseOrphan(ctx, k8sClient, m, alloc)).To(Succeed())
		Expect(recordedEntry(m, pool, x).Is(ipam.ClaimHolder(ns), "entry-b")).To(BeTrue(), "b's entry is left in the ledger")
	})

	It("the orphan sweep releases an entry no claim of its namespace carries, whatever other namespaces' claims carry", func() {
		pool := fencePool("10.200.0.4/30")
		orphaned, other := fenceNamespace(), fenceNamespace()
		clock := &fakeClock{t: time.Now()}
		x, err := m.Allocate(ctx, ipam.Request{Pool: pool, Bits: 32, Holder: ipam.ClaimHolder(orphaned), ID: "never-stored"})
		Expect(err).NotTo(HaveOccurred())
		// A claim in another namespace carries x: created with the webhook
		// bypassed, it is marked Conflict, and must not pin the orphan.
		storedClaim(other, pool, x, "")

		sweep := newSweeper(cached, held, m, clock)
		ledger := ledgerOf(pool, x)
		Eventually(func(g Gomega) {
			clock.Add(time.Minute)
			_, err := sweep.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: ledger}})
			g.Expect(err).NotTo(HaveOccurred())
			_, ok, err := m.Recorded(ctx, pool, x)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(ok).To(BeFalse(), "the orphan is released")
		}).Should(Succeed())
	})

	It("the orphan paths hold what they release for the pool's reuse grace, like any release", func() {
		pool := newPool(func(s *ipamv1alpha1.IPPoolSpec) {
			s.CIDR = "10.200.0.12/30"
			s.ReuseGracePeriodSeconds = ptr.To[int64](600)
		})
		pool.Finalizers = []string{ipamv1alpha1.PoolFinalizer}
		createPlaced(pool)
		ns := fenceNamespace()
		clock := &fakeClock{t: time.Now()}
		x, err := m.Allocate(ctx, ipam.Request{Pool: pool, Bits: 32, Holder: ipam.ClaimHolder(ns), ID: "never-stored"})
		Expect(err).NotTo(HaveOccurred())
		y, err := m.Allocate(ctx, ipam.Request{Pool: pool, Bits: 32, Holder: ipam.ClaimHolder(ns), ID: "claim-gone"})
		Expect(err).NotTo(HaveOccurred())
		sweep := newSweeper(cached, held, m, clock)
		Eventually(func(g Gomega) {
			clock.Add(time.Minute)
			_, err := sweep.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: ledgerOf(pool, x)}})
			g.Expect(err).NotTo(HaveOccurred())
			_, ok, err := m.Recorded(ctx, pool, x)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(ok).To(BeFalse(), "the orphan is released")
		}).Should(Succeed())
		orphan := &ipamv1alpha1.IPAllocation{Spec: ipamv1alpha1.IPAllocationSpec{Pool: pool.Name, CIDR: y.String(), Entry: "claim-gone",
			ClaimRef: ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: ns, Name: "gone"}}}
		Expect(releaseOrphan(ctx, k8sClient, m, orphan)).To(Succeed())
		l, err := ipam.ReadLedger(ctx, k8sClient, pool.Name)
		Expect(err).NotTo(HaveOccurred())
		Expect(l.Allocations).To(BeEmpty())
		Expect(l.Holds).To(HaveKey(x), "held for the pool's reuse grace")
		Expect(l.Holds).To(HaveKey(y), "held for the pool's reuse grace")
	})

	It("a bind whose patch's answer is lost keeps its entry, and the sweep keeps it while the claim waits or carries it", func() {
		pool := fencePool("10.200.0.16/30")
		ns := fenceNamespace()
		waiting := &ipamv1alpha1.IPClaim{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("waiting"), Namespace: ns, Finalizers: []string{ipamv1alpha1.ClaimFinalizer}},
			Spec:       ipamv1alpha1.IPClaimSpec{Pool: pool.Name, WhenExhausted: ipamv1alpha1.Wait},
		}
		Expect(k8sClient.Create(ctx, waiting)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(cached.Get(ctx, client.ObjectKeyFromObject(waiting), waiting)).To(Succeed())
		}).Should(Succeed())

		clock := &fakeClock{t: time.Now()}
		sweep := newSweeper(cached, held, m, clock)
		keeps := func(p netip.Prefix, id string) {
			GinkgoHelper()
			ledger := ledgerOf(pool, p)
			for range 4 {
				clock.Add(time.Minute)
				_, err := sweep.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: ledger}})
				Expect(err).NotTo(HaveOccurred())
			}
			Expect(recordedEntry(m, pool, p).Is(ipam.ClaimHolder(ns), id)).To(BeTrue(), "the sweep keeps %s", p)
		}

		By("an entry committed for the waiting claim, whose patch has not landed")
		p, err := m.Allocate(ctx, ipam.Request{Pool: pool, Bits: 32, Holder: ipam.ClaimHolder(ns), ID: string(waiting.UID)})
		Expect(err).NotTo(HaveOccurred())
		keeps(p, string(waiting.UID))
		Expect(m.Release(ctx, pool, p, ipam.ClaimHolder(ns), string(waiting.UID), 0, nil)).To(BeTrue())

		By("a bind whose patch is stored but whose answer is lost")
		r := &IPClaimReconciler{Client: lostAnswer{cached}, APIReader: k8sClient, Manager: m, Recorder: nopRecorder{}, Now: time.Now, Holdings: held,
			Resolver: &ipam.Resolver{Reader: cached, APIReader: k8sClient}}
		_, err = r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(waiting)})
		Expect(err).To(Satisfy(apierrors.IsTimeout))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(waiting), waiting)).To(Succeed())
		bound, err := netip.ParsePrefix(waiting.Spec.CIDR)
		Expect(err).NotTo(HaveOccurred(), "the patch was stored")
		Expect(recordedEntry(m, pool, bound).Is(ipam.ClaimHolder(ns), string(waiting.UID))).To(BeTrue(), "the entry the claim carries is kept")
		Eventually(func(g Gomega) {
			g.Expect(cached.Get(ctx, client.ObjectKeyFromObject(waiting), waiting)).To(Succeed())
			g.Expect(waiting.Spec.CIDR).To(Equal(bound.String()))
		}).Should(Succeed())
		keeps(bound, string(waiting.UID))
	})

	It("the orphan sweep measures the grace on its own clock, from when it first saw the entry, whatever the committer's clock said", func() {
		pool := fencePool("10.200.0.8/30")
		ns := fenceNamespace()
		// The sweeping replica's clock runs an hour ahead of the committing
		// replica's: the entry's own time says it is long past the grace.
		clock := &fakeClock{t: time.Now().Add(time.Hour)}
		x, err := m.Allocate(ctx, ipam.Request{Pool: pool, Bits: 32, Holder: ipam.ClaimHolder(ns), ID: "in-flight"})
		Expect(err).NotTo(HaveOccurred())
		sweep := newSweeper(cached, held, m, clock)
		ledger := ledgerOf(pool, x)
		swept := func() bool {
			GinkgoHelper()
			_, err := sweep.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: ledger}})
			Expect(err).NotTo(HaveOccurred())
			_, ok, err := m.Recorded(ctx, pool, x)
			Expect(err).NotTo(HaveOccurred())
			return !ok
		}
		Expect(swept()).To(BeFalse(), "first seen now: the create that carries it may still be on its way")
		clock.Add(sweep.OrphanGrace - time.Second)
		Expect(swept()).To(BeFalse(), "a second short of the grace since first seen")
		clock.Add(2 * time.Second)
		Expect(swept()).To(BeTrue(), "past the grace since first seen, and no claim carries it")
	})

	It("an IPAllocation's delete, read from a cache that still shows the record its name had before, leaves the new record alone", func() {
		pool := fencePool("10.200.0.36/30")
		x := netip.MustParsePrefix("10.200.0.36/32")
		name := ipam.AllocationName(pool.Name, x)
		record := func(entry string) *ipamv1alpha1.IPAllocation {
			a := &ipamv1alpha1.IPAllocation{
				ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: []string{ipamv1alpha1.AllocationFinalizer}},
				Spec: ipamv1alpha1.IPAllocationSpec{Pool: pool.Name, CIDR: x.String(), Entry: entry,
					ClaimRef: ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: "fence", Name: entry, UID: types.UID(entry)}},
			}
			Expect(k8sClient.Create(ctx, a)).To(Succeed())
			return a
		}
		old := record("old")
		Expect(deleteAllocation(ctx, k8sClient, name, sameUID(old))).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &ipamv1alpha1.IPAllocation{}))
		}).Should(BeTrue())
		// The prefix's next holder's record takes the name; a retried
		// delete of the old one reads a cache that still shows it.
		record("new")
		err := deleteAllocation(ctx, staleAllocation{Client: k8sClient, a: old}, name, sameUID(old))
		Expect(apierrors.IsConflict(err)).To(BeTrue(), "fenced by the old record's resourceVersion: %v", err)
		var a ipamv1alpha1.IPAllocation
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &a)).To(Succeed(), "the new record is not deleted")
		Expect(a.Spec.Entry).To(Equal("new"))
		Expect(a.Finalizers).To(ContainElement(ipamv1alpha1.AllocationFinalizer), "nor is its finalizer removed")
	})

	It("an IPAllocation marked orphaned by a replica whose clock ran ahead waits no longer than the grace on this one", func() {
		pool := fencePool("10.200.0.32/30")
		ns := fenceNamespace()
		clock := &fakeClock{t: time.Now()}
		x, err := m.Allocate(ctx, ipam.Request{Pool: pool, Bits: 32, Holder: ipam.ClaimHolder(ns), ID: "gone"})
		Expect(err).NotTo(HaveOccurred())
		// Its claim was deleted with its finalizer removed by hand, and a
		// replica an hour ahead marked the record orphaned.
		alloc := &ipamv1alpha1.IPAllocation{
			ObjectMeta: metav1.ObjectMeta{Name: ipam.AllocationName(pool.Name, x)},
			Spec: ipamv1alpha1.IPAllocationSpec{Pool: pool.Name, CIDR: x.String(), Entry: "gone",
				ClaimRef: ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: ns, Name: "gone", UID: "gone"}},
		}
		Expect(k8sClient.Create(ctx, alloc)).To(Succeed())
		alloc.Status.OrphanedAt = &metav1.Time{Time: clock.Now().Add(time.Hour)}
		Expect(k8sClient.Status().Update(ctx, alloc)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(cached.Get(ctx, client.ObjectKeyFromObject(alloc), alloc)).To(Succeed())
			g.Expect(alloc.Status.OrphanedAt).NotTo(BeNil())
		}).Should(Succeed())

		r := &IPAllocationReconciler{Client: cached, APIReader: k8sClient, Manager: m, Recorder: nopRecorder{}, OrphanGrace: DefaultOrphanGrace, Now: clock.Now}
		res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(alloc)})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.RequeueAfter).To(BeNumerically("~", DefaultOrphanGrace, time.Second), "the grace on this replica's clock (a status time is to the second), not an hour and the grace")
		Expect(recordedEntry(m, pool, x).Is(ipam.ClaimHolder(ns), "gone")).To(BeTrue())
		// The next reconcile reads the cache: it must show this replica's
		// mark, as it would by the time the requeue comes.
		Eventually(func(g Gomega) {
			g.Expect(cached.Get(ctx, client.ObjectKeyFromObject(alloc), alloc)).To(Succeed())
			g.Expect(alloc.Status.OrphanedAt.Time).To(BeTemporally("<=", clock.Now()))
		}).Should(Succeed())
		clock.Add(DefaultOrphanGrace)
		_, err = r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(alloc)})
		Expect(err).NotTo(HaveOccurred())
		_, ok, err := m.Recorded(ctx, pool, x)
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeFalse(), "released a grace after this replica looked")
	})

	It("a replica that becomes leader counts the grace from when its informer first saw the entry, not from its election", func() {
		pool := fencePool("10.200.0.20/30")
		ns := fenceNamespace()
		clock := &fakeClock{t: time.Now()}
		// A replica that does not lead: its cache runs, its controllers
		// do not; only the informer's handler records what it sees.
		_, _, seen := startReplica(clock)

		x, err := m.Allocate(ctx, ipam.Request{Pool: pool, Bits: 32, Holder: ipam.ClaimHolder(ns), ID: "never-stored"})
		Expect(err).NotTo(HaveOccurred())
		ledger := ledgerOf(pool, x)
		recorded := func() bool {
			seen.mu.Lock()
			defer seen.mu.Unlock()
			for _, w := range seen.seen[ledger] {
				if w.addr == x.Addr().As16() && int(w.bits) == x.Bits() && w.id == "never-stored" {
					return true
				}
			}
			return false
		}
		Eventually(recorded).Should(BeTrue(), "the follower's informer sees the entry")

		// The follower becomes leader a little short of the grace after it
		// saw the entry; its sweep shares what the informer recorded.
		clock.Add(DefaultOrphanGrace - 10*time.Second)
		sweep := newSweeper(cached, held, m, clock)
		sweep.Sightings = seen
		res, err := sweep.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: ledger}})
		Expect(err).NotTo(HaveOccurred())
		Expect(recordedEntry(m, pool, x).Is(ipam.ClaimHolder(ns), "never-stored")).To(BeTrue(), "10 s short of the grace since first seen")
		Expect(res.RequeueAfter).To(BeNumerically("<=", 10*time.Second), "it looks again by the end of the grace since first sight, not a grace after its election")

		clock.Add(11 * time.Second)
		_, err = sweep.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: ledger}})
		Expect(err).NotTo(HaveOccurred())
		_, ok, err := m.Recorded(ctx, pool, x)
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeFalse(), "released past the grace since the follower first saw it, 11 s after it became leader")
		Eventually(recorded).Should(BeFalse(), "the informer forgets an entry its ledger no longer records")
	})

	It("a replica that starts after the commit counts the grace from the age the pool's status published, whatever its clock", func() {
		pool := fencePool("10.200.0.24/30")
		ns := fenceNamespace()
		x, err := m.Allocate(ctx, ipam.Request{Pool: pool, Bits: 32, Holder: ipam.ClaimHolder(ns), ID: "never-stored"})
		Expect(err).NotTo(HaveOccurred())
		req := ctrl.Request{NamespacedName: client.ObjectKey{Name: ledgerOf(pool, x)}}
		publishAge(cached, held, m, pool, x, time.Minute)

		// Every replica restarts. The new one's clock is an hour behind the
		// first's. Its informer sees the status as it starts; it becomes
		// leader 20 s later, and its pool controller writes the pool's
		// status before its sweep has run.
		later := &fakeClock{t: time.Now().Add(-time.Hour)}
		restarted, restartedHeld, seen := startReplica(later)
		Eventually(func() int {
			seen.mu.Lock()
			defer seen.mu.Unlock()
			return len(seen.aged[pool.Name])
		}).Should(Equal(1), "its informer sees the published age")
		later.Add(20 * time.Second)
		next := newSweeper(restarted, restartedHeld, m, later)
		next.Sightings = seen
		next.Unconfirmed = newUnconfirmed()
		nextPools := &IPPoolReconciler{Client: restarted, APIReader: k8sClient, Manager: m, Recorder: nopRecorder{}, Now: later.Now,
			Unconfirmed: next.Unconfirmed}
		_, err = nextPools.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: pool.Name}})
		Expect(err).NotTo(HaveOccurred())
		Consistently(func() []ipamv1alpha1.UnconfirmedEntry { return poolStatus(cached, pool).Unconfirmed }, "1s").Should(HaveLen(1),
			"a status written before the sweep read it keeps the published age")

		// The grace counts from a minute before its informer saw the status:
		// 40 s are left when it becomes leader.
		_, err = next.Reconcile(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		Expect(recordedEntry(m, pool, x).Is(ipam.ClaimHolder(ns), "never-stored")).To(BeTrue(), "within the grace as published")
		later.Add(39 * time.Second)
		_, err = next.Reconcile(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		Expect(recordedEntry(m, pool, x).Is(ipam.ClaimHolder(ns), "never-stored")).To(BeTrue(), "a second short of the grace as published")
		later.Add(2 * time.Second)
		_, err = next.Reconcile(ctx, req)
		Expect(err).NotTo(HaveOccurred())
		_, ok, err := m.Recorded(ctx, pool, x)
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeFalse(), "released 61 s after the new replica started, not a grace after")

		_, err = nextPools.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: pool.Name}})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() []ipamv1alpha1.UnconfirmedEntry { return poolStatus(cached, pool).Unconfirmed }).Should(BeEmpty(),
			"a released entry is no longer published")
	})

	It("a replica that does not lead sweeps a ledger whose pool's status still lists an entry past the grace, as when the leader died", func() {
		pool := fencePool("10.200.0.28/30")
		ns := fenceNamespace()
		x, err := m.Allocate(ctx, ipam.Request{Pool: pool, Bits: 32, Holder: ipam.ClaimHolder(ns), ID: "never-stored"})
		Expect(err).NotTo(HaveOccurred())
		ledger := ledgerOf(pool, x)
		publishAge(cached, held, m, pool, x, time.Minute)

		// The leader dies with the status as it wrote it; a replica that
		// does not lead, its clock an hour behind, is running.
		later := &fakeClock{t: time.Now().Add(-time.Hour)}
		follower, followerHeld, seen := startReplica(later)
		every := DefaultOrphanGrace / 16
		overdue := func() []string { return seen.overdue(later.Now(), DefaultOrphanGrace+every, DefaultOrphanGrace) }
		Eventually(func() int {
			seen.mu.Lock()
			defer seen.mu.Unlock()
			return len(seen.aged[pool.Name])
		}).Should(Equal(1), "its informer sees the published age")
		later.Add(DefaultOrphanGrace - time.Minute + every - time.Second)
		Expect(overdue()).To(BeEmpty(), "a second short of the grace and the leader's time to publish again")
		later.Add(2 * time.Second)
		Expect(overdue()).To(ConsistOf(ledger))

		Expect(overdue()).To(BeEmpty(), "given once, not again within the grace")

		backup := newSweeper(follower, followerHeld, m, later)
		backup.Sightings = seen
		backup.Unconfirmed = newUnconfirmed()
		res, err := backup.backup(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: ledger}})
		Expect(err).NotTo(HaveOccurred())
		Expect(res).To(Equal(ctrl.Result{}), "the backup sweep schedules no sweep of its own")
		_, ok, err := m.Recorded(ctx, pool, x)
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeFalse(), "the follower's sweep released it")
		Expect(backup.Unconfirmed.counts).To(BeEmpty(), "nor does it publish: that is the leader's")
		later.Add(DefaultOrphanGrace)
		Eventually(overdue).Should(BeEmpty(), "an entry its ledger no longer records is not overdue, though the status still lists it")
	})
})

var _ = DescribeTable("the orphan grace must exceed the webhook timeout plus the API server's request timeout",
	func(d time.Duration, ok bool) {
		err := CheckOrphanGrace(d)
		if ok {
			Expect(err).NotTo(HaveOccurred())
		} else {
			Expect(err).To(MatchError(ContainSubstring("must exceed the webhook timeout (15s) plus the API server's request timeout (60s), 1m15s in all")))
		}
	},
	Entry("the default", DefaultOrphanGrace, true),
	Entry("just above", 75*time.Second+time.Millisecond, true),
	Entry("the bound itself", 75*time.Second, false),
	Entry("the API server's timeout alone", 60*time.Second, false),
)

// staleAllocation reads a, as a cache that has not seen it go would.
type staleAllocation struct {
	client.Client
	a *ipamv1alpha1.IPAllocation
}

func (c staleAllocation) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	if a, ok := obj.(*ipamv1alpha1.IPAllocation); ok && key.Name == c.a.Name {
		c.a.DeepCopyInto(a)
		return nil
	}
	return errors.New("staleAllocation reads only its allocation")
}

// lostAnswer stores every patch and then answers as if it had timed out.
type lostAnswer struct{ client.Client }

func (c lostAnswer) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	if err := c.Client.Patch(ctx, obj, patch, opts...); err != nil {
		return err
	}
	return apierrors.NewTimeoutError("the answer was lost", 1)
}

// startReplica starts a cache with kipam's options and its sightings, as a
// replica starting on clock does, and returns a client that reads through
// it.
func startReplica(clock *fakeClock) (client.Client, *holdings, *sightings) {
	GinkgoHelper()
	seen := &sightings{}
	cached, held := startCache(func(c cache.Cache) error { return watchSightings(ctx, c, seen, clock.Now) })
	return cached, held, seen
}

// startCache starts an informer cache with kipam's options and field
// indexes, as the reconcilers read in the manager, with what setup adds to
// it before it starts (nil: nothing), and returns a client that reads
// through it.
func startCache(setup func(cache.Cache) error) (client.Client, *holdings) {
	GinkgoHelper()
	c, err := cache.New(cfg, func() cache.Options { o := CacheOptions(); o.Scheme = scheme.Scheme; return o }())
	Expect(err).NotTo(HaveOccurred())
	held, err := indexFields(ctx, c)
	Expect(err).NotTo(HaveOccurred())
	if setup != nil {
		Expect(setup(c)).To(Succeed())
	}
	cacheCtx, stop := context.WithCancel(ctx)
	DeferCleanup(stop)
	go func() { _ = c.Start(cacheCtx) }()
	Expect(c.WaitForCacheSync(cacheCtx)).To(BeTrue())
	cached, err := client.New(cfg, client.Options{Scheme: scheme.Scheme, Cache: &client.CacheOptions{Reader: c}})
	Expect(err).NotTo(HaveOccurred())
	return cached, held
}

// publishAge has a leader, on its own clock, sweep the ledger of pool that
// records x as x appears and again age later, and its pool controller
// write the pool's status, which then lists x as seen for age.
func publishAge(c client.Client, held *holdings, m *ipam.Manager, pool *ipamv1alpha1.IPPool, x netip.Prefix, age time.Duration) {
	GinkgoHelper()
	ledger := ledgerOf(pool, x)
	req := ctrl.Request{NamespacedName: client.ObjectKey{Name: ledger}}
	Eventually(func(g Gomega) {
		var l ipamv1alpha1.IPLedger
		g.Expect(c.Get(ctx, client.ObjectKey{Name: ledger}, &l)).To(Succeed())
		g.Expect(ipam.Entries(&l)).To(HaveKey(x))
	}).Should(Succeed(), "the cache shows the entry")
	clock := &fakeClock{t: time.Now()}
	sweep := newSweeper(c, held, m, clock)
	sweep.Unconfirmed = newUnconfirmed()
	pools := &IPPoolReconciler{Client: c, APIReader: k8sClient, Manager: m, Recorder: nopRecorder{}, Now: clock.Now, Unconfirmed: sweep.Unconfirmed}
	_, err := sweep.Reconcile(ctx, req)
	Expect(err).NotTo(HaveOccurred())
	clock.Add(age)
	res, err := sweep.Reconcile(ctx, req)
	Expect(err).NotTo(HaveOccurred())
	Expect(res.RequeueAfter).To(Equal(DefaultOrphanGrace/16), "it publishes the age again well before the grace ends")
	_, err = pools.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: pool.Name}})
	Expect(err).NotTo(HaveOccurred())
	e := recordedEntry(m, pool, x)
	Eventually(func() []ipamv1alpha1.UnconfirmedEntry { return poolStatus(c, pool).Unconfirmed }).Should(ConsistOf(
		ipamv1alpha1.UnconfirmedEntry{Ledger: ledger, CIDR: x.String(), Holder: e.Holder, ID: e.ID, CommittedAt: metav1.NewTime(e.At),
			SeenFor: metav1.Duration{Duration: age}}))
}

func poolStatus(c client.Client, pool *ipamv1alpha1.IPPool) ipamv1alpha1.IPPoolStatus {
	GinkgoHelper()
	var p ipamv1alpha1.IPPool
	Expect(c.Get(ctx, client.ObjectKeyFromObject(pool), &p)).To(Succeed())
	return p.Status
}

func newSweeper(c client.Client, held *holdings, m *ipam.Manager, clock *fakeClock) *IPLedgerReconciler {
	return &IPLedgerReconciler{Client: c, APIReader: k8sClient, Manager: m, Recorder: nopRecorder{}, Holdings: held,
		OrphanGrace: DefaultOrphanGrace, Now: clock.Now, Sightings: &sightings{}}
}

// ledgerOf names the ledger object of pool that records cidr.
func ledgerOf(pool *ipamv1alpha1.IPPool, cidr netip.Prefix) string {
	GinkgoHelper()
	var ledgers ipamv1alpha1.IPLedgerList
	Expect(k8sClient.List(ctx, &ledgers, client.MatchingLabels{ipamv1alpha1.LabelPool: pool.Name})).To(Succeed())
	for i := range ledgers.Items {
		entries, err := ipam.Entries(&ledgers.Items[i])
		Expect(err).NotTo(HaveOccurred())
		if _, ok := entries[cidr]; ok {
			return ledgers.Items[i].Name
		}
	}
	Fail("no ledger of " + pool.Name + " records " + cidr.String())
	return ""
}
