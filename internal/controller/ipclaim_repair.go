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
	"fmt"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/ipam"
)

// A claim's spec.cidr is normally committed to its pool's ledger by the
// webhook before the claim is stored. A claim can still carry a prefix the
// ledger does not record: it was created while the webhook was bypassed (a
// restore with the webhook configuration missing), or its ledger entry was
// lost. Such a claim is re-recorded if its prefix is free and marked
// Conflict if not; it never takes a prefix from another holder. Checking
// needs a read of the stored ledger, so a claim that looks healthy (its
// IPAllocation bound to it, Ready) is checked only after its entry left the
// ledger while it still carried it, which the ledger watch reports.

// lostRecords is the set of claims whose prefix left their pool's ledger
// while they carried it; their next reconcile checks the stored ledger.
type lostRecords struct {
	mu   sync.Mutex
	keys map[types.NamespacedName]struct{}
}

func (l *lostRecords) add(k types.NamespacedName) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = map[types.NamespacedName]struct{}{}
	}
	l.keys[k] = struct{}{}
}

func (l *lostRecords) has(k types.NamespacedName) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.keys[k]
	return ok
}

func (l *lostRecords) drop(k types.NamespacedName) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.keys, k)
}

// ledgerLosses wakes, and marks for a ledger check, the live claims whose
// prefix an update or delete of a ledger dropped. Releases drop only
// prefixes of claims being deleted or of no claim, so this fires only when
// a record was lost.
func (r *IPClaimReconciler) ledgerLosses() handler.Funcs {
	return handler.Funcs{
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.enqueueLost(ctx, e.ObjectOld, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.enqueueLost(ctx, e.Object, nil, q)
		},
	}
}

func (r *IPClaimReconciler) enqueueLost(ctx context.Context, old, cur client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	before, ok := old.(*ipamv1alpha1.IPLedger)
	if !ok {
		return
	}
	after := &ipamv1alpha1.IPLedger{}
	if l, ok := cur.(*ipamv1alpha1.IPLedger); ok {
		after = l
	}
	if before.Spec.Allocations == after.Spec.Allocations {
		return
	}
	for _, cidr := range droppedEntries(before, after) {
		claims, err := r.Holdings.claims(before.Spec.Pool, cidr, "")
		if err != nil {
			logf.FromContext(ctx).Error(err, "listing the claims of a dropped ledger entry", "pool", before.Spec.Pool, "cidr", cidr)
			continue
		}
		for i := range claims {
			if c := &claims[i]; c.DeletionTimestamp == nil {
				key := client.ObjectKeyFromObject(c)
				r.lost.add(key)
				q.Add(reconcile.Request{NamespacedName: key})
			}
		}
	}
}

// droppedEntries returns the prefixes the ledger before records that after
// does not.
func droppedEntries(before, after *ipamv1alpha1.IPLedger) []string {
	was, err := ipam.Entries(before)
	if err != nil {
		return nil
	}
	is, _ := ipam.Entries(after)
	var out []string
	for p := range was {
		if _, ok := is[p]; !ok {
			out = append(out, p.String())
		}
	}
	return out
}

// ensureRecorded makes sure the stored ledger of the claim's pool records
// its prefix as the claim's entry (its namespace and ClaimEntryID),
// recording it if it is free and the claim could have been created with
// it. When the prefix is not the claim's to have, it returns the Ready
// condition that says why and false.
func (r *IPClaimReconciler) ensureRecorded(ctx context.Context, claim *ipamv1alpha1.IPClaim, poolName string, cidr netip.Prefix) (metav1.Condition, bool, error) {
	key := client.ObjectKeyFromObject(claim)
	cond, ok, err := r.checkRecord(ctx, claim, poolName, cidr)
	if err == nil {
		r.lost.drop(key)
	}
	return cond, ok, err
}

