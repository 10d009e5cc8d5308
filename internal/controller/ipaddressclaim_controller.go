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
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/metrics"
)

// ClusterGroupKind is Cluster API's Cluster: when it is served, a claim of
// a paused Cluster is left alone.
var ClusterGroupKind = schema.GroupKind{Group: "cluster.x-k8s.io", Kind: "Cluster"}

// Field indexes on IPAddressClaims.
const (
	// indexAddressClaimPool is the kipam pool an IPAddressClaim names,
	// for the claims that wait (waitsForPool): the only ones a change of
	// the pool wakes.
	indexAddressClaimPool = "kipam.addressClaimPool"
	// indexAddressClaimCluster is an IPAddressClaim's Cluster.
	indexAddressClaimCluster = "kipam.addressClaimCluster"
	// indexAddressClaimUID is an IPAddressClaim's uid, the ID of its
	// ledger entry: the ledger's sweep finds the claim carrying an entry
	// without listing, and copying, every claim of its namespace for each
	// entry of a ledger that changed.
	indexAddressClaimUID = "kipam.addressClaimUID"
)

// indexAddressClaims registers the field indexes of Cluster API's
// IPAddressClaims, which the IPAddressClaim and IPLedger reconcilers list
// by.
func indexAddressClaims(ctx context.Context, idx client.FieldIndexer) error {
	if err := idx.IndexField(ctx, &capiv1beta2.IPAddressClaim{}, indexAddressClaimPool, func(o client.Object) []string {
		if c := o.(*capiv1beta2.IPAddressClaim); waitsForPool(c) {
			return []string{c.Spec.PoolRef.Name}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &capiv1beta2.IPAddressClaim{}, indexAddressClaimCluster, func(o client.Object) []string {
		if name := clusterName(o.(*capiv1beta2.IPAddressClaim)); name != "" {
			return []string{name}
		}
		return nil
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &capiv1beta2.IPAddressClaim{}, indexAddressClaimUID, func(o client.Object) []string {
		if c := o.(*capiv1beta2.IPAddressClaim); ipam.ServesPoolRef(c.Spec.PoolRef) {
			return []string{string(c.UID)}
		}
		return nil
	})
}

// IPAddressClaimReconciler serves Cluster API's IPAM contract from kipam
// pools: for each IPAddressClaim whose spec.poolRef names a kipam IPPool it
// commits one address through the pool's fenced commit (ledger entry
// AddressClaimHolder(namespace) with the claim's uid as its ID), records
// it in an IPAllocation, and answers with an IPAddress named after the
// claim. Deleting the claim releases exactly that entry.
type IPAddressClaimReconciler struct {
	client.Client
	// APIReader reads a claim's Cluster, and confirms a claim before its
	// entry is trusted as the cache's.
	APIReader client.Reader
	Manager   *ipam.Manager
	Resolver  *ipam.Resolver
	Recorder  EventRecorder
	// Allocations keeps what kipam reads of each IPAllocation; when nil,
	// each is read through Client.
	Allocations *allocations
	// Now is the clock.
	Now func() time.Time
	// Workers is how many claims are reconciled at once.
	Workers int
	// RetryMaxDelay caps the wait before retrying a failed reconcile
	// (DefaultRetryMaxDelay when 0).
	RetryMaxDelay time.Duration
	// Cluster is the version of Cluster API's Cluster kind to read for
	// pauses, nil when the kind is not served: claims are then served
	// whatever their spec.clusterName.
	Cluster *schema.GroupVersionKind
}

// Cluster API's claims: read; patched for the release finalizer; their
// status (addressRef, Ready) is kipam's to write for claims of its pools.
// +kubebuilder:rbac:groups=ipam.cluster.x-k8s.io,resources=ipaddressclaims,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=ipam.cluster.x-k8s.io,resources=ipaddressclaims/status,verbs=patch
// The answers: created, patched for their finalizer, deleted on release.
// +kubebuilder:rbac:groups=ipam.cluster.x-k8s.io,resources=ipaddresses,verbs=get;list;watch;create;patch;delete
// Clusters: read for spec.paused and the paused annotation.
// +kubebuilder:rbac:groups=cluster.x-k8s.io,resources=clusters,verbs=get;list;watch

// Reconcile brings one IPAddressClaim to its answer, or releases it.
func (r *IPAddressClaimReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var claim capiv1beta2.IPAddressClaim
	if err := r.Get(ctx, req.NamespacedName, &claim); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.releaseStaleAddress(ctx, req.NamespacedName)
		}
		return ctrl.Result{}, err
	}
	if !ipam.ServesPoolRef(claim.Spec.PoolRef) {
		return ctrl.Result{}, nil // another provider's
	}
	if paused, err := r.paused(ctx, &claim); paused || err != nil {
		return ctrl.Result{}, err
	}
	if claim.DeletionTimestamp != nil {
		return ctrl.Result{}, r.finalize(ctx, &claim)
	}
	if r.answered(ctx, &claim) {
		return ctrl.Result{}, nil
	}
	if cond := r.recorded(ctx, &claim); cond != nil {
		return ctrl.Result{}, r.answerRecorded(ctx, &claim, *cond)
	}
	if !controllerutil.ContainsFinalizer(&claim, ipamv1alpha1.ClaimFinalizer) {
		// Admission adds it (IPAddressClaimFinalizer); not to a claim
		// created while kipam's webhook was down or bypassed.
		if gone, err := r.addFinalizer(ctx, &claim); gone || err != nil {
			return ctrl.Result{}, err
		}
	}
	next, cond, err := r.serve(ctx, &claim)
	if cond != nil {
		if perr := r.patchStatus(ctx, &claim, *cond); perr != nil {
			return ctrl.Result{}, errors.Join(err, perr)
		}
	}
	return ctrl.Result{RequeueAfter: next}, err
}

// addFinalizer stores the release finalizer on the claim before anything
// is committed for it. The patch names the cached claim's resourceVersion;
// when the cache is behind, the claim is read from the API server and
// patched against that once more. gone reports a claim deleted or
// replaced meanwhile: its own event brings it back.
func (r *IPAddressClaimReconciler) addFinalizer(ctx context.Context, claim *capiv1beta2.IPAddressClaim) (gone bool, err error) {
	for attempt := 0; ; attempt++ {
		patch := client.MergeFromWithOptions(claim.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(claim, ipamv1alpha1.ClaimFinalizer)
		err := r.Patch(ctx, claim, patch)
		switch {
		case err == nil:
			return false, nil
		case apierrors.IsNotFound(err):
			return true, nil
		case !apierrors.IsConflict(err) || attempt > 0:
			return false, err
		}
		var live capiv1beta2.IPAddressClaim
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(claim), &live); err != nil || live.UID != claim.UID || live.DeletionTimestamp != nil {
			return true, client.IgnoreNotFound(err)
		}
		*claim = live
		if controllerutil.ContainsFinalizer(claim, ipamv1alpha1.ClaimFinalizer) {
			return false, nil
		}
	}
}

// answered reports whether the claim is Ready and its IPAddress is there,
// controlled by it and protected: nothing to do. A claim once answered
// keeps its address whatever becomes of its pool's namespace rules.
func (r *IPAddressClaimReconciler) answered(ctx context.Context, claim *capiv1beta2.IPAddressClaim) bool {
	if claim.Status.AddressRef.Name == "" || !meta.IsStatusConditionTrue(claim.Status.Conditions, capiv1beta2.ReadyCondition) ||
		!controllerutil.ContainsFinalizer(claim, ipamv1alpha1.ClaimFinalizer) {
		return false
	}
	var addr capiv1beta2.IPAddress
	err := r.Get(ctx, client.ObjectKey{Namespace: claim.Namespace, Name: claim.Status.AddressRef.Name}, &addr)
	return err == nil && metav1.IsControlledBy(&addr, claim) && controllerutil.ContainsFinalizer(&addr, ipamv1alpha1.AddressFinalizer)
}

// recorded returns the Ready condition of a claim whose address an earlier
// pass committed and recorded, whatever its cached status says: it carries
// its finalizer, its IPAddress is its own, protected, and the IPAllocation
// of that address in its pool records the claim's entry (created only
// once the entry was committed). nil otherwise.
func (r *IPAddressClaimReconciler) recorded(ctx context.Context, claim *capiv1beta2.IPAddressClaim) *metav1.Condition {
	if !controllerutil.ContainsFinalizer(claim, ipamv1alpha1.ClaimFinalizer) {
		return nil
	}
	var addr capiv1beta2.IPAddress
	if err := r.Get(ctx, client.ObjectKeyFromObject(claim), &addr); err != nil || !metav1.IsControlledBy(&addr, claim) ||
		!controllerutil.ContainsFinalizer(&addr, ipamv1alpha1.AddressFinalizer) || addr.DeletionTimestamp != nil || addr.Spec.PoolRef != claim.Spec.PoolRef {
		return nil
	}
	a, err := netip.ParseAddr(addr.Spec.Address)
	if err != nil {
		return nil
	}
	p, pool := netip.PrefixFrom(a, a.BitLen()), claim.Spec.PoolRef.Name
	name := ipam.AllocationName(pool, p)
	if rec, ok := records(r.Allocations, r.Client).get(name); !ok || !ipam.AddressClaimHolds(claim, rec.view(name)) || rec.spec().CIDR != p.String() || rec.deleting {
		return nil
	}
	return &metav1.Condition{Type: capiv1beta2.ReadyCondition, Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonAllocated,
		Message: ipam.AllocatedMessage(a.String(), pool)}
}

// answerRecorded writes the Ready status of a recorded claim (recorded),
// unless the API server shows it written already. A claim is queued again
// by each write of its first pass (its finalizer, its IPAddress, its
// status): the pass after reads a cache that may not show the status
// yet, and would otherwise go through serve again, whose Adopt reads the
// pool's ledgers, in the pool's commit queue, for an answer it has.
func (r *IPAddressClaimReconciler) answerRecorded(ctx context.Context, claim *capiv1beta2.IPAddressClaim, cond metav1.Condition) error {
	var live capiv1beta2.IPAddressClaim
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(claim), &live); err != nil {
		return client.IgnoreNotFound(err)
	}
	if live.UID != claim.UID || live.DeletionTimestamp != nil || r.answered(ctx, &live) {
		return nil // its own events bring the change here
	}
	return r.patchStatus(ctx, &live, cond)
}

