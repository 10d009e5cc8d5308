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
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/metrics"
	"github.com/kipam/kipam/internal/netutil"
)

// IPPoolReconciler publishes a pool's usage in its status: the Manager's
// snapshot when it reflects the ledgers in the cache, else computed from
// them.
type IPPoolReconciler struct {
	client.Client
	// APIReader confirms, against the API server, that a deleted pool's
	// ledgers are empty before the pool goes.
	APIReader client.Reader
	Manager   *ipam.Manager
	Recorder  EventRecorder
	Now       func() time.Time
	// Allocations keeps what kipam reads of each IPAllocation; when nil,
	// each is read through Client.
	Allocations *allocations
	// RetryMaxDelay caps the wait before retrying a failed reconcile
	// (DefaultRetryMaxDelay when 0).
	RetryMaxDelay time.Duration
	// Unconfirmed is what the ledger sweep found of each pool's entries no
	// holder carries yet (status.pending and status.unconfirmed).
	Unconfirmed *unconfirmed
	// LeaseNamespace holds the pools' Leases: a deleted pool's Lease is
	// deleted before the pool goes. Unless empty.
	LeaseNamespace string

	mu      sync.Mutex
	written map[string]time.Time
}

// statusInterval is the least time between two status writes of one pool:
// under load its ledgers change a batch at a time, and each change would
// otherwise cost the API server a write.
const statusInterval = 250 * time.Millisecond

// wait returns how long pool's status must wait before its next write.
func (r *IPPoolReconciler) wait(pool string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.written[pool].Add(statusInterval).Sub(r.Now())
}

func (r *IPPoolReconciler) wrote(pool string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.written == nil {
		r.written = map[string]time.Time{}
	}
	r.written[pool] = r.Now()
}

// Pools: read for the cache, the resolver and the carve; patched for the
// drain finalizer.
// +kubebuilder:rbac:groups=ipam.kipam.dev,resources=ippools,verbs=get;list;watch;patch
// The pool's status (usage, conditions) is kipam's to write.
// +kubebuilder:rbac:groups=ipam.kipam.dev,resources=ippools/status,verbs=patch

