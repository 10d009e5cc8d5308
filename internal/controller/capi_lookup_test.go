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
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// fakeIndexer registers field indexes on a fake client's builder, as
// indexAddressClaims does on the manager's cache.
type fakeIndexer struct{ b *fake.ClientBuilder }

func (f fakeIndexer) IndexField(_ context.Context, obj client.Object, field string, fn client.IndexerFunc) error {
	f.b.WithIndex(obj, field, fn)
	return nil
}

// addressClaimFixture is a kipam pool with n IPAddressClaims in one
// namespace, each holding one address: its entry in the pool's ledger and
// its IPAllocation.
func addressClaimFixture(t *testing.T, n int) (*fake.ClientBuilder, []client.Object) {
	t.Helper()
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := ipamv1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := capiv1beta2.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(s)
	if err := indexAddressClaims(context.Background(), fakeIndexer{b}); err != nil {
		t.Fatal(err)
	}
	if err := ipam.IndexLedgers(context.Background(), fakeIndexer{b}); err != nil {
		t.Fatal(err)
	}
	const pool = "lookup-pool"
	objs := []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: pool, UID: "pool-uid", Finalizers: []string{ipamv1alpha1.PoolFinalizer}},
		Spec:       ipamv1alpha1.IPPoolSpec{CIDR: "10.251.0.0/24"},
	}}
	var lines strings.Builder
	at := time.Now().Add(-time.Hour).Unix()
	for i := range n {
		uid := types.UID(fmt.Sprintf("claim-uid-%d", i))
		name := fmt.Sprintf("machine-%d", i)
		p := fmt.Sprintf("10.251.0.%d/32", i+1)
		fmt.Fprintf(&lines, "%s %s %d %s\n", p, ipam.AddressClaimHolder("default"), at, uid)
		objs = append(objs, &capiv1beta2.IPAddressClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: uid},
			Spec: capiv1beta2.IPAddressClaimSpec{PoolRef: capiv1beta2.IPPoolReference{
				APIGroup: ipamv1alpha1.GroupVersion.Group, Kind: "IPPool", Name: pool}},
		}, &ipamv1alpha1.IPAllocation{
			ObjectMeta: metav1.ObjectMeta{Name: ipam.AllocationName(pool, netip.MustParsePrefix(p))},
			Spec: ipamv1alpha1.IPAllocationSpec{Pool: pool, CIDR: p, Entry: string(uid), ClaimRef: ipamv1alpha1.ClaimRef{
				Kind: "IPAddressClaim", Namespace: "default", Name: name, UID: uid}},
		})
	}
	objs = append(objs, &ipamv1alpha1.IPLedger{
		ObjectMeta: metav1.ObjectMeta{Name: pool, Finalizers: []string{ipamv1alpha1.LedgerFinalizer}},
		Spec:       ipamv1alpha1.IPLedgerSpec{Pool: pool, Allocations: lines.String()},
	})
	return b, objs
}

// answers are the IPAddresses of the fixture's claims, as kipam makes
// them: each names the address its allocation records.
func answers(objs []client.Object) []client.Object {
	var out []client.Object
	for _, o := range objs {
		a, ok := o.(*ipamv1alpha1.IPAllocation)
		if !ok || a.Spec.ClaimRef.Kind != "IPAddressClaim" {
			continue
		}
		ref := a.Spec.ClaimRef
		out = append(out, &capiv1beta2.IPAddress{
			ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name, Finalizers: []string{ipamv1alpha1.AddressFinalizer},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: capiv1beta2.GroupVersion.String(), Kind: "IPAddressClaim", Name: ref.Name, UID: ref.UID,
					Controller: ptr.To(true)}}},
			Spec: capiv1beta2.IPAddressSpec{ClaimRef: capiv1beta2.IPAddressClaimReference{Name: ref.Name}, Address: netip.MustParsePrefix(a.Spec.CIDR).Addr().String(),
				PoolRef: capiv1beta2.IPPoolReference{APIGroup: ipamv1alpha1.GroupVersion.Group, Kind: "IPPool", Name: a.Spec.Pool}},
		})
	}
	return out
}