// serve commits the claim's address (or finds the one committed before)
// and creates its IPAllocation and IPAddress. It returns the Ready
// condition to write, and when to look again for a claim that waits on a
// reuse grace (the one event that changes no object).
func (r *IPAddressClaimReconciler) serve(ctx context.Context, claim *capiv1beta2.IPAddressClaim) (time.Duration, *metav1.Condition, error) {
	poolName := claim.Spec.PoolRef.Name
	// The pool's namespace rules, exactly as for an IPClaim naming it.
	pools, err := r.Resolver.Candidates(ctx, &ipamv1alpha1.IPClaim{Spec: ipamv1alpha1.IPClaimSpec{Pool: poolName}}, claim.Namespace)
	var ferr *field.Error
	switch {
	case errors.As(err, &ferr) && ferr.Type == field.ErrorTypeNotFound:
		// Reported alike, as for an IPClaim, so that tenants learn nothing
		// of pools closed to them.
		return 0, addressNotReady(capiv1beta2.ReasonPoolNotReady, fmt.Sprintf("no such pool is open to namespace %s: pool %s does not exist, "+
			"or its spec.namespaceSelector does not admit the namespace; the claim is served once it does", claim.Namespace, poolName)), nil
	case errors.As(err, &ferr):
		return 0, addressNotReady(capiv1beta2.ReasonPoolNotReady, ferr.Detail), nil
	case err != nil:
		return 0, nil, err
	}
	pool := pools[0]
	req, err := ipam.RequestFor(&ipamv1alpha1.IPClaim{Spec: ipamv1alpha1.IPClaimSpec{Pool: poolName, PrefixLength: ptr.To(int32(hostBits(pool)))}},
		pool, ipam.AddressClaimHolder(claim.Namespace), false)
	if err != nil {
		return 0, addressNotReady(capiv1beta2.ReasonPoolNotReady, fmt.Sprintf("pool %s cannot serve addresses: %v", poolName, err)), nil
	}
	// The entry is the claim's by its uid, and the allocation answers
	// with the entry already recorded for it (AdoptKnown): a claim whose
	// address was committed before its IPAddress was created gets that
	// same address. Decided on the pool owner's memory when it records
	// none, which a replica that committed the entry unseen by that
	// memory can make wrong: the second entry is then surplus, and
	// released (surplus).
	req.ID, req.AdoptKnown, req.Sticky = string(claim.UID), true, nil
	p, err := r.Manager.Allocate(ctx, req)
	var ex *allocator.ExhaustedError
	_, full := ipam.Full(err)
	switch {
	case errors.As(err, &ex), full:
		// Waits: a release in the pool changes its ledger, whose watch
		// wakes this claim; a release still in its reuse grace wakes it by
		// a requeue at the grace's end.
		next, _ := (&IPClaimReconciler{Client: r.Client, Now: r.Now}).nextHoldEnd(ctx, pool)
		largest := "nothing"
		if lf := pool.Status.LargestFreePrefix; lf != nil {
			largest = fmt.Sprintf("a /%d", *lf)
		}
		msg := fmt.Sprintf("pool %s has no free address (%v; its largest free block: %s): the claim waits and is served when an address "+
			"is released, or add space to the pool", poolName, err, largest)
		return next, addressNotReady(capiv1beta2.ReasonPoolExhausted, msg), nil
	case errors.Is(err, ipam.ErrPoolDeleted):
		return 0, addressNotReady(capiv1beta2.ReasonPoolNotReady, fmt.Sprintf("pool %s is being deleted: it takes no new claims; name another pool", poolName)), nil
	case err != nil:
		return 0, addressNotReady(capiv1beta2.ReasonAllocationFailed, fmt.Sprintf("allocating from pool %s: %v (retrying)", poolName, err)), err
	}
	// The two records are created at once: neither waits for the other,
	// and the claim is answered (below) only once both are there. Each
	// write in turn is one more round trip before the claim is Ready.
	var acond *metav1.Condition
	var aerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		acond, aerr = r.ensureAllocation(ctx, claim, pool, p)
	}()
	cond, other, err := r.ensureAddress(ctx, claim, pool, p)
	<-done
	if other {
		// The claim is answered with another address (surplus): p, just
		// committed or adopted, is released once that is confirmed, after
		// this pass's own records, so none of them outlives the entry.
		// The claim is then Ready with its answer, which its IPAddress
		// names and the pool records for it, once the answer's
		// IPAllocation is there (the pass that made the IPAddress may
		// have stopped before it): not failed, which another pass may have
		// written over its Ready.
		extra, answer, serr := surplus(ctx, r.APIReader, claim, pool.Name, p)
		if extra {
			if serr = r.releaseAddress(ctx, claim, pool, p, "Orphaned"); serr == nil {
				if acond, aerr := r.ensureAllocation(ctx, claim, pool, netip.PrefixFrom(answer, p.Bits())); acond != nil || aerr != nil {
					return 0, acond, aerr
				}
				return 0, &metav1.Condition{Type: capiv1beta2.ReadyCondition, Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonAllocated,
					Message: ipam.AllocatedMessage(answer.String(), poolName)}, nil
			}
		}
		err = errors.Join(err, serr)
	}
	if cond, err := cmp.Or(acond, cond), errors.Join(aerr, err); cond != nil || err != nil {
		return 0, cond, err
	}
	return 0, &metav1.Condition{Type: capiv1beta2.ReadyCondition, Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonAllocated,
		Message: ipam.AllocatedMessage(p.Addr().String(), poolName)}, nil
}