// Reconcile refreshes one pool's status.
func (r *IPPoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var pool ipamv1alpha1.IPPool
	if err := r.Get(ctx, req.NamespacedName, &pool); err != nil {
		if apierrors.IsNotFound(err) {
			r.mu.Lock()
			delete(r.written, req.Name)
			r.mu.Unlock()
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if pool.DeletionTimestamp != nil {
		return ctrl.Result{}, r.drain(ctx, &pool)
	}
	if !controllerutil.ContainsFinalizer(&pool, ipamv1alpha1.PoolFinalizer) {
		before := pool.DeepCopy()
		controllerutil.AddFinalizer(&pool, ipamv1alpha1.PoolFinalizer)
		return ctrl.Result{}, client.IgnoreNotFound(r.Patch(ctx, &pool, client.MergeFrom(before)))
	}
	if pool.Spec.CIDR == "" {
		// Created before kipam carved pools at admission: it never will be.
		return ctrl.Result{}, r.notServed(ctx, &pool, ipamv1alpha1.ReasonInvalid,
			"the pool has no cidr: it was created before kipam carved child pools at creation; delete it and create it again")
	}
	if wait := r.wait(pool.Name); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	before := pool.DeepCopy()
	overlapping, err := r.place(ctx, &pool)
	if err != nil {
		return ctrl.Result{}, err
	}
	meta.SetStatusCondition(&pool.Status.Conditions, overlapping)
	snap, err := r.usage(ctx, &pool)
	var invalid *invalidPool
	if err != nil && !errors.As(err, &invalid) {
		return ctrl.Result{}, err
	}
	ready := metav1.Condition{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonPoolReady,
		Message: "serving claims", ObservedGeneration: pool.Generation}
	if overlapping.Reason == ipamv1alpha1.ReasonOverlap {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ipamv1alpha1.ReasonOverlap,
			"takes no new claims: "+overlapping.Message
	}
	if invalid != nil {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, invalid.reason, invalid.Error()
	} else {
		snap.SetStatus(&pool)
		r.Unconfirmed.status(&pool, func(ledger string) bool {
			return !apierrors.IsNotFound(r.Get(ctx, client.ObjectKey{Name: ledger}, &ipamv1alpha1.IPLedger{}))
		})
	}
	meta.SetStatusCondition(&pool.Status.Conditions, ready)
	// Every ledger change wakes this; a hold that ends, or a retained
	// prefix that leaves its window, changes the usage without one.
	var res ctrl.Result
	if snap != nil && !snap.Until.IsZero() {
		res.RequeueAfter = max(snap.Until.Sub(r.Now()), 0) + 100*time.Millisecond
	}
	if equality.Semantic.DeepEqual(before.Status, pool.Status) {
		return res, nil
	}
	r.wrote(pool.Name)
	return res, client.IgnoreNotFound(r.Status().Patch(ctx, &pool, client.MergeFrom(before)))
}

// drain keeps a deleted pool until nothing is allocated from it: its
// ledgers, which it owns, would otherwise be garbage-collected under live
// claims, and a pool created again over the same range could hand their
// prefixes out twice. Claims for a pool being deleted are denied; the one
// still in flight when the pool empties is fenced by Manager.Drain, which
// seals the pool's ledgers, through the same compare-and-swap as every
// commit, before the pool may go.
func (r *IPPoolReconciler) drain(ctx context.Context, pool *ipamv1alpha1.IPPool) error {
	if !controllerutil.ContainsFinalizer(pool, ipamv1alpha1.PoolFinalizer) {
		return nil
	}
	var left *ipam.NotEmptyError
	// The cache says when there is surely something left, without a
	// rebuild of the pool from its stored ledgers on every release.
	ledger, err := ipam.ReadLedger(ctx, r.Client, pool.Name)
	if err != nil {
		return err
	}
	if left = ledger.NotEmpty(); left == nil {
		if err := r.Manager.Drain(ctx, pool); err != nil && !errors.As(err, &left) {
			return err
		}
	}
	if left != nil {
		return r.notServed(ctx, pool, ipamv1alpha1.ReasonDraining, fmt.Sprintf(
			"being deleted: %d prefixes are still allocated from it, %d to claims and %d to child pools; it goes when they are deleted",
			left.Allocations, left.Claims, left.Pools))
	}
	r.Manager.Forget(pool.Name)
	// Sealed: nothing can be allocated from the pool again, so its own
	// prefix goes back to its parent, after the parent's reuse grace.
	if err := r.unplace(ctx, pool); err != nil {
		return err
	}
	// Its Lease would otherwise outlive it, renewed by its owner for as
	// long as that runs. Its owner finds it gone at its next renewal and
	// gives the pool up; a pool created again under the name is taken anew.
	if r.LeaseNamespace != "" {
		if err := ipam.DeleteLease(ctx, r.APIReader, r.Client, r.LeaseNamespace, pool.Name); err != nil {
			return fmt.Errorf("deleting the Lease of pool %s: %w", pool.Name, err)
		}
	}
	before := pool.DeepCopy()
	controllerutil.RemoveFinalizer(pool, ipamv1alpha1.PoolFinalizer)
	// Fenced on the version read, so that another controller's finalizer
	// added meanwhile is not dropped with it.
	return client.IgnoreNotFound(r.Patch(ctx, pool, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})))
}

// notServed sets a pool's Ready condition False for reason.
func (r *IPPoolReconciler) notServed(ctx context.Context, pool *ipamv1alpha1.IPPool, reason, message string) error {
	before := pool.DeepCopy()
	meta.SetStatusCondition(&pool.Status.Conditions, metav1.Condition{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: reason, ObservedGeneration: pool.Generation, Message: message})
	if equality.Semantic.DeepEqual(before.Status, pool.Status) {
		return nil // the ledgers' changes wake this
	}
	return client.IgnoreNotFound(r.Status().Patch(ctx, pool, client.MergeFrom(before)))
}

