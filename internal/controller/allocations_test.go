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
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

func testAllocation(name, kind, ns, holder string) *ipamv1alpha1.IPAllocation {
	return &ipamv1alpha1.IPAllocation{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: ipamv1alpha1.IPAllocationSpec{Pool: "pool-a", CIDR: "10.0.0.1/32", Entry: "e-" + name,
			ClaimRef: ipamv1alpha1.ClaimRef{Kind: kind, Namespace: ns, Name: holder, UID: types.UID("uid-" + holder)}},
	}
}

// seen collects what a source tells of, by allocation.
type seen struct {
	mu     sync.Mutex
	events []allocEvent
}

func (s *seen) add(_ context.Context, e allocEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, e)
}

// last is the last event of the allocation called name.
func (s *seen) last(name string) (allocEvent, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range slices.Backward(s.events) {
		if e.name == name {
			return e, true
		}
	}
	return allocEvent{}, false
}

// fakeAllocations lists objs once, then sends what the test sends on the
// returned watcher.
func fakeAllocations(objs ...ipamv1alpha1.IPAllocation) (*allocations, *watch.FakeWatcher) {
	w := watch.NewFake()
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			return &ipamv1alpha1.IPAllocationList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: objs}, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) { return w, nil },
	}
	return allocationsFrom(toolscache.ToListWatcherWithWatchListSemantics(lw, listThenWatch{})), w
}

// TestAllocationRecords: a Reflector keeps allocations' records as it
// lists and watches them, indexes the Cluster API claims' ones, and tells
// every source of each change, a source started late of every record
// first.
func TestAllocationRecords(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held := testAllocation("pool-a.10-0-0-1-32", "IPClaim", "tenant", "web")
	capi := testAllocation("pool-a.10-0-0-2-32", "IPAddressClaim", "tenant", "node-0")
	s, w := fakeAllocations(*held, *capi)
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()

	var first seen
	src := s.source(first.add)
	g.Expect(src.Start(ctx, q)).To(Succeed())
	g.Expect(src.WaitForSync(ctx)).To(Succeed())
	rec, ok := s.get(held.Name)
	g.Expect(ok).To(BeTrue())
	g.Expect(rec.spec()).To(Equal(held.Spec))
	g.Expect(rec.name()).To(Equal(held.Name))
	g.Expect(rec.resourceVersion()).To(Equal(held.ResourceVersion))
	g.Expect(rec.quiet).To(BeTrue())
	g.Expect(rec.deleting).To(BeFalse())
	g.Expect(s.ofAddressClaim("tenant", "node-0")).To(ConsistOf(capi.Name))
	g.Expect(s.ofAddressClaim("tenant", "web")).To(BeEmpty(), "an IPClaim's allocation is not indexed as a Cluster API claim's")
	e, ok := first.last(held.Name)
	g.Expect(ok).To(BeTrue())
	g.Expect(e.old).To(BeNil())

	t.Log("a status written, a deletion started: the record says so, the event has both")
	changed := held.DeepCopy()
	now := metav1.Now()
	changed.ResourceVersion, changed.Status.OrphanedAt, changed.DeletionTimestamp = "2", &now, &now
	w.Modify(changed)
	g.Eventually(func(g Gomega) {
		e, _ := first.last(held.Name)
		g.Expect(e.old).NotTo(BeNil())
		g.Expect(e.old.quiet).To(BeTrue())
		g.Expect(e.new.quiet).To(BeFalse())
		g.Expect(e.new.deleting).To(BeTrue())
	}).Should(Succeed())
	rec, _ = s.get(held.Name)
	g.Expect(rec.view(held.Name).DeletionTimestamp).NotTo(BeNil())
	g.Expect(rec.view(held.Name).ResourceVersion).To(Equal("2"))

	t.Log("a second allocation of the same Cluster API claim (a surplus entry) is indexed beside the first")
	surplus := testAllocation("pool-a.10-0-0-9-32", "IPAddressClaim", "tenant", "node-0")
	w.Add(surplus)
	g.Eventually(func() []string { return s.ofAddressClaim("tenant", "node-0") }).Should(ConsistOf(capi.Name, surplus.Name))
	w.Delete(surplus)
	g.Eventually(func() []string { return s.ofAddressClaim("tenant", "node-0") }).Should(ConsistOf(capi.Name))

	t.Log("an allocation deleted: gone from the records and the index, the event has the old record")
	w.Delete(capi)
	g.Eventually(func(g Gomega) {
		e, _ := first.last(capi.Name)
		g.Expect(e.new).To(BeNil())
		g.Expect(e.old).NotTo(BeNil())
		g.Expect(e.old.spec().Pool).To(Equal("pool-a"))
	}).Should(Succeed())
	_, ok = s.get(capi.Name)
	g.Expect(ok).To(BeFalse())
	g.Expect(s.ofAddressClaim("tenant", "node-0")).To(BeEmpty())

	t.Log("a source started late is told of every record first")
	var late seen
	g.Expect(s.source(late.add).Start(ctx, q)).To(Succeed())
	e, ok = late.last(held.Name)
	g.Expect(ok).To(BeTrue())
	g.Expect(e.old).To(BeNil())
	g.Expect(e.new.quiet).To(BeFalse())
	_, ok = late.last(capi.Name)
	g.Expect(ok).To(BeFalse(), "nor of one deleted")

	t.Log("a relist that lacks one and holds another at a new version: a delete and an update")
	other := testAllocation("pool-a.10-0-0-3-32", "IPClaim", "tenant", "db")
	other.ResourceVersion = "3"
	w.Add(other)
	g.Eventually(func() bool { _, ok := s.get(other.Name); return ok }).Should(BeTrue())
	moved := other.DeepCopy()
	moved.ResourceVersion = "4"
	g.Expect((*allocStore)(s).Replace([]any{moved}, "4")).To(Succeed())
	_, ok = s.get(held.Name)
	g.Expect(ok).To(BeFalse())
	e, _ = late.last(held.Name)
	g.Expect(e.new).To(BeNil(), "the relist's missing allocation is told as deleted")
	e, _ = late.last(other.Name)
	g.Expect(e.old).NotTo(BeNil())
	g.Expect(e.new.resourceVersion()).To(Equal("4"))
}