// hostBits is the length of one address of pool's family.
func hostBits(pool *ipamv1alpha1.IPPool) int {
	if p, err := netip.ParsePrefix(pool.Spec.CIDR); err == nil {
		return p.Addr().BitLen()
	}
	return 32
}

// ensureAllocation creates the IPAllocation recording the claim's address,
// so that kubectl get ipa, the pool's status and kubectl kipam show it, and
// the delete webhook protects it. A previous holder's, whose release made
// room for this claim, is waited for: its finalizer deletes it.
func (r *IPAddressClaimReconciler) ensureAllocation(ctx context.Context, claim *capiv1beta2.IPAddressClaim, pool *ipamv1alpha1.IPPool, p netip.Prefix) (*metav1.Condition, error) {
	name := ipam.AllocationName(pool.Name, p)
	rec, found := records(r.Allocations, r.Client).get(name)
	if !found {
		a := ipamv1alpha1.IPAllocation{
			ObjectMeta: metav1.ObjectMeta{
				Name:       name,
				Labels:     map[string]string{ipamv1alpha1.LabelPool: pool.Name, ipamv1alpha1.LabelClaimNamespace: claim.Namespace},
				Finalizers: []string{ipamv1alpha1.AllocationFinalizer},
			},
			Spec: ipamv1alpha1.IPAllocationSpec{Pool: pool.Name, CIDR: p.String(), Entry: string(claim.UID), ClaimRef: ipamv1alpha1.ClaimRef{
				Kind: "IPAddressClaim", Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID,
			}},
		}
		if err := r.Create(ctx, &a); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
		return nil, nil // AlreadyExists: the records lag, or the next pass sees whose it is
	}
	if ipam.AddressClaimHolds(claim, rec.view(name)) {
		return nil, nil
	}
	ref := rec.spec().ClaimRef
	return addressNotReady(capiv1beta2.ReasonAllocationFailed, fmt.Sprintf("%s in pool %s is recorded for this claim; the IPAllocation %s of its previous holder %s %s/%s "+
		"is being removed", p.Addr(), pool.Name, name, ref.Kind, ref.Namespace, ref.Name)), nil
}