// place makes sure the pool's prefix is recorded in its parent's ledger,
// adopting a pool created before kipam recorded every pool there (with its
// uid as the entry ID), and that the record has its IPAllocation. It
// returns the pool's Overlapping condition: True when the pool's prefix
// cannot be recorded because another pool's overlaps it, or when this
// pool's prefix is recorded and a pool that could not be overlaps it.
func (r *IPPoolReconciler) place(ctx context.Context, pool *ipamv1alpha1.IPPool) (metav1.Condition, error) {
	cond := metav1.Condition{Type: ipamv1alpha1.ConditionOverlapping, Status: metav1.ConditionFalse, Reason: ipamv1alpha1.ReasonNoOverlap,
		ObservedGeneration: pool.Generation, Message: "recorded in " + describeParent(pool)}
	cidr, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return cond, nil // usage reports it
	}
	parentName := ipam.ParentOf(pool)
	holder, id := ipam.PoolHolder(pool.Name), ipam.PoolEntryID(pool)
	// Once recorded, a pool's entry stays until the pool is deleted: a
	// pool whose status says so is not looked up again (its parent's root
	// ledger may be large, and this runs on every change of the pool's own)
	// while the records show its IPAllocation.
	c := meta.FindStatusCondition(pool.Status.Conditions, ipamv1alpha1.ConditionOverlapping)
	recorded := c != nil && c.Reason == ipamv1alpha1.ReasonNoOverlap
	if recorded {
		if _, ok := records(r.Allocations, r.Client).get(ipam.AllocationName(parentName, cidr)); ok {
			return r.overlaps(ctx, pool, cidr, cond), nil
		}
	}
	e, ok, err := ipam.LookupEntry(ctx, r.Client, parentName, cidr)
	if err != nil {
		return cond, err
	}
	if !ok || !e.Is(holder, id) {
		if recorded {
			// A recorded pool whose entry its parent's ledger no longer
			// records: the entry is the fence, and an entry lost is not
			// this path's to commit again. One whose IPAllocation alone
			// went from under it (the delete webhook bypassed, the
			// finalizer removed by hand) has it created again below, as
			// at placement.
			return r.overlaps(ctx, pool, cidr, cond), nil
		}
		parent, err := ipam.GetPool(ctx, r.Client, parentName)
		if apierrors.IsNotFound(err) {
			cond.Status, cond.Reason, cond.Message = metav1.ConditionUnknown, ipamv1alpha1.ReasonParentMissing,
				fmt.Sprintf("its parent pool %s does not exist, so nothing keeps its prefix from being handed out again", parentName)
			return cond, nil
		}
		if err != nil {
			return cond, err
		}
		_, err = r.Manager.Allocate(ctx, ipam.Request{Pool: parent, CIDR: cidr, Bits: cidr.Bits(), Holder: holder, ID: id, Adopt: true})
		switch {
		case errors.Is(err, ipam.ErrBusy):
			return cond, err
		case err != nil:
			what, rerr := ipam.InTheWay(ctx, r.APIReader, parentName, cidr)
			if rerr != nil || what == "" {
				what = err.Error()
			}
			cond.Status, cond.Reason = metav1.ConditionTrue, ipamv1alpha1.ReasonOverlap
			cond.Message = fmt.Sprintf("%s overlaps %s in %s: both may hand out the same addresses; delete one of them", cidr, what, describeParent(pool))
			if !meta.IsStatusConditionTrue(pool.Status.Conditions, ipamv1alpha1.ConditionOverlapping) {
				r.Recorder.Eventf(pool, nil, corev1.EventTypeWarning, ipamv1alpha1.ReasonOverlap, "Adopt", "%s", cond.Message)
			}
			return cond, nil
		default:
			logf.FromContext(ctx).Info("recorded a pool's prefix in its parent", "pool", pool.Name, "parent", parentName, "cidr", cidr)
		}
	}
	if err := r.ensureAllocation(ctx, pool, parentName, cidr, id); err != nil {
		return cond, err
	}
	return r.overlaps(ctx, pool, cidr, cond), nil
}

// overlaps returns cond, True if pools that could not be recorded overlap
// the recorded pool.
func (r *IPPoolReconciler) overlaps(ctx context.Context, pool *ipamv1alpha1.IPPool, cidr netip.Prefix, cond metav1.Condition) metav1.Condition {
	if others := r.overlappedBy(ctx, pool, cidr); len(others) > 0 {
		cond.Status, cond.Reason = metav1.ConditionTrue, ipamv1alpha1.ReasonOverlapped
		cond.Message = fmt.Sprintf("pools created before kipam recorded every pool overlap it and could not be recorded: %s; delete them",
			strings.Join(others, ", "))
	}
	return cond
}

// describeParent names where pool's prefix is recorded.
func describeParent(pool *ipamv1alpha1.IPPool) string {
	if pool.Spec.ParentPool != "" {
		return "its parent pool " + pool.Spec.ParentPool
	}
	return "the cluster's address space (" + ipam.ParentOf(pool) + ")"
}