// TestAllocationRecordKeepsWhatKipamReads: a record gives back the name,
// spec and resourceVersion of the allocation it records, empty strings
// and long ones included, in one string of its own.
func TestAllocationRecordKeepsWhatKipamReads(t *testing.T) {
	for _, a := range []*ipamv1alpha1.IPAllocation{
		testAllocation("pool-a.10-0-0-1-32", "IPClaim", "tenant", "web"),
		{ObjectMeta: metav1.ObjectMeta{Name: "empty"}},
		{ObjectMeta: metav1.ObjectMeta{Name: strings.Repeat("n", 253), ResourceVersion: "18446744073709551615"},
			Spec: ipamv1alpha1.IPAllocationSpec{Pool: "p", CIDR: "2001:db8::/64", Entry: strings.Repeat("e", 1000),
				ClaimRef: ipamv1alpha1.ClaimRef{Kind: "IPAddressClaim", Namespace: "ns", Name: strings.Repeat("c", 253), UID: "0d4b4f3c-5f4e-4c36-9f0a-6f1f3d4a9b21"}}},
	} {
		r := recordOf(a.DeepCopy())
		if got := r.view(r.name()); got.Name != a.Name || got.ResourceVersion != a.ResourceVersion || got.Spec != a.Spec {
			t.Errorf("recorded %+v, gives back %+v", a, got)
		}
		own := uintptr(unsafe.Pointer(unsafe.StringData(r.own)))
		for _, s := range []string{r.name(), r.spec().CIDR, r.spec().Entry, r.spec().ClaimRef.Name, string(r.spec().ClaimRef.UID), r.resourceVersion()} {
			if at := uintptr(unsafe.Pointer(unsafe.StringData(s))); len(s) > 0 && (at < own || at+uintptr(len(s)) > own+uintptr(len(r.own))) {
				t.Errorf("%q is not in the record's own string", s)
			}
		}
	}
}

