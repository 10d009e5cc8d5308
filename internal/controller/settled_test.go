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
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// TestSettledIsWhatReconcileLeavesAlone: settled, which decides which
// claims of a restart's initial list are not queued, is true of a claim
// that Reconcile has just brought to Ready, and of every claim it is
// true of, Reconcile writes nothing and reads no ledger. Each case
// changes one thing of that claim, or of its IPAllocation, as another
// client or a lost write could leave it.
func TestSettledIsWhatReconcileLeavesAlone(t *testing.T) {
	ctx := context.Background()
	const ns, poolName = "tenant", "settled-pool"
	cidr := netip.MustParsePrefix("10.9.0.5/32")
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, ipamv1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	pool := &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: poolName, UID: "pool-uid", Finalizers: []string{ipamv1alpha1.PoolFinalizer}},
		Spec: ipamv1alpha1.IPPoolSpec{CIDR: "10.9.0.0/24"}}
	id := ipam.NewEntryID()
	claim := &ipamv1alpha1.IPClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", UID: "claim-uid", Generation: 1, Finalizers: []string{ipamv1alpha1.ClaimFinalizer},
			Annotations: map[string]string{ipam.PoolAnnotation: poolName, ipam.EntryAnnotation: id}},
		Spec: ipamv1alpha1.IPClaimSpec{Pool: poolName, CIDR: cidr.String()},
	}
	name := ipam.AllocationName(poolName, cidr)
	alloc := &ipamv1alpha1.IPAllocation{
		ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: []string{ipamv1alpha1.AllocationFinalizer}},
		Spec: ipamv1alpha1.IPAllocationSpec{Pool: poolName, CIDR: cidr.String(), Entry: id,
			ClaimRef: ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: ns, Name: claim.Name, UID: claim.UID}},
	}

	// writes and ledger reads count what a Reconcile does that settled
	// promises it does not.
	var writes, ledgerReads atomic.Int32
	wrote := func() { writes.Add(1) }
	newReconciler := func(t *testing.T, objs ...client.Object) (*IPClaimReconciler, client.Client) {
		b := fake.NewClientBuilder().WithScheme(s).WithStatusSubresource(&ipamv1alpha1.IPClaim{}, &ipamv1alpha1.IPAllocation{})
		if err := ipam.IndexLedgers(ctx, fakeIndexer{b}); err != nil {
			t.Fatal(err)
		}
		base := b.WithObjects(objs...).Build()
		m := ipam.NewManager(ipam.ClientStore{Reader: base, Writer: base}, nil)
		// The pool recorded in the address space, as its webhook does, and
		// the claim's prefix committed, as the claim's webhook does.
		p := netip.MustParsePrefix(pool.Spec.CIDR)
		for _, req := range []ipam.Request{
			{Pool: ipam.Space(p.Addr()), CIDR: p, Bits: p.Bits(), Holder: ipam.PoolHolder(pool.Name), ID: ipam.PoolEntryID(pool), Adopt: true},
			{Pool: pool, CIDR: cidr, Bits: cidr.Bits(), Holder: ipam.ClaimHolder(ns), ID: id},
		} {
			if _, err := m.Allocate(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
		c := interceptor.NewClient(base, interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
				wrote()
				return c.Create(ctx, o, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
				wrote()
				return c.Update(ctx, o, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
				wrote()
				return c.Patch(ctx, o, p, opts...)
			},
			Delete: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
				wrote()
				return c.Delete(ctx, o, opts...)
			},
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
				wrote()
				return c.SubResource(sub).Patch(ctx, o, p, opts...)
			},
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
				if _, ok := o.(*ipamv1alpha1.IPLedger); ok {
					ledgerReads.Add(1)
				}
				return c.Get(ctx, key, o, opts...)
			},
			List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, opts ...client.ListOption) error {
				if _, ok := l.(*ipamv1alpha1.IPLedgerList); ok {
					ledgerReads.Add(1)
				}
				return c.List(ctx, l, opts...)
			},
		})
		return &IPClaimReconciler{Client: c, APIReader: c, Manager: m, Recorder: nopRecorder{}, Now: time.Now}, c
	}
	reconcileOnce := func(t *testing.T, r *IPClaimReconciler) {
		t.Helper()
		if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(claim)}); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
	}

	// The claim as Reconcile leaves it, the first pass having read the
	// ledger and written Ready.
	r, c := newReconciler(t, pool, claim.DeepCopy(), alloc.DeepCopy())
	reconcileOnce(t, r)
	var ready ipamv1alpha1.IPClaim
	if err := c.Get(ctx, client.ObjectKeyFromObject(claim), &ready); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(ready.Status.Conditions, ipamv1alpha1.ConditionReady) {
		t.Fatalf("the first pass left the claim not Ready: %+v", ready.Status)
	}
	ready.ResourceVersion = ""

	for _, tc := range []struct {
		name    string
		claim   func(*ipamv1alpha1.IPClaim)
		alloc   func(*ipamv1alpha1.IPAllocation) // nil: the allocation as it is; returning without it: none
		lost    bool
		settled bool
	}{
		{name: "Ready, bound", settled: true},
		{name: "another controller's condition beside", settled: true, claim: func(c *ipamv1alpha1.IPClaim) {
			meta.SetStatusCondition(&c.Status.Conditions, metav1.Condition{Type: "example.com/Checked", Status: metav1.ConditionTrue, Reason: "Checked", LastTransitionTime: metav1.Now()})
		}},
		{name: "a label changed", settled: true, claim: func(c *ipamv1alpha1.IPClaim) { c.Labels = map[string]string{"team": "a"} }},
		{name: "Ready's message from another version", claim: func(c *ipamv1alpha1.IPClaim) { c.Status.Conditions[0].Message = "allocated" }},
		{name: "Ready at an older generation", claim: func(c *ipamv1alpha1.IPClaim) { c.Generation = 2 }},
		{name: "not Ready", claim: func(c *ipamv1alpha1.IPClaim) { c.Status.Conditions[0].Status = metav1.ConditionFalse }},
		{name: "no status.cidr", claim: func(c *ipamv1alpha1.IPClaim) { c.Status.CIDR = "" }},
		{name: "another status.allocation", claim: func(c *ipamv1alpha1.IPClaim) { c.Status.Allocation = "x" }},
		{name: "no finalizer", claim: func(c *ipamv1alpha1.IPClaim) { controllerutil.RemoveFinalizer(c, ipamv1alpha1.ClaimFinalizer) }},
		{name: "a lifetime", claim: func(c *ipamv1alpha1.IPClaim) { c.Spec.TTLSeconds = ptr.To[int64](3600) }},
		{name: "being deleted", claim: func(c *ipamv1alpha1.IPClaim) { c.DeletionTimestamp = ptr.To(metav1.Now()) }},
		{name: "no pool annotation, spec.pool", settled: true, claim: func(c *ipamv1alpha1.IPClaim) { delete(c.Annotations, ipam.PoolAnnotation) }},
		{name: "its entry's loss seen", lost: true},
		{name: "no IPAllocation", alloc: func(a *ipamv1alpha1.IPAllocation) { a.Name = "" }},
		{name: "an IPAllocation without the claim's uid", alloc: func(a *ipamv1alpha1.IPAllocation) { a.Spec.ClaimRef.UID = "" }},
		{name: "an IPAllocation bound to another claim", alloc: func(a *ipamv1alpha1.IPAllocation) { a.Spec.ClaimRef.Name = "other" }},
		// Reconcile judges an allocation by whom it names (ipam.BoundTo).
		{name: "an IPAllocation of another entry", settled: true, alloc: func(a *ipamv1alpha1.IPAllocation) { a.Spec.Entry = ipam.NewEntryID() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, a := ready.DeepCopy(), alloc.DeepCopy()
			if tc.claim != nil {
				tc.claim(cl)
			}
			objs := []client.Object{pool, cl}
			if tc.alloc != nil {
				tc.alloc(a)
			}
			if a.Name != "" {
				objs = append(objs, a)
			}
			r, c := newReconciler(t, objs...)
			if tc.lost {
				r.lost.add(client.ObjectKeyFromObject(cl))
			}
			var cached ipamv1alpha1.IPClaim
			if err := c.Get(ctx, client.ObjectKeyFromObject(cl), &cached); err != nil {
				t.Fatal(err)
			}
			got := r.settled(&cached)
			if got != tc.settled {
				t.Errorf("settled = %v, want %v", got, tc.settled)
			}
			if !got {
				return
			}
			writes.Store(0)
			ledgerReads.Store(0)
			reconcileOnce(t, r)
			if n, l := writes.Load(), ledgerReads.Load(); n != 0 || l != 0 {
				t.Errorf("settled, but Reconcile wrote %d times and read a ledger %d times", n, l)
			}
		})
	}
}

// TestClaimEventsQueueEveryChangeAfterTheInitialList: only the initial
// list is judged; a claim added after it, and every change and deletion,
// is queued whatever the claim holds.
func TestClaimEventsQueueEveryChangeAfterTheInitialList(t *testing.T) {
	s := &claimEvents{r: &IPClaimReconciler{}}
	c := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c"}, Spec: ipamv1alpha1.IPClaimSpec{CIDR: "10.0.0.1/32"}}
	for name, do := range map[string]func(workqueue.TypedRateLimitingInterface[reconcile.Request]){
		"added": func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			s.create(context.Background(), event.CreateEvent{Object: c}, q)
		},
		"changed": func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			s.update(context.Background(), event.UpdateEvent{ObjectOld: c, ObjectNew: c}, q)
		},
		"deleted": func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			s.delete(context.Background(), event.DeleteEvent{Object: c}, q)
		},
	} {
		q := priorityqueue.New[reconcile.Request]("ipclaim-events-test-" + name)
		do(q)
		if q.Len() != 1 {
			t.Errorf("a claim %s left %d requests queued, want 1", name, q.Len())
		}
		q.ShutDown()
	}
}