// ensureAddress creates the claim's IPAddress: named after the claim,
// owned by it (controller) and by the pool, protected by a finalizer while
// the claim lives. other reports an IPAddress of the claim that names
// another address than p.
func (r *IPAddressClaimReconciler) ensureAddress(ctx context.Context, claim *capiv1beta2.IPAddressClaim, pool *ipamv1alpha1.IPPool, p netip.Prefix) (cond *metav1.Condition, other bool, err error) {
	want := r.address(claim, pool, p)
	var got capiv1beta2.IPAddress
	err = r.Get(ctx, client.ObjectKeyFromObject(want), &got)
	switch {
	case apierrors.IsNotFound(err):
		// No Event says so: the claim's Ready condition does ("… allocated
		// from pool …"), and an Event is one more API write a claim, about
		// a sixth of the claim path's, for what every claim does.
		err := r.Create(ctx, want)
		if !apierrors.IsAlreadyExists(err) {
			return nil, false, err
		}
		// Created meanwhile, by another pass: which address it names
		// decides, as for one found.
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(want), &got); err != nil {
			return nil, false, err
		}
	case err != nil:
		return nil, false, err
	}
	if !metav1.IsControlledBy(&got, claim) {
		// An earlier claim's of this name, gone without kipam's finalizer,
		// goes; its deletion brings this claim back here.
		if err := r.releaseStaleAddress(ctx, client.ObjectKeyFromObject(&got)); err != nil {
			return nil, false, err
		}
		return addressNotReady(capiv1beta2.ReasonAllocationFailed, fmt.Sprintf("IPAddress %s/%s exists and is not this claim's (its controller is another object): "+
			"it is left alone; delete it, or the claim", got.Namespace, got.Name)), false, nil
	}
	if got.Spec.Address != want.Spec.Address {
		return addressNotReady(capiv1beta2.ReasonAllocationFailed, fmt.Sprintf("IPAddress %s/%s says %s, but pool %s records %s for this claim: "+
			"delete the IPAddress and kipam creates it again", got.Namespace, got.Name, got.Spec.Address, pool.Name, p.Addr())), true, nil
	}
	if !controllerutil.ContainsFinalizer(&got, ipamv1alpha1.AddressFinalizer) && got.DeletionTimestamp == nil {
		patch := client.MergeFrom(got.DeepCopy())
		controllerutil.AddFinalizer(&got, ipamv1alpha1.AddressFinalizer)
		if err := r.Patch(ctx, &got, patch); err != nil {
			return nil, false, err
		}
	}
	return nil, false, nil
}

