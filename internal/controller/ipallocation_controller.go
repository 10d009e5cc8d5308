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
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/metrics"
)

// IPAllocationReconciler marks an IPAllocation Bound while its claim
// carries its prefix, and releases it once no claim has carried it for
// OrphanGrace.
type IPAllocationReconciler struct {
	client.Client
	// APIReader confirms a missing holder against the API server before
	// anything is released: a stale cache must never free a live prefix.
	APIReader   client.Reader
	Manager     *ipam.Manager
	Recorder    EventRecorder
	OrphanGrace time.Duration
	Now         func() time.Time
	// RetryMaxDelay caps the wait before retrying a failed reconcile
	// (DefaultRetryMaxDelay when 0).
	RetryMaxDelay time.Duration
	// Workers is how many allocations are reconciled at once.
	Workers int
	// AddressClaims is set when Cluster API's IPAddressClaim is served:
	// allocations may name one as their holder.
	AddressClaims bool
	// Allocations keeps what kipam reads of each allocation, and tells of
	// their changes; Reconcile reads the allocation through Client, from
	// the API server (ClientOptions). When nil, each is read through Client
	// and no change is told.
	Allocations *allocations
}

// Allocations: read for the cache and the sweep; created for each claim
// and pool; patched to complete their claimRef and drop their finalizer;
// deleted on release.
// +kubebuilder:rbac:groups=ipam.kipam.dev,resources=ipallocations,verbs=get;list;watch;create;patch;delete
// The allocation's status (Bound, Orphaned) is kipam's to write.
// +kubebuilder:rbac:groups=ipam.kipam.dev,resources=ipallocations/status,verbs=patch