// A change of a ledger looks at each of its entries. The entry of an
// IPAddressClaim is found by the claim's uid: listing every claim of the
// namespace for each entry cost O(entries × claims) a ledger write (at
// 1,000 live addresses most of kipam's CPU while a pool filled).
func TestLedgerSweepLooksUpAnAddressClaimByItsUID(t *testing.T) {
	const n = 30
	b, objs := addressClaimFixture(t, n)
	listed := 0
	c := b.WithObjects(append(objs, answers(objs)...)...).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			err := c.List(ctx, list, opts...)
			if l, ok := list.(*capiv1beta2.IPAddressClaimList); ok {
				listed += len(l.Items)
			}
			return err
		},
	}).Build()
	r := &IPLedgerReconciler{Client: c, APIReader: c, Manager: ipam.NewManager(ipam.ClientStore{Reader: c, Writer: c}, nil),
		Recorder: nopRecorder{}, OrphanGrace: time.Minute, Now: time.Now, AddressClaims: true, Sightings: &sightings{}}
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Name: "lookup-pool"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != 0 {
		t.Errorf("every entry is carried by its claim, answered with it, but the sweep looks again in %v", res.RequeueAfter)
	}
	if listed != n {
		t.Errorf("the sweep of %d entries read %d IPAddressClaims from the cache, want %d: one per entry, its own", n, listed, n)
	}
}

// A claim's change wakes the IPAllocations that record it, found in the
// allocations' records by the claim's namespace and name: not by listing
// the namespace's every allocation from the API server for each claim's
// create, update and delete.
func TestAddressClaimWakesItsAllocationsFromTheRecords(t *testing.T) {
	b, objs := addressClaimFixture(t, 20)
	var allocs []ipamv1alpha1.IPAllocation
	for _, o := range objs {
		if a, ok := o.(*ipamv1alpha1.IPAllocation); ok {
			allocs = append(allocs, *a)
		}
	}
	records, _ := fakeAllocations(allocs...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	src := records.source(func(context.Context, allocEvent, workqueue.TypedRateLimitingInterface[reconcile.Request]) {})
	if err := src.Start(ctx, q); err != nil {
		t.Fatal(err)
	}
	if err := src.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	reads := 0
	c := interceptor.NewClient(b.Build(), interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			reads++
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			reads++
			return c.List(ctx, list, opts...)
		},
	})
	r := &IPAllocationReconciler{Client: c, APIReader: c, AddressClaims: true, Allocations: records}
	claim := &capiv1beta2.IPAddressClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "machine-7"}}
	got := r.allocationsOfAddressClaim(ctx, claim)
	want := client.ObjectKey{Name: ipam.AllocationName("lookup-pool", netip.MustParsePrefix("10.251.0.8/32"))}
	if len(got) != 1 || got[0].NamespacedName != want {
		t.Errorf("claim default/machine-7 wakes %v, want only %v", got, want)
	}
	if reads != 0 {
		t.Errorf("waking a claim's allocations read through a client %d times, want none", reads)
	}
}