// releaseStaleAddress lets an IPAddress kipam made go once the claim it
// answered is gone (deleted without kipam's finalizer) or is another claim
// of that name: its finalizer protects it while its claim lives, and
// nothing else would remove it. The claim's absence is confirmed against
// the API server; its address's entry is released by the orphan paths.
func (r *IPAddressClaimReconciler) releaseStaleAddress(ctx context.Context, key client.ObjectKey) error {
	var addr capiv1beta2.IPAddress
	if err := r.Get(ctx, key, &addr); err != nil {
		return client.IgnoreNotFound(err)
	}
	owner := metav1.GetControllerOf(&addr)
	if !controllerutil.ContainsFinalizer(&addr, ipamv1alpha1.AddressFinalizer) || owner == nil || owner.Kind != "IPAddressClaim" {
		return nil
	}
	var claim capiv1beta2.IPAddressClaim
	switch err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: owner.Name}, &claim); {
	case err == nil && claim.UID == owner.UID:
		return nil // its claim lives: the claim's reconcile decides
	case err != nil && !apierrors.IsNotFound(err):
		return err
	}
	logf.FromContext(ctx).Info("removing the finalizer of an IPAddress whose claim is gone", "address", addr.Spec.Address, "claimUID", owner.UID)
	patch := client.MergeFrom(addr.DeepCopy())
	controllerutil.RemoveFinalizer(&addr, ipamv1alpha1.AddressFinalizer)
	if err := r.Patch(ctx, &addr, patch); err != nil {
		return client.IgnoreNotFound(err)
	}
	return client.IgnoreNotFound(r.Delete(ctx, &addr, client.Preconditions{UID: &addr.UID}))
}

