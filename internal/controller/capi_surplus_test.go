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
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// Two passes of one claim on two replicas commit an entry each: the
// pool's owner answered one from memory that had not seen the other's
// commit (AdoptKnown), or an owner of an earlier release, which ignores
// AdoptKnown, served one. The claim's IPAddress, created once, is its
// answer: the pass whose create finds it created meanwhile, naming the
// other entry, releases its own entry and record, and reports the claim
// Ready with the answer, whose IPAllocation it creates if the other pass
// stopped before it did.
func TestAPassWhoseIPAddressWasCreatedMeanwhileReleasesItsEntry(t *testing.T) {
	b, objs, _ := servedFixture(t)
	claim := newAddressClaim("machine-twice", "claim-uid-twice", ipamv1alpha1.ClaimFinalizer)
	store := b.WithObjects(append(objs, claim)...).WithStatusSubresource(&capiv1beta2.IPAddressClaim{}).Build()
	ctx := context.Background()
	var pool ipamv1alpha1.IPPool
	if err := store.Get(ctx, client.ObjectKey{Name: "lookup-pool"}, &pool); err != nil {
		t.Fatal(err)
	}
	other := &IPAddressClaimReconciler{Client: store, APIReader: store, Manager: ipam.NewManager(ipam.ClientStore{Reader: store, Writer: store}, nil),
		Resolver: &ipam.Resolver{Reader: store, APIReader: store}, Recorder: nopRecorder{}, Now: time.Now}
	var answer netip.Prefix
	raced := false
	// This pass's IPAddress create: the other replica's pass commits its
	// own entry (not adopting), and creates its records, just before.
	c := interceptor.NewClient(store, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*capiv1beta2.IPAddress); ok && !raced {
				raced = true
				p, err := other.Manager.Allocate(ctx, ipam.Request{Pool: &pool, Bits: 32, Holder: ipam.AddressClaimHolder(claim.Namespace), ID: string(claim.UID)})
				if err != nil {
					t.Fatalf("the other pass's commit: %v", err)
				}
				answer = p
				// It stops after its IPAddress, before its IPAllocation.
				if _, _, err := other.ensureAddress(ctx, claim, &pool, p); err != nil {
					t.Fatal(err)
				}
			}
			return c.Create(ctx, obj, opts...)
		},
	})
	r := &IPAddressClaimReconciler{Client: c, APIReader: store, Manager: ipam.NewManager(ipam.ClientStore{Reader: store, Writer: store}, nil),
		Resolver: &ipam.Resolver{Reader: store, APIReader: store}, Recorder: nopRecorder{}, Now: time.Now}
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(claim)}); err != nil {
		t.Fatalf("the pass: %v", err)
	}
	if !raced {
		t.Fatal("the pass never created the IPAddress: the scenario did not run")
	}
	if n := entriesOf(t, store, claim.UID); n != 1 {
		t.Errorf("the pool records %d entries for the claim, want 1", n)
	}
	var got capiv1beta2.IPAddressClaim
	if err := store.Get(ctx, client.ObjectKeyFromObject(claim), &got); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, capiv1beta2.ReadyCondition); c == nil || c.Status != metav1.ConditionTrue ||
		!strings.HasPrefix(c.Message, answer.Addr().String()+" ") || got.Status.AddressRef.Name != claim.Name {
		t.Errorf("the pass that released its surplus entry reports %+v, %q; want Ready with %s, not failed", c, got.Status.AddressRef.Name, answer.Addr())
	}
	if err := store.Get(ctx, client.ObjectKey{Name: ipam.AllocationName(pool.Name, answer)}, &ipamv1alpha1.IPAllocation{}); err != nil {
		t.Errorf("the answer's IPAllocation, which the other pass did not create: %v", err)
	}
	if got := leaderAnswer(t, store, claim); got != answer {
		t.Fatalf("the claim's IPAddress names %s, want the other pass's %s", got, answer)
	}
	var allocs ipamv1alpha1.IPAllocationList
	if err := store.List(ctx, &allocs); err != nil {
		t.Fatal(err)
	}
	for _, a := range allocs.Items {
		if a.Spec.ClaimRef.UID == claim.UID && a.Spec.CIDR != answer.String() {
			t.Errorf("IPAllocation %s records %s for the claim, whose answer is %s", a.Name, a.Spec.CIDR, answer)
		}
	}
	// The claim's next pass reports its answer.
	if got := answeredAddress(t, other, store, claim); got != answer.Addr().String() {
		t.Errorf("the claim is answered with %s, want its IPAddress's %s", got, answer.Addr())
	}
}

// leaderAnswer is the address the claim's IPAddress names, as a prefix.
func leaderAnswer(t *testing.T, c client.Client, claim *capiv1beta2.IPAddressClaim) netip.Prefix {
	t.Helper()
	var addr capiv1beta2.IPAddress
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(claim), &addr); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr(addr.Spec.Address)
	return netip.PrefixFrom(a, a.BitLen())
}