// A commit of a pool wakes the claims that were answered that they wait
// (Ready False, no address), not those not answered yet: each of those is
// queued by its create, and was queued again by every commit of a burst
// while it was being served.
func TestAPoolsCommitWakesOnlyTheAddressClaimsThatWait(t *testing.T) {
	b, _ := addressClaimFixture(t, 0)
	claim := func(name string, conds []metav1.Condition, address string) *capiv1beta2.IPAddressClaim {
		return &capiv1beta2.IPAddressClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: capiv1beta2.IPAddressClaimSpec{PoolRef: capiv1beta2.IPPoolReference{
				APIGroup: ipamv1alpha1.GroupVersion.Group, Kind: "IPPool", Name: "lookup-pool"}},
			Status: capiv1beta2.IPAddressClaimStatus{Conditions: conds, AddressRef: capiv1beta2.IPAddressReference{Name: address}},
		}
	}
	notReady := []metav1.Condition{{Type: capiv1beta2.ReadyCondition, Status: metav1.ConditionFalse, Reason: capiv1beta2.ReasonPoolExhausted}}
	ready := []metav1.Condition{{Type: capiv1beta2.ReadyCondition, Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonAllocated}}
	c := b.WithObjects(claim("new", nil, ""), claim("exhausted", notReady, ""), claim("answered", ready, "answered")).
		WithStatusSubresource(&capiv1beta2.IPAddressClaim{}).Build()
	r := &IPAddressClaimReconciler{Client: c}
	got := r.waiting(context.Background(), client.MatchingFields{indexAddressClaimPool: "lookup-pool"})
	want := client.ObjectKey{Namespace: "default", Name: "exhausted"}
	if len(got) != 1 || got[0].NamespacedName != want {
		t.Errorf("a commit of the pool wakes %v, want only %v", got, want)
	}
}

// countingStore is a ledger store that counts the reads of ledgers: an
// allocation (an Adopt) reads the pool's ledgers.
type countingStore struct {
	ipam.ClientStore
	reads *int
}

func (s countingStore) Get(ctx context.Context, name string) (*ipamv1alpha1.IPLedger, error) {
	*s.reads++
	return s.ClientStore.Get(ctx, name)
}

// The pass after a claim's first, queued by that pass's own writes, may
// read a cache that does not show the claim's status yet. A claim whose
// IPAddress and IPAllocation record its address is answered from them:
// its status written, no second allocation (an Adopt, which reads the
// pool's ledgers in the pool's commit queue).
func TestARecordedAddressClaimIsAnsweredWithoutAllocating(t *testing.T) {
	b, objs := addressClaimFixture(t, 3)
	claim := objs[4].(*capiv1beta2.IPAddressClaim) // machine-1, 10.251.0.2
	claim.Finalizers = []string{ipamv1alpha1.ClaimFinalizer}
	objs = append(objs, &capiv1beta2.IPAddress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: claim.Name, Finalizers: []string{ipamv1alpha1.AddressFinalizer},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: capiv1beta2.GroupVersion.String(), Kind: "IPAddressClaim", Name: claim.Name,
				UID: claim.UID, Controller: ptr.To(true)}}},
		Spec: capiv1beta2.IPAddressSpec{ClaimRef: capiv1beta2.IPAddressClaimReference{Name: claim.Name}, PoolRef: claim.Spec.PoolRef,
			Address: "10.251.0.2", Prefix: ptr.To(int32(24))},
	})
	c := b.WithObjects(objs...).WithStatusSubresource(&capiv1beta2.IPAddressClaim{}).Build()
	reads := 0
	m := ipam.NewManager(countingStore{ipam.ClientStore{Reader: c, Writer: c}, &reads}, nil)
	r := addressClaimReconciler(c, m)
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(claim)}); err != nil {
		t.Fatal(err)
	}
	if reads != 0 {
		t.Errorf("answering a claim whose address is recorded read the pool's ledgers %d times (an allocation), want none", reads)
	}
	var got capiv1beta2.IPAddressClaim
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(claim), &got); err != nil {
		t.Fatal(err)
	}
	if cond := meta.FindStatusCondition(got.Status.Conditions, capiv1beta2.ReadyCondition); got.Status.AddressRef.Name != claim.Name ||
		cond == nil || cond.Status != metav1.ConditionTrue || cond.Message != "10.251.0.2 allocated from pool lookup-pool" {
		t.Errorf("the claim's status is %+v, want Ready with addressRef %s and its address", got.Status, claim.Name)
	}
}