// Reconcile checks one IPAllocation's holder. The allocation is read from
// the API server (ClientOptions): only those whose record or holder's
// change asks for it are reconciled (settled).
func (r *IPAllocationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var a ipamv1alpha1.IPAllocation
	if err := r.Get(ctx, req.NamespacedName, &a); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if a.Spec.ClaimRef.Kind == "IPPool" {
		return ctrl.Result{}, r.poolBound(ctx, &a)
	}
	held, err := r.held(ctx, &a, r)
	if err == nil && !held {
		held, err = r.held(ctx, &a, r.APIReader)
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	before := a.DeepCopy()
	now := metav1.NewTime(r.Now())
	if held {
		return ctrl.Result{}, r.bound(ctx, before, &a, "held by "+a.Spec.ClaimRef.Kind+" "+a.Spec.ClaimRef.Namespace+"/"+a.Spec.ClaimRef.Name)
	}
	if a.DeletionTimestamp != nil {
		return ctrl.Result{}, deleteAllocation(ctx, r.Client, a.Name, sameUID(&a))
	}
	// orphanedAt is the clock of whichever replica wrote it. One set ahead
	// of this replica's is set again to now, so that the wait is never
	// longer than the grace on this replica, whatever another's clock
	// said. (Releasing sooner is safe: the claim is confirmed gone, and its
	// uid never comes back; the grace leaves time for a restore to take
	// the prefix.)
	if a.Status.OrphanedAt == nil || a.Status.OrphanedAt.After(now.Time) {
		a.Status.OrphanedAt = &now
	}
	setCond(&a, ipamv1alpha1.ConditionBound, metav1.ConditionFalse, ipamv1alpha1.ReasonHolderMissing, "no IPClaim carries this prefix")
	setCond(&a, ipamv1alpha1.ConditionOrphaned, metav1.ConditionTrue, ipamv1alpha1.ReasonHolderMissing,
		fmt.Sprintf("released %s after %s unless a claim takes it", a.Spec.CIDR, r.OrphanGrace))
	if err := r.patchStatus(ctx, before, &a); err != nil {
		return ctrl.Result{}, err
	}
	if wait := a.Status.OrphanedAt.Add(r.OrphanGrace).Sub(now.Time); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	if err := releaseOrphan(ctx, r.Client, r.Manager, &a); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(&a, nil, corev1.EventTypeWarning, ipamv1alpha1.ReasonHolderMissing, "Release",
		"released %s: no claim carried it for %s", a.Spec.CIDR, r.OrphanGrace)
	return ctrl.Result{}, deleteAllocation(ctx, r.Client, a.Name, sameUID(&a))
}

// poolBound marks a pool's allocation Bound while the pool exists as its
// claimRef names it. Nothing is released here: the pool's deletion
// releases its prefix, and the ledger sweep one that no pool carries.
func (r *IPAllocationReconciler) poolBound(ctx context.Context, a *ipamv1alpha1.IPAllocation) error {
	var pool ipamv1alpha1.IPPool
	err := r.Get(ctx, client.ObjectKey{Name: a.Spec.ClaimRef.Name}, &pool)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	before := a.DeepCopy()
	if err == nil && ipam.PoolHolds(&pool, a) {
		return r.bound(ctx, before, a, "held by IPPool "+pool.Name)
	}
	setCond(a, ipamv1alpha1.ConditionBound, metav1.ConditionFalse, ipamv1alpha1.ReasonHolderMissing, "no IPPool carries this prefix")
	return r.patchStatus(ctx, before, a)
}

// bound records that a's holder carries it. An allocation is bound from
// its creation (kipam creates it for a holder that carries its prefix,
// naming the holder's uid): its status is written only to say it recovered
// from a state its status reported (Orphaned, or Bound=False), so that a
// healthy claim costs no status write here.
func (r *IPAllocationReconciler) bound(ctx context.Context, before, a *ipamv1alpha1.IPAllocation, msg string) error {
	if a.Status.OrphanedAt == nil && len(a.Status.Conditions) == 0 {
		return nil
	}
	a.Status.OrphanedAt = nil
	setCond(a, ipamv1alpha1.ConditionBound, metav1.ConditionTrue, ipamv1alpha1.ReasonHolderFound, msg)
	setCond(a, ipamv1alpha1.ConditionOrphaned, metav1.ConditionFalse, ipamv1alpha1.ReasonHolderFound, "")
	return r.patchStatus(ctx, before, a)
}

// held reports whether the allocation's claim exists and carries its
// prefix; an IPAddressClaim's, unless the prefix is surplus (its
// IPAddress names another entry of the claim).
func (r *IPAllocationReconciler) held(ctx context.Context, a *ipamv1alpha1.IPAllocation, reader client.Reader) (bool, error) {
	ref := a.Spec.ClaimRef
	if ref.Kind == "IPAddressClaim" {
		var claim capiv1beta2.IPAddressClaim
		err := reader.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &claim)
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return false, nil // not served: no such claim can exist
		}
		if err != nil || !ipam.AddressClaimHolds(&claim, a) {
			return false, err
		}
		p, err := netip.ParsePrefix(a.Spec.CIDR)
		if err != nil {
			return true, nil // not kipam's to judge: the claim carries its entry
		}
		extra, _, err := surplus(ctx, reader, &claim, a.Spec.Pool, p)
		return !extra, err
	}
	var claim ipamv1alpha1.IPClaim
	err := reader.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &claim)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return ipam.ClaimHolds(&claim, a), nil
}

func (r *IPAllocationReconciler) patchStatus(ctx context.Context, before, a *ipamv1alpha1.IPAllocation) error {
	if before.Status.OrphanedAt.Equal(a.Status.OrphanedAt) &&
		conditionsEqual(before.Status.Conditions, a.Status.Conditions) {
		return nil
	}
	return client.IgnoreNotFound(r.Status().Patch(ctx, a, client.MergeFrom(before)))
}

func setCond(a *ipamv1alpha1.IPAllocation, t string, s metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&a.Status.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: a.Generation})
}

