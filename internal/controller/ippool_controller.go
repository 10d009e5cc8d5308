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
	"math/big"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
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
	Now       func() time.Time
	// Unconfirmed is the ledger sweep's count of each pool's entries no
	// stored claim carries yet.
	Unconfirmed *unconfirmed

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
	return time.Until(r.written[pool].Add(statusInterval))
}

func (r *IPPoolReconciler) wrote(pool string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.written == nil {
		r.written = map[string]time.Time{}
	}
	r.written[pool] = time.Now()
}

// +kubebuilder:rbac:groups=ipam.kipam.dev,resources=ippools,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=ipam.kipam.dev,resources=ippools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ipam.kipam.dev,resources=ippools/finalizers,verbs=update

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
		return ctrl.Result{}, nil // waits to be carved from its parent
	}
	if wait := r.wait(pool.Name); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	before := pool.DeepCopy()
	snap, err := r.usage(ctx, &pool)
	var invalid *invalidPool
	if err != nil && !errors.As(err, &invalid) {
		return ctrl.Result{}, err
	}
	ready := metav1.Condition{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonPoolReady,
		Message: "serving claims", ObservedGeneration: pool.Generation}
	if invalid != nil {
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ipamv1alpha1.ReasonInvalid, invalid.Error()
	} else {
		u := snap.Usage
		s := &pool.Status
		s.Capacity, s.Allocated, s.Available = u.Capacity.String(), u.Allocated.String(), u.Available.String()
		s.Utilization = utilization(u.Allocated, new(big.Int).Sub(u.Capacity, u.Reserved))
		s.LargestFreePrefix = nil
		if u.LargestFree >= 0 {
			lf := int32(u.LargestFree)
			s.LargestFreePrefix = &lf
		}
		s.Claims, s.ChildPools, s.Pending = snap.Claims, snap.ChildPools, r.Unconfirmed.of(pool.Name)
		bits := ipam.DefaultBits(&pool)
		exhausted := metav1.Condition{Type: ipamv1alpha1.ConditionExhausted, Status: metav1.ConditionFalse, Reason: ipamv1alpha1.ReasonPoolReady,
			Message: fmt.Sprintf("a /%d is still free", bits), ObservedGeneration: pool.Generation}
		if u.LargestFree < 0 || u.LargestFree > bits {
			exhausted.Status, exhausted.Reason, exhausted.Message = metav1.ConditionTrue, ipamv1alpha1.ReasonPoolExhausted,
				fmt.Sprintf("no /%d left for claims of the default size", bits)
		}
		meta.SetStatusCondition(&pool.Status.Conditions, exhausted)
	}
	meta.SetStatusCondition(&pool.Status.Conditions, ready)
	if equality.Semantic.DeepEqual(before.Status, pool.Status) {
		return ctrl.Result{}, nil // every ledger change wakes this; most change nothing here
	}
	r.wrote(pool.Name)
	return ctrl.Result{}, client.IgnoreNotFound(r.Status().Patch(ctx, &pool, client.MergeFrom(before)))
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
	if n := len(ledger.Allocations); n > 0 {
		left = &ipam.NotEmptyError{Allocations: n}
	} else if err := r.Manager.Drain(ctx, pool); err != nil && !errors.As(err, &left) {
		return err
	}
	if left != nil {
		n := left.Allocations
		before := pool.DeepCopy()
		meta.SetStatusCondition(&pool.Status.Conditions, metav1.Condition{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionFalse,
			Reason: ipamv1alpha1.ReasonDraining, ObservedGeneration: pool.Generation,
			Message: fmt.Sprintf("being deleted: %d prefixes are still allocated from it; it goes when their claims (and child pools) are deleted", n)})
		if equality.Semantic.DeepEqual(before.Status, pool.Status) {
			return nil // the ledgers' changes wake this
		}
		return client.IgnoreNotFound(r.Status().Patch(ctx, pool, client.MergeFrom(before)))
	}
	r.Manager.Forget(pool.Name)
	before := pool.DeepCopy()
	controllerutil.RemoveFinalizer(pool, ipamv1alpha1.PoolFinalizer)
	return client.IgnoreNotFound(r.Patch(ctx, pool, client.MergeFrom(before)))
}

// invalidPool is a pool that cannot be served as specified.
type invalidPool struct{ err error }

func (e *invalidPool) Error() string { return e.err.Error() }

// usage is the pool's usage: the Manager's snapshot when it reflects the
// cached ledgers exactly, else rebuilt from them.
func (r *IPPoolReconciler) usage(ctx context.Context, pool *ipamv1alpha1.IPPool) (*ipam.Snapshot, error) {
	var ledgers ipamv1alpha1.IPLedgerList
	if err := r.List(ctx, &ledgers, client.MatchingLabels{ipamv1alpha1.LabelPool: pool.Name}); err != nil {
		return nil, err
	}
	if r.Manager != nil {
		if s, ok := r.Manager.Snapshot(pool.Name); ok && s.UID == string(pool.UID) && s.Generation == pool.Generation && s.Current(ledgers.Items) {
			return s, nil
		}
	}
	var root *ipamv1alpha1.IPLedger
	for i := range ledgers.Items {
		if ledgers.Items[i].Name == pool.Name {
			root = &ledgers.Items[i]
		}
	}
	ledger, err := ipam.Assemble(root, ledgers.Items)
	if err != nil {
		return nil, err
	}
	s, err := ipam.SnapshotOf(pool, ledger, r.Now)
	if err != nil {
		return nil, &invalidPool{err}
	}
	return s, nil
}

// utilization formats allocated/usable as a percentage with up to two decimals.
func utilization(allocated, usable *big.Int) string {
	if usable.Sign() <= 0 {
		return "0%" // everything reserved or excluded: nothing can be, or is, allocated
	}
	pct := new(big.Rat).SetFrac(new(big.Int).Mul(allocated, big.NewInt(100)), usable)
	s := pct.FloatString(2)
	if s == "0.00" && allocated.Sign() > 0 {
		return "<0.01%" // an IPv6 pool with something in it is not empty
	}
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s + "%"
}

// SetupWithManager registers the reconciler; the pool's ledgers wake it.
func (r *IPPoolReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		For(&ipamv1alpha1.IPPool{})
	if r.Unconfirmed != nil {
		b = b.WatchesRawSource(source.Channel(r.Unconfirmed.changed, &handler.EnqueueRequestForObject{}))
	}
	return b.
		Watches(&ipamv1alpha1.IPLedger{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.(*ipamv1alpha1.IPLedger).Spec.Pool}}}
		})).
		Named("ippool").
		Complete(r)
}