// address is the IPAddress answering claim with p from pool.
func (r *IPAddressClaimReconciler) address(claim *capiv1beta2.IPAddressClaim, pool *ipamv1alpha1.IPPool, p netip.Prefix) *capiv1beta2.IPAddress {
	a := &capiv1beta2.IPAddress{
		ObjectMeta: metav1.ObjectMeta{
			Name:       claim.Name,
			Namespace:  claim.Namespace,
			Finalizers: []string{ipamv1alpha1.AddressFinalizer},
			OwnerReferences: []metav1.OwnerReference{
				{APIVersion: capiv1beta2.GroupVersion.String(), Kind: "IPAddressClaim", Name: claim.Name, UID: claim.UID,
					Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)},
				{APIVersion: ipamv1alpha1.GroupVersion.String(), Kind: "IPPool", Name: pool.Name, UID: pool.UID},
			},
		},
		Spec: capiv1beta2.IPAddressSpec{
			ClaimRef: capiv1beta2.IPAddressClaimReference{Name: claim.Name},
			PoolRef:  claim.Spec.PoolRef,
			Address:  p.Addr().String(),
			Prefix:   ptr.To(int32(ipam.AddressPrefixLength(pool))),
			Gateway:  ipam.Gateway(pool),
		},
	}
	if name := clusterName(claim); name != "" {
		a.Labels = map[string]string{ipamv1alpha1.ClusterNameLabel: name}
	}
	return a
}

// clusterName is the Cluster a claim belongs to: spec.clusterName, else
// Cluster API's label (claims from before the field).
func clusterName(claim *capiv1beta2.IPAddressClaim) string {
	if claim.Spec.ClusterName != "" {
		return claim.Spec.ClusterName
	}
	return claim.Labels[ipamv1alpha1.ClusterNameLabel]
}

// paused reports whether the claim is not to be touched: it carries Cluster
// API's paused annotation, or its Cluster is paused (spec.paused or the
// annotation). Where the Cluster kind is not served, or the claim names
// no Cluster, or its Cluster does not exist, only the claim's annotation
// counts.
func (r *IPAddressClaimReconciler) paused(ctx context.Context, claim *capiv1beta2.IPAddressClaim) (bool, error) {
	if _, ok := claim.Annotations[ipamv1alpha1.PausedAnnotation]; ok {
		return true, nil
	}
	name := clusterName(claim)
	if r.Cluster == nil || name == "" {
		return false, nil
	}
	var cluster unstructured.Unstructured
	cluster.SetGroupVersionKind(*r.Cluster)
	switch err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: claim.Namespace, Name: name}, &cluster); {
	case apierrors.IsNotFound(err), meta.IsNoMatchError(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading Cluster %s/%s: %w", claim.Namespace, name, err)
	}
	return clusterPaused(&cluster), nil
}

// clusterPaused reports whether a Cluster is paused: spec.paused, or the
// paused annotation.
func clusterPaused(cluster *unstructured.Unstructured) bool {
	if _, ok := cluster.GetAnnotations()[ipamv1alpha1.PausedAnnotation]; ok {
		return true
	}
	paused, _, _ := unstructured.NestedBool(cluster.Object, "spec", "paused")
	return paused
}

// finalize releases the claim's entry (after the pool's reuse grace),
// deletes its IPAllocation and its IPAddress, then lets the claim go. The
// release names the entry (the claim's uid), so a retry, or a claim that
// never got an address, frees nothing that is not its own.
func (r *IPAddressClaimReconciler) finalize(ctx context.Context, claim *capiv1beta2.IPAddressClaim) error {
	if !controllerutil.ContainsFinalizer(claim, ipamv1alpha1.ClaimFinalizer) {
		return nil
	}
	poolName := claim.Spec.PoolRef.Name
	var pool ipamv1alpha1.IPPool
	switch err := r.Get(ctx, client.ObjectKey{Name: poolName}, &pool); {
	case err == nil:
		for _, p := range r.committed(ctx, claim, poolName) {
			if err := r.releaseAddress(ctx, claim, &pool, p, "Deleted"); err != nil {
				return err
			}
		}
	case !apierrors.IsNotFound(err):
		return err
	}
	var addr capiv1beta2.IPAddress
	switch err := r.Get(ctx, client.ObjectKeyFromObject(claim), &addr); {
	case err == nil && metav1.IsControlledBy(&addr, claim):
		if controllerutil.ContainsFinalizer(&addr, ipamv1alpha1.AddressFinalizer) {
			patch := client.MergeFrom(addr.DeepCopy())
			controllerutil.RemoveFinalizer(&addr, ipamv1alpha1.AddressFinalizer)
			if err := r.Patch(ctx, &addr, patch); client.IgnoreNotFound(err) != nil {
				return err
			}
		}
		if err := r.Delete(ctx, &addr, client.Preconditions{UID: &addr.UID}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
			return err
		}
	case err != nil && !apierrors.IsNotFound(err):
		return err
	}
	patch := client.MergeFrom(claim.DeepCopy())
	controllerutil.RemoveFinalizer(claim, ipamv1alpha1.ClaimFinalizer)
	return client.IgnoreNotFound(r.Patch(ctx, claim, patch))
}