// TestSettled: an allocation is left out of the queue only when Reconcile
// would do nothing with it: quiet, not being deleted, and its IPClaim as
// named carries it.
func TestSettled(t *testing.T) {
	name := ipam.AllocationName("pool-a", netip.MustParsePrefix("10.0.0.1/32"))
	claim := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "web", UID: "uid-web",
		Annotations: map[string]string{ipam.PoolAnnotation: "pool-a"}}, Spec: ipamv1alpha1.IPClaimSpec{CIDR: "10.0.0.1/32"}}
	base := recordOf(testAllocation(name, "IPClaim", "tenant", "web"))
	for _, c := range []struct {
		what  string
		rec   func(r *allocRecord)
		claim func(c *ipamv1alpha1.IPClaim) *ipamv1alpha1.IPClaim
		want  bool
	}{
		{what: "held by its claim", want: true},
		{what: "its status reports something", rec: func(r *allocRecord) { r.quiet = false }},
		{what: "being deleted, held", rec: func(r *allocRecord) { r.deleting = true }, want: true},
		{what: "recovered: Bound and not Orphaned", rec: func(r *allocRecord) {
			a := testAllocation(name, "IPClaim", "tenant", "web")
			setCond(a, ipamv1alpha1.ConditionBound, metav1.ConditionTrue, ipamv1alpha1.ReasonHolderFound, "held by IPClaim tenant/web")
			setCond(a, ipamv1alpha1.ConditionOrphaned, metav1.ConditionFalse, ipamv1alpha1.ReasonHolderFound, "")
			*r = recordOf(a)
		}, want: true},
		{what: "reported not bound", rec: func(r *allocRecord) {
			a := testAllocation(name, "IPClaim", "tenant", "web")
			setCond(a, ipamv1alpha1.ConditionBound, metav1.ConditionFalse, ipamv1alpha1.ReasonHolderMissing, "no IPClaim carries this prefix")
			*r = recordOf(a)
		}},
		{what: "a pool's", rec: func(r *allocRecord) { *r = recordOf(testAllocation(name, "IPPool", "tenant", "web")) }},
		{what: "a Cluster API claim's", rec: func(r *allocRecord) { *r = recordOf(testAllocation(name, "IPAddressClaim", "tenant", "web")) }},
		{what: "its claim gone", claim: func(*ipamv1alpha1.IPClaim) *ipamv1alpha1.IPClaim { return nil }},
		{what: "another claim of the same name", claim: func(c *ipamv1alpha1.IPClaim) *ipamv1alpha1.IPClaim { c.UID = "uid-new"; return c }},
		{what: "another claim", claim: func(c *ipamv1alpha1.IPClaim) *ipamv1alpha1.IPClaim { c.Name = "db"; return c }},
		{what: "its claim carries another prefix", claim: func(c *ipamv1alpha1.IPClaim) *ipamv1alpha1.IPClaim {
			c.Spec.CIDR = "10.0.0.2/32"
			return c
		}},
	} {
		rec, cl := base, claim.DeepCopy()
		if c.rec != nil {
			c.rec(&rec)
		}
		if c.claim != nil {
			cl = c.claim(cl)
		}
		if got := settled(rec, name, cl); got != c.want {
			t.Errorf("%s: settled = %v, want %v", c.what, got, c.want)
		}
	}
}

// listThenWatch is a fake client that says it cannot stream a list.
type listThenWatch struct{ client.WithWatch }

func (listThenWatch) IsWatchListSemanticsUnSupported() bool { return true }

