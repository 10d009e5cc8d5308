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
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/metrics"
)

// IPLedgerReconciler releases prefixes that were committed for a claim the
// API server then never stored (a later webhook or rule rejected it, a
// timeout, AlreadyExists): entries older than OrphanGrace that no claim and
// no IPAllocation carries.
type IPLedgerReconciler struct {
	client.Client
	// APIReader confirms, against the API server, that no claim holds an
	// entry before it is released.
	APIReader   client.Reader
	Manager     *ipam.Manager
	Recorder    EventRecorder
	OrphanGrace time.Duration
	Now         func() time.Time
}

// +kubebuilder:rbac:groups=ipam.kipam.dev,resources=ipledgers,verbs=get;list;watch;create;update;patch;delete

// Reconcile sweeps one ledger.
func (r *IPLedgerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ledger ipamv1alpha1.IPLedger
	if err := r.Get(ctx, req.NamespacedName, &ledger); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	entries, err := ipam.Entries(&ledger)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := r.Now()
	var next time.Duration
	live := map[string][]ipamv1alpha1.IPClaim{} // per namespace, read once per sweep
	for p, e := range entries {
		ns, ok := strings.CutPrefix(e.Holder, ipam.ClaimHolderPrefix)
		if !ok {
			continue
		}
		cidr := p.String()
		if wait := e.At.Add(r.OrphanGrace).Sub(now); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		held, err := r.held(ctx, ledger.Spec.Pool, ns, cidr, live)
		if err != nil {
			return ctrl.Result{}, err
		}
		if held {
			continue
		}
		if err := r.release(ctx, ledger.Spec.Pool, p, e); err != nil {
			return ctrl.Result{}, err
		}
		logf.FromContext(ctx).Info("released a prefix no claim took", "pool", ledger.Spec.Pool, "cidr", cidr, "namespace", ns)
		var pool ipamv1alpha1.IPPool
		if err := r.Get(ctx, client.ObjectKey{Name: ledger.Spec.Pool}, &pool); err == nil {
			r.Recorder.Eventf(&pool, nil, corev1.EventTypeWarning, ipamv1alpha1.ReasonHolderMissing, "Release",
				"released %s: allocated for a claim in namespace %s that was never stored", cidr, ns)
		}
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// release frees entry e of pool, unless the ledger records p again since.
func (r *IPLedgerReconciler) release(ctx context.Context, poolName string, p netip.Prefix, e ipam.Entry) error {
	var pool ipamv1alpha1.IPPool
	if err := r.Get(ctx, client.ObjectKey{Name: poolName}, &pool); err != nil {
		return client.IgnoreNotFound(err)
	}
	if err := r.Manager.ReleaseEntry(ctx, &pool, p, e); err != nil {
		return err
	}
	metrics.Released.WithLabelValues(poolName, "Orphaned").Inc()
	return nil
}

// held reports whether a claim or an IPAllocation carries cidr of pool.
// live holds the namespaces' claims as read from the API server in this
// sweep: an entry it finds no claim for was committed before the read (it
// is older than the orphan grace), and ReleaseEntry frees only that entry.
func (r *IPLedgerReconciler) held(ctx context.Context, pool, namespace, cidr string, live map[string][]ipamv1alpha1.IPClaim) (bool, error) {
	var claims ipamv1alpha1.IPClaimList
	if err := r.List(ctx, &claims, client.MatchingFields{indexPoolCIDR: pool + "/" + cidr}); err != nil {
		return false, err
	}
	if len(claims.Items) > 0 {
		return true, nil
	}
	if p, err := netip.ParsePrefix(cidr); err == nil {
		var a ipamv1alpha1.IPAllocation
		err := r.APIReader.Get(ctx, client.ObjectKey{Name: ipam.AllocationName(pool, p)}, &a)
		if err == nil {
			return true, nil // its own reconciler watches over it
		}
		if !apierrors.IsNotFound(err) {
			return false, err
		}
	}
	// The cache may lag: confirm against the API server before releasing.
	inNamespace, ok := live[namespace]
	if !ok {
		if err := r.APIReader.List(ctx, &claims, client.InNamespace(namespace)); err != nil {
			return false, err
		}
		inNamespace = claims.Items
		live[namespace] = inNamespace
	}
	for i := range inNamespace {
		if c := &inNamespace[i]; c.Spec.CIDR == cidr && poolOf(c) == pool {
			return true, nil
		}
	}
	return false, nil
}

// SetupWithManager registers the reconciler.
func (r *IPLedgerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&ipamv1alpha1.IPLedger{}).
		Named("ipledger").
		// Shards sweep independently: one pool's backlog must not delay another's.
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}