// releaseAddress releases the claim's entry p in pool, after the pool's
// reuse grace, and deletes its IPAllocation. The release names the entry
// (the claim's uid), so a retry frees nothing that is not the claim's.
func (r *IPAddressClaimReconciler) releaseAddress(ctx context.Context, claim *capiv1beta2.IPAddressClaim, pool *ipamv1alpha1.IPPool, p netip.Prefix, why string) error {
	freed, err := r.Manager.Release(ctx, pool, p, ipam.AddressClaimHolder(claim.Namespace), string(claim.UID), ipam.Grace(pool), nil)
	if err != nil {
		return err
	}
	if freed {
		metrics.Released.WithLabelValues(pool.Name, why).Inc()
		logf.FromContext(ctx).V(1).Info("released", "pool", pool.Name, "address", p, "why", why)
	}
	return deleteEntryAllocation(ctx, r.Client, pool.Name, p, string(claim.UID))
}

// surplus reports whether p, an entry of the claim in pool, is not the
// claim's answer, and what the answer is: the address of its IPAddress
// (invalid when it has none yet). A claim holds one address, and its
// IPAddress, created once and named after the claim, says which. A second
// entry arises when a replica commits the claim's entry unseen by the
// pool owner's memory, which then commits another (AdoptKnown; docs/design.md,
// "A second entry, and why it does not stay"). While the pool records the
// entry the IPAddress names for the claim, the other is surplus, and is
// released by the pass that committed it, the ledger sweep or the
// IPAllocation's reconcile, whichever sees it first. An IPAddress whose
// address the pool does not record for the claim (one edited by hand)
// makes nothing surplus: the claim reports the mismatch.
func surplus(ctx context.Context, r client.Reader, claim *capiv1beta2.IPAddressClaim, pool string, p netip.Prefix) (extra bool, answer netip.Addr, err error) {
	var addr capiv1beta2.IPAddress
	if err := r.Get(ctx, client.ObjectKeyFromObject(claim), &addr); err != nil {
		return false, netip.Addr{}, client.IgnoreNotFound(err)
	}
	answer, err = netip.ParseAddr(addr.Spec.Address)
	if err != nil || !metav1.IsControlledBy(&addr, claim) || addr.Spec.PoolRef.Name != pool {
		return false, netip.Addr{}, nil
	}
	if answer == p.Addr() {
		return false, answer, nil
	}
	e, ok, err := ipam.LookupEntry(ctx, r, pool, netip.PrefixFrom(answer, p.Bits()))
	if err != nil || !ok {
		return false, answer, err
	}
	return ipam.AddressClaimCarries(pool, e, claim), answer, nil
}