func (r *IPClaimReconciler) checkRecord(ctx context.Context, claim *ipamv1alpha1.IPClaim, poolName string, cidr netip.Prefix) (metav1.Condition, bool, error) {
	var pool ipamv1alpha1.IPPool
	err := r.Get(ctx, client.ObjectKey{Name: poolName}, &pool)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, client.ObjectKey{Name: poolName}, &pool) // created a moment ago?
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return notReady(ipamv1alpha1.ReasonInvalid, fmt.Sprintf("pool %s does not exist", poolName)), false, nil
		}
		return metav1.Condition{}, false, err
	}
	want := ipam.ClaimHolder(claim.Namespace)
	// The cache first: the webhook committed the entry before the claim
	// existed, so it nearly always shows it. A stale positive is caught by
	// the watch on dropped entries; a negative is confirmed live.
	if e, ok, err := ipam.LookupEntry(ctx, r.Client, poolName, cidr); err == nil && ok && ipam.OwnEntry(e, claim) {
		return metav1.Condition{}, true, nil
	}
	e, recorded, err := r.Manager.Recorded(ctx, &pool, cidr)
	if err != nil {
		return metav1.Condition{}, false, err
	}
	if recorded {
		if ipam.OwnEntry(e, claim) {
			return metav1.Condition{}, true, nil
		}
		who := "another claim in this namespace"
		if e.Holder != want {
			who = e.Holder
		}
		return r.conflict(claim, nil, fmt.Sprintf("%s is recorded in pool %s for %s, not for this claim", cidr, poolName, who)), false, nil
	}
	// Recorded only if the claim could have been created with this cidr:
	// the pool admits its namespace and is not being deleted.
	if _, err := r.Resolver.Candidates(ctx, &ipamv1alpha1.IPClaim{Spec: ipamv1alpha1.IPClaimSpec{Pool: poolName}}, claim.Namespace); err != nil {
		var fe *field.Error
		if errors.As(err, &fe) {
			return notReady(ipamv1alpha1.ReasonInvalid, fe.Error()), false, nil
		}
		return metav1.Condition{}, false, err
	}
	// Record it only for a claim that still lives as cached: a claim just
	// deleted must not get its released prefix back.
	var live ipamv1alpha1.IPClaim
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(claim), &live); err != nil {
		return metav1.Condition{}, false, err
	}
	h, ok := ipam.HoldingOf(claim, poolName, cidr.String())
	if _, still := ipam.HoldingOf(&live, poolName, cidr.String()); !ok || !still || live.UID != claim.UID || live.DeletionTimestamp != nil {
		return metav1.Condition{}, false, fmt.Errorf("claim %s changed while its record was checked; checking again", client.ObjectKeyFromObject(claim))
	}
	// The prefix as a single-stack claim would ask for it: one of a
	// dual-stack claim's two.
	req, err := ipam.RequestFor(ipam.View(claim, h), &pool, want, false)
	if err != nil {
		return notReady(ipamv1alpha1.ReasonInvalid, err.Error()), false, nil
	}
	req.ID = ipam.ClaimEntryID(claim)
	// The allocator serving the pool may still hold the record the stored
	// ledger lost: have it rebuilt from the ledgers first.
	req.Fresh = true
	_, err = r.Manager.Allocate(ctx, req)
	switch {
	case err == nil:
		r.Recorder.Eventf(claim, nil, corev1.EventTypeNormal, ipamv1alpha1.ReasonAllocated, "Bind",
			"recorded %s in pool %s: the pool's ledger did not record it and it was free", cidr, poolName)
		logf.FromContext(ctx).Info("recorded a claim's unrecorded prefix", "pool", poolName, "cidr", cidr)
		return metav1.Condition{}, true, nil
	case errors.Is(err, allocator.ErrOverlap), errors.Is(err, allocator.ErrHeld), errors.Is(err, allocator.ErrReserved):
		detail := err.Error()
		var fe *field.Error
		if errors.As(ipam.ClaimError(err, req), &fe) {
			detail = fe.Detail
		}
		var related *ipamv1alpha1.IPAllocation
		if errors.Is(err, allocator.ErrOverlap) {
			if related = r.overlapping(ctx, poolName, cidr); related != nil {
				ref := related.Spec.ClaimRef
				detail = fmt.Sprintf("overlaps %s, held by %s %s/%s", related.Spec.CIDR, ref.Kind, ref.Namespace, ref.Name)
			}
		}
		return r.conflict(claim, related, fmt.Sprintf("%s is not recorded in pool %s and cannot be: it %s", cidr, poolName, detail)), false, nil
	case errors.Is(err, ipam.ErrBusy):
		return metav1.Condition{}, false, err
	}
	var fe *field.Error
	if errors.As(ipam.ClaimError(err, req), &fe) {
		return notReady(ipamv1alpha1.ReasonInvalid, fe.Error()), false, nil
	}
	return metav1.Condition{}, false, err
}