// releaseOrphan releases the ledger entry a's claim held, after the pool's
// reuse grace like any release. It names the entry, so running again (a
// failed delete, a stale cache) cannot free the prefix committed since
// for someone else.
func releaseOrphan(ctx context.Context, c client.Client, m *ipam.Manager, a *ipamv1alpha1.IPAllocation) error {
	p, err := netip.ParsePrefix(a.Spec.CIDR)
	if err != nil {
		return nil
	}
	holder := ipam.ClaimHolder(a.Spec.ClaimRef.Namespace)
	if a.Spec.ClaimRef.Kind == "IPAddressClaim" {
		holder = ipam.AddressClaimHolder(a.Spec.ClaimRef.Namespace)
	}
	_, err = releaseOrphaned(ctx, c, m, a.Spec.Pool, p, ipam.Entry{Holder: holder, ID: a.Spec.Entry})
	return err
}

// releaseOrphaned releases entry e of p in poolName, which no claim holds,
// after the pool's reuse grace like any release, and counts it Orphaned if
// it freed it: the ledger may record p as another entry since, or the
// entry renewed since e's time (a create that took it over; a zero time
// names the entry whenever it was renewed). A pool that is gone has
// nothing to release.
func releaseOrphaned(ctx context.Context, c client.Client, m *ipam.Manager, poolName string, p netip.Prefix, e ipam.Entry) (bool, error) {
	pool, err := ipam.GetPool(ctx, c, poolName)
	if err != nil {
		return false, client.IgnoreNotFound(err)
	}
	if !strings.HasPrefix(e.Holder, ipam.PoolHolderPrefix) {
		e.At = time.Time{} // only a pool's entry is ever renewed (ipam.Request.Reclaim)
	}
	freed, err := m.ReleaseAsOf(ctx, pool, p, e, ipam.Grace(pool))
	if freed {
		metrics.Released.WithLabelValues(poolName, "Orphaned").Inc()
	}
	return freed, err
}

// settled reports that Reconcile would find nothing to do for the
// allocation called name as rec records it, given its claim as the cache
// shows it: its status reports no holder missing (quiet), and that IPClaim
// carries it (whether or not the allocation is being deleted: a held one
// keeps its finalizer). Such an allocation is not queued, so that a
// claim's every change, and a restart's list of every allocation, costs
// no read from the API server. A pool's or an IPAddressClaim's is never
// settled: Reconcile judges its holder.
func settled(rec allocRecord, name string, claim *ipamv1alpha1.IPClaim) bool {
	ref := rec.spec().ClaimRef
	return rec.quiet && ref.Kind == "IPClaim" && claim != nil &&
		claim.Namespace == ref.Namespace && claim.Name == ref.Name && ipam.ClaimHolds(claim, rec.view(name))
}

// allocationChanged queues an allocation added or changed unless it is
// settled with its claim as the cache shows it.
func (r *IPAllocationReconciler) allocationChanged(ctx context.Context, e allocEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if e.new == nil {
		return // gone: nothing left to check
	}
	if ref := e.new.spec().ClaimRef; ref.Kind == "IPClaim" {
		var claim ipamv1alpha1.IPClaim
		if err := r.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &claim); err == nil && settled(*e.new, e.name, &claim) {
			return
		}
	}
	q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: e.name}})
}

// claimChanged queues the allocations of a claim's prefixes, before and
// after the change, that are not settled with it as it is now: all of
// them once it is gone. old and cur are the informer's objects (the
// claims' records), nil for none; the claim is rebuilt only to judge an
// allocation that exists. A prefix held before and after (every status
// write) is judged once.
func (r *IPAllocationReconciler) claimChanged(old, cur any, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	holdings := recordedHoldings(cur)
	for _, h := range recordedHoldings(old) {
		if !slices.ContainsFunc(holdings, func(n ipam.Holding) bool { return n.Pool == h.Pool && n.CIDR == h.CIDR }) {
			holdings = append(holdings, h)
		}
	}
	claim := sync.OnceValue(func() *ipamv1alpha1.IPClaim { return cachedClaim(cur) })
	allocs := records(r.Allocations, r.Client)
	for _, h := range holdings {
		p, err := netip.ParsePrefix(h.CIDR)
		if err != nil {
			continue
		}
		name := ipam.AllocationName(h.Pool, p)
		if rec, ok := allocs.get(name); ok && !settled(rec, name, claim()) {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
		}
	}
}