// committed are the prefixes the claim may hold in pool: its IPAddress's
// address, and whatever the pool's ledgers (as cached) record as its
// entry, which covers an address committed before its IPAddress was
// created. Release frees each only if it is the claim's entry; one the
// cache has not seen yet is released by the ledger sweep, which finds no
// claim carrying it.
func (r *IPAddressClaimReconciler) committed(ctx context.Context, claim *capiv1beta2.IPAddressClaim, pool string) []netip.Prefix {
	var out []netip.Prefix
	var addr capiv1beta2.IPAddress
	if err := r.Get(ctx, client.ObjectKeyFromObject(claim), &addr); err == nil && metav1.IsControlledBy(&addr, claim) {
		if a, err := netip.ParseAddr(addr.Spec.Address); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	if ledger, err := ipam.ReadLedger(ctx, r.Client, pool); err == nil {
		for p, e := range ledger.Allocations {
			if ipam.AddressClaimCarries(pool, e, claim) && (len(out) == 0 || out[0] != p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// patchStatus writes the Ready condition and, once Ready, the addressRef,
// as a merge patch that leaves the fields kipam does not model (Cluster
// API's status.deprecated) alone.
func (r *IPAddressClaimReconciler) patchStatus(ctx context.Context, claim *capiv1beta2.IPAddressClaim, cond metav1.Condition) error {
	before := claim.DeepCopy()
	cond.ObservedGeneration = claim.Generation
	if c := meta.FindStatusCondition(claim.Status.Conditions, capiv1beta2.ReadyCondition); cond.Status == metav1.ConditionFalse && (c == nil || c.Reason != cond.Reason) {
		r.Recorder.Eventf(claim, nil, corev1.EventTypeNormal, cond.Reason, "Allocate", "%s", cond.Message)
	}
	meta.SetStatusCondition(&claim.Status.Conditions, cond)
	if cond.Status == metav1.ConditionTrue {
		claim.Status.AddressRef.Name = claim.Name
	}
	if conditionsEqual(before.Status.Conditions, claim.Status.Conditions) && before.Status.AddressRef == claim.Status.AddressRef {
		return nil
	}
	return client.IgnoreNotFound(r.Status().Patch(ctx, claim, client.MergeFrom(before)))
}

func addressNotReady(reason, msg string) *metav1.Condition {
	return &metav1.Condition{Type: capiv1beta2.ReadyCondition, Status: metav1.ConditionFalse, Reason: reason, Message: msg}
}

// SetupWithManager registers the reconciler (indexAddressClaims registers
// its indexes). What frees or adds space wakes the claims that wait for it:
// a ledger's change, a pool created or changed, a namespace's labels; a
// Cluster unpaused wakes its claims.
func (r *IPAddressClaimReconciler) SetupWithManager(mgr ctrl.Manager) error {
	kipams := predicate.NewPredicateFuncs(func(o client.Object) bool {
		c, ok := o.(*capiv1beta2.IPAddressClaim)
		return ok && ipam.ServesPoolRef(c.Spec.PoolRef)
	})
	b := ctrl.NewControllerManagedBy(mgr).
		For(&capiv1beta2.IPAddressClaim{}, builder.WithPredicates(kipams)).
		Owns(&capiv1beta2.IPAddress{}).
		Watches(&ipamv1alpha1.IPLedger{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.waiting(ctx, client.MatchingFields{indexAddressClaimPool: o.(*ipamv1alpha1.IPLedger).Spec.Pool})
		})).
		Watches(&ipamv1alpha1.IPPool{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.waiting(ctx, client.MatchingFields{indexAddressClaimPool: o.GetName()})
		}), builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return true }}))).
		// The IPAllocation of an address's previous holder gone makes room
		// for this claim's.
		WatchesRawSource(records(r.Allocations, r.Client).source(func(ctx context.Context, e allocEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.new != nil {
				return
			}
			for _, req := range r.waiting(ctx, client.MatchingFields{indexAddressClaimPool: e.old.spec().Pool}) {
				q.Add(req)
			}
		})).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.waiting(ctx, client.InNamespace(o.GetName()))
		}), builder.WithPredicates(predicate.LabelChangedPredicate{}))
	if r.Cluster != nil {
		cluster := &unstructured.Unstructured{}
		cluster.SetGroupVersionKind(*r.Cluster)
		b = b.Watches(cluster, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var claims capiv1beta2.IPAddressClaimList
			if err := r.List(ctx, &claims, client.InNamespace(o.GetNamespace()), client.MatchingFields{indexAddressClaimCluster: o.GetName()}); err != nil {
				return nil
			}
			out := make([]reconcile.Request, 0, len(claims.Items))
			for i := range claims.Items {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&claims.Items[i])})
			}
			return out
		}), builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				return clusterPaused(e.ObjectOld.(*unstructured.Unstructured)) != clusterPaused(e.ObjectNew.(*unstructured.Unstructured))
			},
		}))
	}
	return b.Named("ipaddressclaim").
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1), RateLimiter: retryLimiter(r.RetryMaxDelay)}).
		Complete(r)
}

// waiting lists the kipam claims matching opts that wait (waitsForPool).
func (r *IPAddressClaimReconciler) waiting(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var claims capiv1beta2.IPAddressClaimList
	if err := r.List(ctx, &claims, opts...); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range claims.Items {
		if c := &claims.Items[i]; waitsForPool(c) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(c)})
		}
	}
	return out
}

// waitsForPool reports whether a kipam claim was answered that it waits
// (Ready False, no address): what frees or adds space, or opens the pool
// to its namespace, wakes it. A claim not answered yet is queued by its
// own create, and its first answer, a write of its status, queues it
// again, which sees any space freed meanwhile. Waking it on every commit
// of its pool instead queued each claim of a burst again while it was
// being served, for a second reconcile, whose Adopt read the pool's
// ledgers again.
func waitsForPool(c *capiv1beta2.IPAddressClaim) bool {
	return ipam.ServesPoolRef(c.Spec.PoolRef) && c.Status.AddressRef.Name == "" && c.DeletionTimestamp == nil &&
		meta.IsStatusConditionFalse(c.Status.Conditions, capiv1beta2.ReadyCondition)
}