// adoptPool names, in the pool annotation, the pool a claim by selector
// draws its cidr from, when the webhook did not (it was bypassed): the
// first candidate the cidr fits.
func (r *IPClaimReconciler) adoptPool(ctx context.Context, claim *ipamv1alpha1.IPClaim) error {
	pools, err := r.Resolver.Candidates(ctx, claim, claim.Namespace)
	var fe *field.Error
	if errors.As(err, &fe) {
		return r.patchStatus(ctx, claim, notReady(ipamv1alpha1.ReasonInvalid, fe.Error()), "")
	}
	if err != nil {
		return err
	}
	for _, pool := range pools {
		if _, err := ipam.RequestFor(claim, pool, ipam.ClaimHolder(claim.Namespace), false); err != nil {
			continue
		}
		patch := client.MergeFrom(claim.DeepCopy())
		metav1.SetMetaDataAnnotation(&claim.ObjectMeta, ipam.PoolAnnotation, pool.Name)
		return r.Patch(ctx, claim, patch) // the update brings the claim back
	}
	return r.patchStatus(ctx, claim, notReady(ipamv1alpha1.ReasonInvalid,
		fmt.Sprintf("spec.cidr: %s lies in no pool matching the selector", claim.Spec.CIDR)), "")
}

// overlapping returns an IPAllocation of the pool that overlaps cidr, as
// the API server lists them; it only names the holder in a message.
func (r *IPClaimReconciler) overlapping(ctx context.Context, pool string, cidr netip.Prefix) *ipamv1alpha1.IPAllocation {
	var allocs ipamv1alpha1.IPAllocationList
	// No record keeps an allocation's labels: this reads the API server.
	if err := r.APIReader.List(ctx, &allocs, client.MatchingLabels{ipamv1alpha1.LabelPool: pool}); err != nil {
		return nil
	}
	for i := range allocs.Items {
		if p, err := netip.ParsePrefix(allocs.Items[i].Spec.CIDR); err == nil && p.Overlaps(cidr) {
			return &allocs.Items[i]
		}
	}
	return nil
}

// conflict returns the Conflict condition with msg, recording a Warning
// event the first time the claim meets it.
func (r *IPClaimReconciler) conflict(claim *ipamv1alpha1.IPClaim, related *ipamv1alpha1.IPAllocation, msg string) metav1.Condition {
	cond := notReady(ipamv1alpha1.ReasonConflict, msg)
	if c := meta.FindStatusCondition(claim.Status.Conditions, ipamv1alpha1.ConditionReady); c == nil || c.Reason != cond.Reason || c.Message != cond.Message {
		if related != nil {
			r.Recorder.Eventf(claim, related, corev1.EventTypeWarning, ipamv1alpha1.ReasonConflict, "Bind", msg)
		} else {
			r.Recorder.Eventf(claim, nil, corev1.EventTypeWarning, ipamv1alpha1.ReasonConflict, "Bind", msg)
		}
	}
	return cond
}

func notReady(reason, msg string) metav1.Condition {
	return metav1.Condition{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: msg}
}