// TestAllocationTransformerKeepsTheRecord: what the Reflector keeps of an
// allocation while a streamed list lasts makes the same record as the
// whole object.
func TestAllocationTransformerKeepsTheRecord(t *testing.T) {
	now := metav1.Now()
	transform := (*allocStore)(nil).Transformer()
	for what, change := range map[string]func(a *ipamv1alpha1.IPAllocation){
		"quiet":    func(*ipamv1alpha1.IPAllocation) {},
		"orphaned": func(a *ipamv1alpha1.IPAllocation) { a.Status.OrphanedAt = &now },
		"reported": func(a *ipamv1alpha1.IPAllocation) {
			a.Status.Conditions = []metav1.Condition{{Type: ipamv1alpha1.ConditionBound, Status: metav1.ConditionFalse, Message: "no IPClaim"}}
		},
		"recovered": func(a *ipamv1alpha1.IPAllocation) {
			a.Status.Conditions = []metav1.Condition{{Type: ipamv1alpha1.ConditionBound, Status: metav1.ConditionTrue, Message: "held"},
				{Type: ipamv1alpha1.ConditionOrphaned, Status: metav1.ConditionFalse}}
		},
		"deleting": func(a *ipamv1alpha1.IPAllocation) { a.DeletionTimestamp = &now },
	} {
		a := testAllocation("pool-a.10-0-0-1-32", "IPClaim", "tenant", "web")
		a.ResourceVersion = "7"
		a.Labels = map[string]string{ipamv1alpha1.LabelPool: "pool-a"}
		a.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kipam"}}
		change(a)
		got, err := transform(a.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		cut := got.(*ipamv1alpha1.IPAllocation)
		if recordOf(cut) != recordOf(a) || cut.Name != a.Name {
			t.Errorf("%s: cut to %+v, whose record %+v is not the whole object's %+v", what, cut, recordOf(cut), recordOf(a))
		}
		if cut.Labels != nil || cut.ManagedFields != nil {
			t.Errorf("%s: the cut keeps what no record reads: %+v", what, cut.ObjectMeta)
		}
	}
}

// TestAClaimGoneAfterItsAllocationWasSettledQueuesIt: an allocation left
// out of the queue because its claim carried it is queued once the claim
// goes, even when the claim goes while the allocation is being judged: the
// claims' handler is registered before any allocation is judged
// (claimsThenAllocations).
func TestAClaimGoneAfterItsAllocationWasSettledQueuesIt(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sch := runtime.NewScheme()
	g.Expect(ipamv1alpha1.AddToScheme(sch)).To(Succeed())
	name := ipam.AllocationName("pool-a", netip.MustParsePrefix("10.0.0.1/32"))
	claim := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "web", UID: "uid-web",
		Annotations: map[string]string{ipam.PoolAnnotation: "pool-a"}}, Spec: ipamv1alpha1.IPClaimSpec{CIDR: "10.0.0.1/32"}}
	informers := &informertest.FakeInformers{Scheme: sch}
	claims, err := informers.FakeInformerFor(ctx, &ipamv1alpha1.IPClaim{})
	g.Expect(err).NotTo(HaveOccurred())
	// The claim is deleted (its finalizer forced off) right after the
	// allocation's judge read it.
	var once sync.Once
	c := interceptor.NewClient(fake.NewClientBuilder().WithScheme(sch).WithObjects(claim).Build(), interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			err := c.Get(ctx, key, obj, opts...)
			if _, ok := obj.(*ipamv1alpha1.IPClaim); ok && err == nil {
				once.Do(func() {
					g.Expect(c.Delete(ctx, claim)).To(Succeed())
					claims.Delete(ipam.RecordClaim(claim.DeepCopy())) // what the informer holds: the record
				})
			}
			return err
		},
	})
	s, _ := fakeAllocations(*testAllocation(name, "IPClaim", "tenant", "web"))
	r := &IPAllocationReconciler{Client: c, Allocations: s}
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()

	src := &claimsThenAllocations{cache: informers, r: r}
	g.Expect(src.Start(ctx, q)).To(Succeed())
	g.Expect(src.WaitForSync(ctx)).To(Succeed())
	g.Eventually(q.Len).Should(Equal(1), "its claim gone, the allocation is queued")
	item, _ := q.Get()
	g.Expect(item.Name).To(Equal(name))
}