// overlappedBy names the pools, as the cache holds them, that could not be
// recorded for an overlap and whose cidr overlaps cidr, other than pool's ancestors and
// descendants.
func (r *IPPoolReconciler) overlappedBy(ctx context.Context, pool *ipamv1alpha1.IPPool, cidr netip.Prefix) []string {
	var pools ipamv1alpha1.IPPoolList
	if err := r.List(ctx, &pools, client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	byName := make(map[string]*ipamv1alpha1.IPPool, len(pools.Items))
	for i := range pools.Items {
		byName[pools.Items[i].Name] = &pools.Items[i]
	}
	related := func(a, b string) bool { return ipam.Ancestors(byName, b)[a] } // a is b or one of its ancestors
	var out []string
	for i := range pools.Items {
		o := &pools.Items[i]
		c := meta.FindStatusCondition(o.Status.Conditions, ipamv1alpha1.ConditionOverlapping)
		if o.Name == pool.Name || c == nil || c.Reason != ipamv1alpha1.ReasonOverlap {
			continue
		}
		oc, err := netutil.ParsePrefix(o.Spec.CIDR)
		if err != nil || !oc.Overlaps(cidr) || related(o.Name, pool.Name) || related(pool.Name, o.Name) {
			continue
		}
		out = append(out, fmt.Sprintf("%s (%s)", o.Name, oc))
	}
	return out
}

// ensureAllocation makes sure the pool's recorded prefix has its
// IPAllocation in the parent, bound to the pool: kubectl get ipa shows who
// holds what, pools as well as claims, and deleting it is denied while the
// pool lives.
func (r *IPPoolReconciler) ensureAllocation(ctx context.Context, pool *ipamv1alpha1.IPPool, parent string, cidr netip.Prefix, id string) error {
	name := ipam.AllocationName(parent, cidr)
	if _, ok := records(r.Allocations, r.Client).get(name); ok {
		return nil
	}
	a := ipamv1alpha1.IPAllocation{
		ObjectMeta: metav1.ObjectMeta{
			Name:       name,
			Labels:     map[string]string{ipamv1alpha1.LabelPool: parent},
			Finalizers: []string{ipamv1alpha1.AllocationFinalizer},
		},
		Spec: ipamv1alpha1.IPAllocationSpec{Pool: parent, CIDR: cidr.String(), Entry: id,
			ClaimRef: ipamv1alpha1.ClaimRef{Kind: "IPPool", Name: pool.Name, UID: pool.UID}},
	}
	return client.IgnoreAlreadyExists(r.Create(ctx, &a))
}

// unplace releases a drained pool's prefix in its parent, as the entry it
// was recorded as, after the parent's reuse grace, and deletes its
// IPAllocation. Run again, it changes nothing: the release names the entry.
func (r *IPPoolReconciler) unplace(ctx context.Context, pool *ipamv1alpha1.IPPool) error {
	cidr, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return nil // never placed
	}
	parentName := ipam.ParentOf(pool)
	parent, err := ipam.GetPool(ctx, r.APIReader, parentName)
	if err != nil {
		return client.IgnoreNotFound(err) // its ledger goes with it
	}
	// Held for the parent's grace, and no shorter than the addresses the
	// pool itself released last are held for.
	grace := ipam.Grace(parent)
	var root ipamv1alpha1.IPLedger
	switch err := r.APIReader.Get(ctx, client.ObjectKey{Name: pool.Name}, &root); {
	case err == nil && ipam.PoolUID(&root) == pool.UID:
		grace = max(grace, ipam.HeldUntil(&root).Sub(r.Now()))
	case err != nil && !apierrors.IsNotFound(err):
		return err
	}
	freed, err := r.Manager.Release(ctx, parent, cidr, ipam.PoolHolder(pool.Name), ipam.PoolEntryID(pool), grace, nil)
	if err != nil {
		return err
	}
	if freed {
		metrics.Released.WithLabelValues(parentName, "PoolDeleted").Inc()
	}
	return deleteEntryAllocation(ctx, r.Client, parentName, cidr, ipam.PoolEntryID(pool))
}

