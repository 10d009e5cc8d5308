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
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// An entry the sweep once saw its claim answered with (settled) is still
// released once the claim is gone without kipam's finalizer: the claim's
// deletion wakes the sweep of its ledger (ledgersOfAddressClaim), which
// finds no claim carrying the entry. Here its IPAllocation went with the
// claim (deleted by hand, which the webhook allows once the holder is
// gone, and whose finalizer the IPAllocation's reconcile then removes
// without a release), so the sweep is the one path left.
func TestTheSweepReleasesASettledEntryOnceItsClaimIsGone(t *testing.T) {
	b, objs, _ := servedFixture(t)
	claim := newAddressClaim("machine-settled", "claim-uid-settled")
	c := b.WithObjects(append(objs, claim)...).WithStatusSubresource(&capiv1beta2.IPAddressClaim{}, &ipamv1alpha1.IPAllocation{}).Build()
	ctx := context.Background()
	m := ipam.NewManager(ipam.ClientStore{Reader: c, Writer: c}, nil)
	r := addressClaimReconciler(c, m)
	answeredAddress(t, r, c, claim)
	answer := leaderAnswer(t, c, claim)

	clock := &fakeClock{t: time.Now()}
	sweep := &IPLedgerReconciler{Client: c, APIReader: c, Manager: m, Recorder: nopRecorder{}, OrphanGrace: DefaultOrphanGrace,
		Now: clock.Now, Sightings: &sightings{}, AddressClaims: true}
	req := ctrl.Request{NamespacedName: client.ObjectKey{Name: "lookup-pool"}}
	if _, err := sweep.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}

	// The claim goes without kipam's finalizer, and its IPAllocation with it.
	var live capiv1beta2.IPAddressClaim
	if err := c.Get(ctx, client.ObjectKeyFromObject(claim), &live); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(live.DeepCopy())
	controllerutil.RemoveFinalizer(&live, ipamv1alpha1.ClaimFinalizer)
	if err := c.Patch(ctx, &live, patch); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, &live); err != nil {
		t.Fatal(err)
	}
	rec := &ipamv1alpha1.IPAllocation{}
	if err := c.Get(ctx, client.ObjectKey{Name: ipam.AllocationName("lookup-pool", answer)}, rec); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, rec); err != nil {
		t.Fatal(err)
	}
	allocs := &IPAllocationReconciler{Client: c, APIReader: c, Manager: m, Recorder: nopRecorder{}, OrphanGrace: DefaultOrphanGrace, Now: clock.Now, AddressClaims: true}
	if _, err := allocs.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(rec)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(rec), rec); !apierrors.IsNotFound(err) {
		t.Fatalf("the IPAllocation of a gone claim is still there: %v", err)
	}

	// Its deletion wakes the sweep; the grace has long passed.
	clock.Add(DefaultOrphanGrace + time.Second)
	if _, err := sweep.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if n := entriesOf(t, c, claim.UID); n != 0 {
		t.Errorf("the pool still records %d entries of a claim gone for longer than the orphan grace, want 0: nothing else releases them", n)
	}
}