// claimsThenAllocations tells the reconciler of the claims' changes
// (claimChanged) and of the allocations' (allocationChanged), the claims'
// handler registered first. allocationChanged leaves an allocation out of
// the queue on the strength of its claim as the cache shows it; a later
// change of that claim (its deletion) must then reach claimChanged. So the
// handler is on the claims' informer before any allocation is judged,
// which two sources started side by side would not promise.
type claimsThenAllocations struct {
	cache  cache.Cache
	r      *IPAllocationReconciler
	claims toolscache.ResourceEventHandlerRegistration
	allocs source.TypedSyncingSource[reconcile.Request]
}

func (s *claimsThenAllocations) Start(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	inf, err := s.cache.GetInformer(ctx, &ipamv1alpha1.IPClaim{})
	if err != nil {
		return err
	}
	s.claims, err = inf.AddEventHandlerWithOptions(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.r.claimChanged(nil, o, q) },
		UpdateFunc: func(old, o any) { s.r.claimChanged(old, o, q) },
		DeleteFunc: func(o any) { s.r.claimChanged(o, nil, q) },
	}, toolscache.HandlerOptions{})
	if err != nil {
		return err
	}
	s.allocs = records(s.r.Allocations, s.r.Client).source(s.r.allocationChanged)
	return s.allocs.Start(ctx, q)
}

func (s *claimsThenAllocations) WaitForSync(ctx context.Context) error {
	if !toolscache.WaitForCacheSync(ctx.Done(), s.claims.HasSynced) {
		return fmt.Errorf("IPClaims not listed: %w", ctx.Err())
	}
	return s.allocs.WaitForSync(ctx)
}

func (s *claimsThenAllocations) String() string { return "IPClaims, then IPAllocation records" }

// SetupWithManager registers the reconciler: an allocation's change, and
// its holder's, wakes it.
func (r *IPAllocationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		Named("ipallocation").
		WatchesRawSource(&claimsThenAllocations{cache: mgr.GetCache(), r: r}).
		Watches(&ipamv1alpha1.IPPool{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			pool := o.(*ipamv1alpha1.IPPool)
			p, err := netip.ParsePrefix(pool.Spec.CIDR)
			if err != nil {
				return nil
			}
			name := ipam.AllocationName(ipam.ParentOf(pool), p)
			if _, ok := records(r.Allocations, r.Client).get(name); !ok {
				return nil // a root pool's, or not recorded yet: its creation wakes it
			}
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: name}}}
		}))
	if r.AddressClaims {
		// An IPAddressClaim's change (its deletion) wakes the allocations
		// that name it.
		b = b.Watches(&capiv1beta2.IPAddressClaim{}, handler.EnqueueRequestsFromMapFunc(r.allocationsOfAddressClaim), builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectNew.GetDeletionTimestamp() != nil
		}}))
	}
	return b.
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1), RateLimiter: retryLimiter(r.RetryMaxDelay)}).
		Complete(r)
}

// allocationsOfAddressClaim are the IPAllocations that record IPAddressClaim
// o, by their records: not the namespace's every allocation read from the
// API server for each claim's change. An allocation not recorded yet is
// reconciled on its own create.
func (r *IPAllocationReconciler) allocationsOfAddressClaim(_ context.Context, o client.Object) []reconcile.Request {
	names := records(r.Allocations, r.Client).ofAddressClaim(o.GetNamespace(), o.GetName())
	out := make([]reconcile.Request, 0, len(names))
	for _, name := range names {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
	}
	return out
}

// sameUID is true of a, and of no other object of its name.
func sameUID(a *ipamv1alpha1.IPAllocation) func(*ipamv1alpha1.IPAllocation) bool {
	return func(b *ipamv1alpha1.IPAllocation) bool { return b.UID == a.UID }
}