// deleteEntryAllocation deletes the IPAllocation of cidr in pool if it
// records entry id: a pool's record, once its entry was released.
func deleteEntryAllocation(ctx context.Context, c client.Client, pool string, cidr netip.Prefix, id string) error {
	return deleteAllocation(ctx, c, ipam.AllocationName(pool, cidr), func(a *ipamv1alpha1.IPAllocation) bool { return a.Spec.Entry == id })
}

// invalidPool is a pool that cannot be served: as specified (reason
// Invalid), or from what its ledgers hold (BadLedger).
type invalidPool struct {
	reason string
	err    error
}

func (e *invalidPool) Error() string { return e.err.Error() }

// usage is the pool's usage: the Manager's snapshot when it reflects the
// cached ledgers exactly, else rebuilt from them.
func (r *IPPoolReconciler) usage(ctx context.Context, pool *ipamv1alpha1.IPPool) (*ipam.Snapshot, error) {
	var ledgers ipamv1alpha1.IPLedgerList
	if err := ipam.ListLedgers(ctx, r, &ledgers, pool.Name); err != nil {
		return nil, err
	}
	if r.Manager != nil {
		// The snapshot, unless another writer moved the ledgers since
		// (Ahead): a cache that lags this replica's own writes is older.
		if s, ok := r.Manager.Snapshot(pool.Name); ok && s.UID == string(pool.UID) && s.Generation == pool.Generation && !s.Ahead(ledgers.Items) &&
			!s.Stale(r.Now()) {
			return s, nil
		}
	}
	var root *ipamv1alpha1.IPLedger
	for i := range ledgers.Items {
		if ipam.Belongs(&ledgers.Items[i], pool) {
			root = &ledgers.Items[i]
		}
	}
	ledger, err := ipam.Assemble(root, ledgers.Items)
	if bad := (*ipam.BadLineError)(nil); errors.As(err, &bad) {
		return nil, &invalidPool{ipamv1alpha1.ReasonBadLedger, fmt.Errorf("serves nothing until the line is repaired: %w", err)}
	}
	if err != nil {
		return nil, err
	}
	s, err := ipam.SnapshotOf(pool, ledger, r.Now)
	if err != nil {
		return nil, &invalidPool{ipamv1alpha1.ReasonInvalid, err}
	}
	return s, nil
}

// overlapped maps a pool that reports an overlap to the pools its cidr
// overlaps.
func (r *IPPoolReconciler) overlapped(ctx context.Context, o client.Object) []reconcile.Request {
	pool := o.(*ipamv1alpha1.IPPool)
	cidr, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil || !meta.IsStatusConditionTrue(pool.Status.Conditions, ipamv1alpha1.ConditionOverlapping) {
		return nil
	}
	var pools ipamv1alpha1.IPPoolList
	if err := r.List(ctx, &pools, client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range pools.Items {
		if p, err := netutil.ParsePrefix(pools.Items[i].Spec.CIDR); err == nil && p.Overlaps(cidr) && pools.Items[i].Name != pool.Name {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: pools.Items[i].Name}})
		}
	}
	return out
}

// SetupWithManager registers the reconciler; the pool's ledgers wake it.
func (r *IPPoolReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		For(&ipamv1alpha1.IPPool{})
	if r.Unconfirmed != nil {
		b = b.WatchesRawSource(source.Channel(r.Unconfirmed.changed, &handler.EnqueueRequestForObject{}))
	}
	return b.
		// A pool that reports an overlap wakes the pools it overlaps, so
		// that they report it too.
		Watches(&ipamv1alpha1.IPPool{}, handler.EnqueueRequestsFromMapFunc(r.overlapped)).
		Watches(&ipamv1alpha1.IPLedger{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.(*ipamv1alpha1.IPLedger).Spec.Pool}}}
		})).
		// A pool's IPAllocation gone wakes the pool its claimRef names,
		// which creates it again while it lives and its parent's ledger
		// records its entry (place); and pools are reconciled only once
		// the allocations' records are listed (place reads them).
		WatchesRawSource(records(r.Allocations, r.Client).source(func(_ context.Context, e allocEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.new == nil && e.old.spec().ClaimRef.Kind == "IPPool" {
				q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: e.old.spec().ClaimRef.Name}})
			}
		})).
		Named("ippool").
		WithOptions(controller.Options{RateLimiter: retryLimiter(r.RetryMaxDelay)}).
		Complete(r)
}