// The frozen pass of the test above may instead stop for good between its
// commit and its records. Its entry is then the claim's by uid, but not its
// answer: the ledger sweep releases it once the grace has passed, and
// leaves the answer alone; so does the IPAllocation's reconcile with the
// record of such an entry, had the pass created it.
func TestTheSweepReleasesAnAddressClaimsSurplusEntry(t *testing.T) {
	b, objs, _ := servedFixture(t)
	claim := newAddressClaim("machine-surplus", "claim-uid-surplus")
	c := b.WithObjects(append(objs, claim)...).WithStatusSubresource(&capiv1beta2.IPAddressClaim{}, &ipamv1alpha1.IPAllocation{}).Build()
	ctx := context.Background()
	m := ipam.NewManager(ipam.ClientStore{Reader: c, Writer: c}, nil)
	r := addressClaimReconciler(c, m)
	answered := answeredAddress(t, r, c, claim)
	answer := leaderAnswer(t, c, claim)
	var pool ipamv1alpha1.IPPool
	if err := c.Get(ctx, client.ObjectKey{Name: "lookup-pool"}, &pool); err != nil {
		t.Fatal(err)
	}
	// The frozen pass's commit, and the record it created before it stopped.
	extra, err := m.Allocate(ctx, ipam.Request{Pool: &pool, Bits: 32, Holder: ipam.AddressClaimHolder(claim.Namespace), ID: string(claim.UID)})
	if err != nil {
		t.Fatal(err)
	}
	if extra == answer {
		t.Fatalf("the second commit got the answer %s again", extra)
	}
	rec := &ipamv1alpha1.IPAllocation{}
	if err := c.Get(ctx, client.ObjectKey{Name: ipam.AllocationName(pool.Name, answer)}, rec); err != nil {
		t.Fatal(err)
	}
	rec = &ipamv1alpha1.IPAllocation{ObjectMeta: ctrl.ObjectMeta{Name: ipam.AllocationName(pool.Name, extra), Finalizers: rec.Finalizers}, Spec: rec.Spec}
	rec.Spec.CIDR = extra.String()
	if err := c.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}

	clock := &fakeClock{t: time.Now()}
	allocs := &IPAllocationReconciler{Client: c, APIReader: c, Manager: m, Recorder: nopRecorder{}, OrphanGrace: DefaultOrphanGrace, Now: clock.Now, AddressClaims: true}
	if _, err := allocs.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(rec)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(rec), rec); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(rec.Status.Conditions, ipamv1alpha1.ConditionOrphaned) {
		t.Errorf("the surplus entry's IPAllocation is not Orphaned: %+v", rec.Status.Conditions)
	}
	if _, err := allocs.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKey{Name: ipam.AllocationName(pool.Name, answer)}}); err != nil {
		t.Fatal(err)
	}

	// The API server's reads in pages of one claim: the sweep reads the
	// namespace's claims a page at a time, never whole.
	sweep := &IPLedgerReconciler{Client: c, APIReader: &pagedReader{Reader: c, size: 1}, Manager: m, Recorder: nopRecorder{}, OrphanGrace: DefaultOrphanGrace,
		Now: clock.Now, Sightings: &sightings{}, AddressClaims: true}
	req := ctrl.Request{NamespacedName: client.ObjectKey{Name: pool.Name}}
	res, err := sweep.Reconcile(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > DefaultOrphanGrace {
		t.Errorf("the sweep looks again after %s, want within the grace", res.RequeueAfter)
	}
	if n := entriesOf(t, c, claim.UID); n != 2 {
		t.Fatalf("the sweep released within the grace: %d entries left for the claim, want 2", n)
	}
	clock.Add(DefaultOrphanGrace)
	if _, err := sweep.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	l, err := ipam.ReadLedger(ctx, c, pool.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.Allocations[extra]; ok {
		t.Errorf("the surplus entry %s is still recorded after the grace", extra)
	}
	if e, ok := l.Allocations[answer]; !ok || !e.Is(ipam.AddressClaimHolder(claim.Namespace), string(claim.UID)) {
		t.Errorf("the claim's answer %s is no longer its entry: %+v", answer, l.Allocations)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(rec), rec); !apierrors.IsNotFound(err) {
		t.Errorf("the surplus entry's IPAllocation is still there: %v", err)
	}
	if got := answeredAddress(t, r, c, claim); got != answered {
		t.Errorf("the claim is answered with %s after the sweep, want %s", got, answered)
	}
}

// An entry whose claim has no IPAddress yet is looked at again an orphan
// grace later: its IPAddress, once created, may name another entry of the
// claim (one committed twice), which makes this one surplus. Once the
// claim is seen answered with the entry, the sweep no longer looks.
func TestTheSweepLooksAgainAtAnEntryWhoseClaimIsNotAnswered(t *testing.T) {
	b, objs := addressClaimFixture(t, 2)
	c := b.WithObjects(objs...).Build()
	clock := &fakeClock{t: time.Now()}
	r := &IPLedgerReconciler{Client: c, APIReader: c, Manager: ipam.NewManager(ipam.ClientStore{Reader: c, Writer: c}, nil),
		Recorder: nopRecorder{}, OrphanGrace: DefaultOrphanGrace, Now: clock.Now, AddressClaims: true, Sightings: &sightings{}}
	req := ctrl.Request{NamespacedName: client.ObjectKey{Name: "lookup-pool"}}
	res, err := r.Reconcile(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != DefaultOrphanGrace {
		t.Errorf("the claims are not answered yet, and the sweep looks again in %v, want %v", res.RequeueAfter, DefaultOrphanGrace)
	}
	for _, a := range answers(objs) {
		if err := c.Create(context.Background(), a); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(DefaultOrphanGrace)
	if res, err = r.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != 0 {
		t.Errorf("the claims are answered with their entries, and the sweep looks again in %v", res.RequeueAfter)
	}
	l, err := ipam.ReadLedger(context.Background(), c, "lookup-pool")
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Allocations) != 2 {
		t.Errorf("the sweep released what its claims carry: %d entries left, want 2", len(l.Allocations))
	}
}
