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
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/metrics"
)

// EventRecorder records events; the manager's recorder satisfies it.
type EventRecorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// IPClaimReconciler mirrors a claim's allocation into its status and an
// IPAllocation, binds claims that wait for space, records (or marks
// Conflict) a claim whose prefix its pool's ledger does not record, expires
// claims with a lifetime, and releases the prefix when the claim is deleted.
type IPClaimReconciler struct {
	client.Client
	// APIReader confirms a claim against the API server before its
	// unrecorded prefix is recorded, and an IPAllocation before a release.
	APIReader client.Reader
	Manager   *ipam.Manager
	Resolver  *ipam.Resolver
	Recorder  EventRecorder
	// Now is the clock; tests inject one.
	Now func() time.Time
	// RetryMaxDelay caps the wait before retrying a failed reconcile
	// (DefaultRetryMaxDelay when 0).
	RetryMaxDelay time.Duration
	// Workers is how many claims are reconciled at once.
	Workers int
	// Holdings finds the cached claims that carry a prefix.
	Holdings *holdings
	// Allocations keeps what kipam reads of each IPAllocation; when nil,
	// each is read through Client.
	Allocations *allocations

	lost lostRecords
}

// kipam's own ClusterRole is least privilege: each verb's reason is next
// to its marker, and kipam writes every object by Patch except ledgers and
// Leases (compare-and-swap Updates).
//
// Claims: read for the cache, the resolver and the webhook's name check;
// patched for the release finalizer, a waiting claim's bind and repair;
// deleted when their ttlSeconds run out.
// +kubebuilder:rbac:groups=ipam.kipam.dev,resources=ipclaims,verbs=get;list;watch;patch;delete
// The claim's status (Ready, cidr, pool, expiry) is kipam's to write.
// +kubebuilder:rbac:groups=ipam.kipam.dev,resources=ipclaims/status,verbs=patch

// Reconcile brings one IPClaim to its desired state.
func (r *IPClaimReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var claim ipamv1alpha1.IPClaim
	if err := r.Get(ctx, req.NamespacedName, &claim); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if claim.DeletionTimestamp != nil {
		return ctrl.Result{}, r.finalize(ctx, &claim)
	}
	if exp := expiresAt(&claim); exp != nil && !r.Now().Before(exp.Time) {
		// A claim that waited past its lifetime is never bound: it would get
		// an address it cannot use.
		what := "releasing " + claim.Spec.CIDR
		if len(claim.Spec.CIDRs) > 1 {
			what = "releasing " + strings.Join(claim.Spec.CIDRs, " and ")
		}
		if claim.Spec.CIDR == "" {
			what = "it was still waiting and is deleted unbound"
		}
		r.Recorder.Eventf(&claim, nil, corev1.EventTypeNormal, ipamv1alpha1.ReasonExpired, "Expire",
			"ttlSeconds ran out at %s: %s", exp.UTC().Format(time.RFC3339), what)
		return ctrl.Result{}, client.IgnoreNotFound(r.Delete(ctx, &claim))
	}
	if claim.Spec.CIDR == "" {
		next, err := r.bindWaiting(ctx, &claim)
		if err != nil {
			return ctrl.Result{}, err
		}
		if exp := expiresAt(&claim); exp != nil && claim.Spec.CIDR == "" {
			// Expire it even if nothing wakes it.
			if left := exp.Sub(r.Now()); next == 0 || left < next {
				next = left
			}
		}
		return ctrl.Result{RequeueAfter: next}, nil
	}
	if err := r.ensureFinalizer(ctx, &claim); err != nil {
		return ctrl.Result{}, err
	}
	if ipam.PoolOf(&claim) == "" {
		return ctrl.Result{}, r.adoptPool(ctx, &claim)
	}
	cond, allocNames, err := r.ensureAllocations(ctx, &claim)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.patchStatus(ctx, &claim, cond, allocNames...); err != nil {
		return ctrl.Result{}, err
	}
	if exp := expiresAt(&claim); exp != nil {
		return ctrl.Result{RequeueAfter: exp.Sub(r.Now())}, nil
	}
	return ctrl.Result{}, nil
}

// expiresAt is when a claim's lifetime runs out, counted from its creation.
func expiresAt(claim *ipamv1alpha1.IPClaim) *metav1.Time {
	if claim.Spec.TTLSeconds == nil {
		return nil
	}
	t := metav1.NewTime(claim.CreationTimestamp.Add(time.Duration(*claim.Spec.TTLSeconds) * time.Second))
	return &t
}

func (r *IPClaimReconciler) ensureFinalizer(ctx context.Context, claim *ipamv1alpha1.IPClaim) error {
	if controllerutil.ContainsFinalizer(claim, ipamv1alpha1.ClaimFinalizer) {
		return nil
	}
	patch := client.MergeFrom(claim.DeepCopy())
	controllerutil.AddFinalizer(claim, ipamv1alpha1.ClaimFinalizer)
	return r.Patch(ctx, claim, patch)
}

// ensureAllocations creates or binds an IPAllocation for each prefix the
// claim carries (two for a dual-stack claim) and returns the Ready
// condition they imply, with their names in the order of the holdings.
func (r *IPClaimReconciler) ensureAllocations(ctx context.Context, claim *ipamv1alpha1.IPClaim) (metav1.Condition, []string, error) {
	var (
		names []string
		done  []string
	)
	for _, h := range ipam.Holdings(claim) {
		cond, name, err := r.ensureAllocation(ctx, claim, h)
		if err != nil || cond.Status != metav1.ConditionTrue {
			return cond, nil, err
		}
		names = append(names, name)
		done = append(done, cond.Message)
	}
	return allocated(done), names, nil
}

// allocated is the Ready condition of a claim whose every prefix is bound,
// from what each prefix's bind says.
func allocated(done []string) metav1.Condition {
	return metav1.Condition{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonAllocated,
		Message: strings.Join(done, "; ")}
}

// allocationFor is the name of the IPAllocation of h, a prefix of a claim
// with a pool, its prefix, and the Ready condition of a claim that has it
// bound.
func allocationFor(h ipam.Holding) (string, netip.Prefix, metav1.Condition, error) {
	cidr, err := netip.ParsePrefix(h.CIDR)
	if err != nil {
		return "", netip.Prefix{}, metav1.Condition{}, err
	}
	return ipam.AllocationName(h.Pool, cidr), cidr, metav1.Condition{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionTrue,
		Reason: ipamv1alpha1.ReasonAllocated, Message: ipam.AllocatedMessage(cidr.String(), h.Pool)}, nil
}

// trusted reports whether claim, bound to a, is taken at its word: it is
// Ready, no change of its ledger dropped its entry, and a names its uid.
// Any other is checked against the stored ledger on its pass.
func (r *IPClaimReconciler) trusted(claim *ipamv1alpha1.IPClaim, a *ipamv1alpha1.IPAllocation) bool {
	return a.Spec.ClaimRef.UID != "" && meta.IsStatusConditionTrue(claim.Status.Conditions, ipamv1alpha1.ConditionReady) &&
		!r.lost.has(client.ObjectKeyFromObject(claim))
}

// settled reports that Reconcile would write nothing for claim, as the
// cache shows it, and read nothing but its allocations' records: it is
// bound, not being deleted, has no lifetime, carries the finalizer and
// the pool, each of its prefixes' allocations is bound to it and trusted,
// and its status is what those imply. It is decided by the functions
// Reconcile runs on the same path (allocationFor, trusted, allocated,
// setStatus), so the two cannot disagree.
func (r *IPClaimReconciler) settled(claim *ipamv1alpha1.IPClaim) bool {
	if claim.DeletionTimestamp != nil || claim.Spec.TTLSeconds != nil || claim.Spec.CIDR == "" || ipam.PoolOf(claim) == "" ||
		!controllerutil.ContainsFinalizer(claim, ipamv1alpha1.ClaimFinalizer) {
		return false
	}
	var names, done []string
	for _, h := range ipam.Holdings(claim) {
		if h.Pool == "" {
			return false
		}
		name, _, ready, err := allocationFor(h)
		if err != nil {
			return false
		}
		rec, found := records(r.Allocations, r.Client).get(name)
		if !found {
			return false
		}
		if a := rec.view(name); !ipam.BoundTo(a, claim) || !r.trusted(claim, a) {
			return false
		}
		names = append(names, name)
		done = append(done, ready.Message)
	}
	if len(names) == 0 {
		return false
	}
	want := claim.DeepCopy()
	setStatus(want, allocated(done), names...)
	return equalStatus(claim, want)
}

// ensureAllocation creates or binds the IPAllocation of one prefix the
// claim carries and returns the Ready condition it implies.
func (r *IPClaimReconciler) ensureAllocation(ctx context.Context, claim *ipamv1alpha1.IPClaim, h ipam.Holding) (metav1.Condition, string, error) {
	pool := h.Pool
	if pool == "" {
		return notReady(ipamv1alpha1.ReasonInvalid, fmt.Sprintf("%s has no pool recorded (annotation %s)", h.CIDR, ipam.SecondaryPoolAnnotation)), "", nil
	}
	name, cidr, ready, err := allocationFor(h)
	if err != nil {
		return metav1.Condition{}, "", reconcile.TerminalError(err)
	}
	var a *ipamv1alpha1.IPAllocation
	if rec, found := records(r.Allocations, r.Client).get(name); found {
		a = rec.view(name)
	} else {
		if cond, ok, err := r.ensureRecorded(ctx, claim, pool, cidr); err != nil || !ok {
			return cond, "", err
		}
		a = &ipamv1alpha1.IPAllocation{
			ObjectMeta: metav1.ObjectMeta{
				Name:       name,
				Labels:     map[string]string{ipamv1alpha1.LabelPool: pool, ipamv1alpha1.LabelClaimNamespace: claim.Namespace},
				Finalizers: []string{ipamv1alpha1.AllocationFinalizer},
			},
			Spec: ipamv1alpha1.IPAllocationSpec{Pool: pool, CIDR: cidr.String(), Entry: h.Entry, ClaimRef: ipamv1alpha1.ClaimRef{
				Kind: "IPClaim", Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID,
			}},
		}
		err := r.Create(ctx, a)
		if err == nil {
			return ready, name, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return metav1.Condition{}, "", err
		}
		// Not recorded yet (this claim's, created by a pass a moment ago,
		// or a previous holder's): as the API server has it.
		a = &ipamv1alpha1.IPAllocation{}
		if err := r.Get(ctx, client.ObjectKey{Name: name}, a); err != nil {
			return metav1.Condition{}, "", err
		}
	}
	if ipam.BoundTo(a, claim) {
		// A claim that looks healthy is not checked against the stored
		// ledger on every pass: only until it is Ready, when its allocation
		// was restored without its uid, or after its ledger entry was lost.
		if !r.trusted(claim, a) {
			if cond, ok, err := r.ensureRecorded(ctx, claim, pool, cidr); err != nil || !ok {
				return cond, "", err
			}
		}
		if a.Spec.ClaimRef.UID == "" {
			patch := client.MergeFrom(a.DeepCopy())
			a.Spec.ClaimRef.UID = claim.UID
			if err := r.Patch(ctx, a, patch); err != nil {
				return metav1.Condition{}, "", err
			}
		}
		return ready, name, nil
	}
	ref := a.Spec.ClaimRef
	if e, ok, err := ipam.LookupEntry(ctx, r.Client, pool, cidr); err == nil && ok && ipam.OwnEntry(e, claim) {
		// The ledger records the prefix as this claim's: the IPAllocation
		// is its previous holder's, released a moment ago, whose finalizer
		// deletes it next; that delete wakes this claim.
		return notReady(ipamv1alpha1.ReasonPending, fmt.Sprintf("%s in pool %s is bound to this claim; the IPAllocation of its previous holder %s %s/%s is being removed",
			cidr, pool, ref.Kind, ref.Namespace, ref.Name)), "", nil
	}
	if a.UID == "" {
		// A record's view: the Warning event names the object as stored.
		var stored ipamv1alpha1.IPAllocation
		if err := r.Get(ctx, client.ObjectKey{Name: name}, &stored); err == nil {
			a = &stored
		}
	}
	return r.conflict(claim, a, fmt.Sprintf("%s in pool %s is held by %s %s/%s", cidr, pool, ref.Kind, ref.Namespace, ref.Name)), "", nil
}

func (r *IPClaimReconciler) patchStatus(ctx context.Context, claim *ipamv1alpha1.IPClaim, cond metav1.Condition, allocNames ...string) error {
	before := claim.DeepCopy()
	setStatus(claim, cond, allocNames...)
	if equalStatus(before, claim) {
		return nil
	}
	return r.Status().Patch(ctx, claim, client.MergeFrom(before))
}

// setStatus sets claim's status from its Ready condition cond and the
// names of its prefixes' IPAllocations (when cond is true).
func setStatus(claim *ipamv1alpha1.IPClaim, cond metav1.Condition, allocNames ...string) {
	cond.ObservedGeneration = claim.Generation
	meta.SetStatusCondition(&claim.Status.Conditions, cond)
	claim.Status.ExpiresAt = expiresAt(claim)
	claim.Status.CIDRs, claim.Status.Allocations = nil, nil
	if cond.Status != metav1.ConditionTrue {
		claim.Status.CIDR, claim.Status.Pool, claim.Status.Allocation = "", "", ""
	} else {
		claim.Status.CIDR, claim.Status.Pool, claim.Status.Allocation = claim.Spec.CIDR, ipam.PoolOf(claim), allocNames[0]
		if ipam.DualStack(claim) {
			claim.Status.CIDRs, claim.Status.Allocations = slices.Clone(claim.Spec.CIDRs), allocNames
		}
	}
	if ipam.DualStack(claim) && claim.Spec.CIDR != "" {
		meta.SetStatusCondition(&claim.Status.Conditions, dualStackCondition(claim))
	}
}

// dualStackCondition says whether a dual-stack claim holds both families,
// and why not when PreferDualStack fell back to one.
func dualStackCondition(claim *ipamv1alpha1.IPClaim) metav1.Condition {
	c := metav1.Condition{Type: ipamv1alpha1.ConditionDualStack, ObservedGeneration: claim.Generation}
	if len(claim.Spec.CIDRs) > 1 {
		c.Status, c.Reason = metav1.ConditionTrue, ipamv1alpha1.ReasonBothFamilies
		c.Message = fmt.Sprintf("holds %s", strings.Join(claim.Spec.CIDRs, " and "))
		return c
	}
	c.Status, c.Reason = metav1.ConditionFalse, ipamv1alpha1.ReasonFellBack
	c.Message = fmt.Sprintf("PreferDualStack settled for %s: %s", claim.Spec.CIDR, claim.Annotations[ipam.FallbackAnnotation])
	return c
}

func equalStatus(a, b *ipamv1alpha1.IPClaim) bool {
	return a.Status.CIDR == b.Status.CIDR && a.Status.Pool == b.Status.Pool && a.Status.Allocation == b.Status.Allocation &&
		slices.Equal(a.Status.CIDRs, b.Status.CIDRs) && slices.Equal(a.Status.Allocations, b.Status.Allocations) &&
		a.Status.ExpiresAt.Equal(b.Status.ExpiresAt) && conditionsEqual(a.Status.Conditions, b.Status.Conditions)
}

func conditionsEqual(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message || x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	return true
}

// bindWaiting allocates for a claim created Pending (whenExhausted: Wait),
// in its namespace's order: a claim waits while an older claim of its
// namespace waits on the same pools. A claim that can never fit any of its
// pools as they are leaves the queue (NeverFits) until a pool changes. It
// returns when to look again without a watch to wake it (a released prefix
// held for its pool's reuse grace frees no ledger entry when the grace ends).
//
// A dual-stack claim is bound with both families or not at all, and holds
// nothing while it waits: its second family is first asked for as a dry
// run (which commits nothing), then each family is committed in turn, and
// a first family committed before the second found no room is released at
// once, by its entry. The dry run keeps a claim whose second family has no
// room from committing and releasing its first on every wake (each
// release a ledger change that would wake it again).
func (r *IPClaimReconciler) bindWaiting(ctx context.Context, claim *ipamv1alpha1.IPClaim) (time.Duration, error) {
	if err := r.ensureFinalizer(ctx, claim); err != nil {
		return 0, err
	}
	views := []*ipamv1alpha1.IPClaim{claim}
	if ipam.DualStack(claim) {
		views = []*ipamv1alpha1.IPClaim{ipam.FamilyView(claim, 0), ipam.FamilyView(claim, 1)}
	}
	candidates := make([][]*ipamv1alpha1.IPPool, len(views))
	for i, v := range views {
		pools, err := r.Resolver.Candidates(ctx, v, claim.Namespace)
		var fe *field.Error
		if errors.As(err, &fe) {
			// No pool it may draw on (gone, relabelled, closed to the
			// namespace): it leaves the queue until a pool or the namespace
			// changes.
			return 0, r.pending(ctx, claim, ipamv1alpha1.ReasonNeverFits, "", familyOf(claim, i)+err.Error())
		}
		if err != nil {
			return 0, err
		}
		candidates[i] = pools
	}
	ahead, err := ipam.Ahead(ctx, r.Client, claim, claim.Namespace)
	if err != nil {
		return 0, err
	}
	if len(ahead) > 0 {
		return 0, r.pending(ctx, claim, ipamv1alpha1.ReasonPending, candidates[0][0].Name, fmt.Sprintf(
			"waiting for space in pool %s, behind %d older claims of namespace %s (the first is %s)",
			candidates[0][0].Name, len(ahead), claim.Namespace, ahead[0].Name))
	}
	for i := 1; i < len(views); i++ {
		var why noRoom
		b, err := r.allocateWaiting(ctx, views[i], candidates[i], true, &why)
		if err != nil {
			return 0, err
		}
		if b == nil {
			return r.wait(ctx, claim, i, candidates[i], &why)
		}
	}
	var bound []binding
	for i, v := range views {
		var why noRoom
		b, err := r.allocateWaiting(ctx, v, candidates[i], false, &why)
		if err != nil || b == nil {
			// Surely no claim carries what this bind committed: the claim
			// is patched only once every family is.
			if rerr := r.releaseBinds(ctx, bound); rerr != nil {
				return 0, errors.Join(err, rerr)
			}
			if err != nil {
				return 0, err
			}
			return r.wait(ctx, claim, i, candidates[i], &why)
		}
		bound = append(bound, *b)
	}
	patch := client.MergeFrom(claim.DeepCopy())
	claim.Spec.CIDR = bound[0].prefix.String()
	metav1.SetMetaDataAnnotation(&claim.ObjectMeta, ipam.PoolAnnotation, bound[0].pool.Name)
	what := make([]string, 0, len(bound))
	for _, b := range bound {
		what = append(what, fmt.Sprintf("%s from pool %s", b.prefix, b.pool.Name))
	}
	if len(bound) > 1 {
		claim.Spec.CIDRs = []string{bound[0].prefix.String(), bound[1].prefix.String()}
		metav1.SetMetaDataAnnotation(&claim.ObjectMeta, ipam.SecondaryPoolAnnotation, bound[1].pool.Name)
	}
	if err := r.Patch(ctx, claim, patch); err != nil {
		if refused(err) {
			// Surely not bound (the cache was stale and the claim is
			// bound or gone already): release exactly what was just
			// committed, which no claim carries.
			if rerr := r.releaseBinds(ctx, bound); rerr != nil {
				return 0, errors.Join(err, rerr)
			}
		}
		// Else the patch may yet have been stored: the entries are left
		// to the orphan sweep, which keeps them while the claim waits or
		// carries them.
		return 0, err
	}
	r.Recorder.Eventf(claim, nil, corev1.EventTypeNormal, ipamv1alpha1.ReasonAllocated, "Bind", "bound %s", strings.Join(what, " and "))
	return 0, nil
}

// binding is a prefix committed for a waiting claim, not yet patched into
// it.
type binding struct {
	pool   *ipamv1alpha1.IPPool
	prefix netip.Prefix
	req    ipam.Request
}

// noRoom is why a waiting claim (or one family of it) found no room in
// its pools: the pool to wait on (nil when no release can ever make
// room), the reasons, and when a hold ends that no watch reports.
type noRoom struct {
	waitOn         *ipamv1alpha1.IPPool
	reasons, never []string
	next           time.Duration
}

// allocateWaiting commits a prefix for a waiting claim (or one family's
// view of a dual-stack claim) from the first of pools that has room, as
// the entry named by the claim's uid; a dry run commits nothing and says
// whether one would be. nil, with why filled in, when none has room.
func (r *IPClaimReconciler) allocateWaiting(ctx context.Context, claim *ipamv1alpha1.IPClaim, pools []*ipamv1alpha1.IPPool, dryRun bool, why *noRoom) (*binding, error) {
	for _, pool := range pools {
		req, err := ipam.RequestFor(claim, pool, ipam.ClaimHolder(claim.Namespace), dryRun)
		if err == nil {
			err = ipam.NeverFits(req)
		}
		if err != nil {
			why.never = append(why.never, err.Error())
			continue
		}
		// The entry is the claim's by its uid: only this claim can carry
		// it (the webhook lets an update set spec.cidr only to an entry
		// recorded for the claim's uid), and the finalizer frees it by it.
		req.ID = string(claim.UID)
		// A bind before whose patch's outcome was unknown may have left an
		// entry for this claim: bind that one rather than hold two.
		req.Adopt = true
		p, err := r.Manager.Allocate(ctx, req)
		var ex *allocator.ExhaustedError
		_, full := ipam.Full(err)
		switch {
		case errors.As(err, &ex):
			why.reasons = append(why.reasons, fmt.Sprintf("pool %s: %s", pool.Name, ex.Error()))
		case full || errors.Is(err, ipam.ErrPoolDeleted):
			why.reasons = append(why.reasons, err.Error())
		case err != nil:
			return nil, err
		default:
			return &binding{pool: pool, prefix: p, req: req}, nil
		}
		if why.waitOn == nil {
			why.waitOn = pool
		}
		if end, ok := r.nextHoldEnd(ctx, pool); ok && (why.next == 0 || end < why.next) {
			why.next = end
		}
	}
	return nil, nil
}

// releaseBinds releases, each by its entry and without the reuse grace
// (no claim carried them), the prefixes a bind committed and did not
// patch into its claim.
func (r *IPClaimReconciler) releaseBinds(ctx context.Context, bound []binding) error {
	var errs []error
	for _, b := range bound {
		if _, err := r.Manager.Release(ctx, b.pool, b.prefix, b.req.Holder, b.req.ID, 0, nil); err != nil {
			errs = append(errs, fmt.Errorf("releasing %s, committed for a bind that failed (the orphan sweep will once the claim is gone or bound): %w", b.prefix, err))
		}
	}
	return errors.Join(errs...)
}

// wait records that family i of claim (its only one for a single-stack
// claim) found no room in pools, as why says, and returns when to look
// again.
func (r *IPClaimReconciler) wait(ctx context.Context, claim *ipamv1alpha1.IPClaim, i int, pools []*ipamv1alpha1.IPPool, why *noRoom) (time.Duration, error) {
	if why.waitOn == nil {
		// No release can make room: the claim leaves its namespace's queue
		// so as not to hold back the claims behind it, and comes back when
		// a pool changes.
		return 0, r.pending(ctx, claim, ipamv1alpha1.ReasonNeverFits, pools[0].Name, familyOf(claim, i)+strings.Join(why.never, "; "))
	}
	largest := "nothing"
	if lf := why.waitOn.Status.LargestFreePrefix; lf != nil {
		largest = fmt.Sprintf("a /%d", *lf)
	}
	return why.next, r.pending(ctx, claim, ipamv1alpha1.ReasonPending, why.waitOn.Name, fmt.Sprintf(
		"%swaiting for space in pool %s, first in namespace %s's queue (the pool's largest free block: %s): %s",
		familyOf(claim, i), why.waitOn.Name, claim.Namespace, largest, strings.Join(append(why.reasons, why.never...), "; ")))
}

// familyOf names family i of a dual-stack claim at the start of a
// message; nothing for a single-stack claim.
func familyOf(claim *ipamv1alpha1.IPClaim, i int) string {
	if !ipam.DualStack(claim) {
		return ""
	}
	return fmt.Sprintf("%s (spec.ipFamilies[%d]): ", claim.Spec.IPFamilies[i], i)
}

// nextHoldEnd is how long until the first prefix of pool held for its
// reuse grace, or retained for the claim that released it, is free again
// for others, as the cached ledger records it.
func (r *IPClaimReconciler) nextHoldEnd(ctx context.Context, pool *ipamv1alpha1.IPPool) (time.Duration, bool) {
	ledger, err := ipam.ReadLedger(ctx, r.Client, pool.Name)
	if err != nil {
		return 0, false
	}
	first, ok := ledger.NextFree(r.Now(), ipam.Grace(pool))
	if !ok {
		return 0, false
	}
	// A little past the end, on this replica's clock, so that the hold has
	// surely ended for the allocator too.
	return max(first.Sub(r.Now()), 0) + 100*time.Millisecond, true
}

// refused reports whether a write surely was not stored: the API server
// answered and said no.
func refused(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsNotFound(err) || apierrors.IsConflict(err)
}

// pending records why a claim waits (reason Pending, or NeverFits when it
// left its namespace's queue) and on which pool, with an event when that
// changes.
func (r *IPClaimReconciler) pending(ctx context.Context, claim *ipamv1alpha1.IPClaim, reason, pool, msg string) error {
	// An event when it starts to wait, changes pool or leaves the queue;
	// its place and the pool's room change too often to tell each time.
	if c := meta.FindStatusCondition(claim.Status.Conditions, ipamv1alpha1.ConditionReady); c == nil || c.Reason != reason || claim.Status.Pool != pool {
		r.Recorder.Eventf(claim, nil, corev1.EventTypeNormal, reason, "Wait", "%s", msg)
	}
	before := claim.DeepCopy()
	meta.SetStatusCondition(&claim.Status.Conditions, metav1.Condition{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: reason, Message: msg, ObservedGeneration: claim.Generation})
	claim.Status.ExpiresAt = expiresAt(claim)
	claim.Status.CIDR, claim.Status.Pool, claim.Status.Allocation = "", pool, ""
	if equalStatus(before, claim) {
		return nil
	}
	return r.Status().Patch(ctx, claim, client.MergeFrom(before))
}

// finalize releases the claim's ledger entry (after the pool's reuse
// grace), deletes its IPAllocation, then lets the claim go. The release
// names the entry (ClaimEntryID), so a claim that never held its prefix
// (Conflict, or restored with the webhook bypassed and never recorded)
// frees nothing, and a retry after a failed step cannot free the prefix
// if it went to someone else meanwhile.
func (r *IPClaimReconciler) finalize(ctx context.Context, claim *ipamv1alpha1.IPClaim) error {
	if !controllerutil.ContainsFinalizer(claim, ipamv1alpha1.ClaimFinalizer) {
		return nil
	}
	// Each prefix by its own entry: a dual-stack claim's two are in two
	// pools' ledgers, each released through its own pool's commit.
	for _, h := range ipam.Holdings(claim) {
		cidr, err := netip.ParsePrefix(h.CIDR)
		if err != nil || h.Pool == "" {
			continue
		}
		poolName := h.Pool
		var pool ipamv1alpha1.IPPool
		switch err := r.Get(ctx, client.ObjectKey{Name: poolName}, &pool); {
		case err == nil:
			freed, err := r.Manager.Release(ctx, &pool, cidr, ipam.ClaimHolder(claim.Namespace), r.entryOf(ctx, claim, poolName, cidr), ipam.Grace(&pool),
				ipam.RetainOf(claim, &pool))
			if err != nil {
				return err
			}
			if freed {
				cause := "Deleted"
				if exp := expiresAt(claim); exp != nil && !r.Now().Before(exp.Time) {
					cause = ipamv1alpha1.ReasonExpired
				}
				metrics.Released.WithLabelValues(poolName, cause).Inc()
			}
		case !apierrors.IsNotFound(err):
			return err
		}
		if err := deleteAllocation(ctx, r.Client, ipam.AllocationName(poolName, cidr), func(a *ipamv1alpha1.IPAllocation) bool {
			return ipam.BoundTo(a, claim)
		}); err != nil {
			return err
		}
		logf.FromContext(ctx).V(1).Info("released", "pool", poolName, "cidr", cidr)
	}
	patch := client.MergeFrom(claim.DeepCopy())
	controllerutil.RemoveFinalizer(claim, ipamv1alpha1.ClaimFinalizer)
	return client.IgnoreNotFound(r.Patch(ctx, claim, patch))
}

// entryOf is the ID of the ledger entry claim holds: ClaimEntryID, except
// for a claim bound before entries had IDs, whose IPAllocation (bound to
// it) records the entry it holds as having none.
func (r *IPClaimReconciler) entryOf(ctx context.Context, claim *ipamv1alpha1.IPClaim, pool string, cidr netip.Prefix) string {
	if claim.Annotations[ipam.EntryAnnotation] == "" && !ipam.DualStack(claim) {
		name := ipam.AllocationName(pool, cidr)
		if rec, ok := records(r.Allocations, r.Client).get(name); ok && ipam.BoundTo(rec.view(name), claim) && rec.spec().Entry == "" {
			return ""
		}
	}
	return ipam.ClaimEntryID(claim)
}

// deleteAllocation removes the IPAllocation called name if is says it is
// the one meant, finalizer first. Its name is its pool's and prefix's, so
// a record of the same prefix for its next holder may have taken the name
// since the caller looked, and a cache may still show the old one: the
// finalizer's patch is fenced by the object's resourceVersion, and the
// delete by its uid, so that record is never touched (a Conflict, and the
// retry finds it is not the one meant).
func deleteAllocation(ctx context.Context, c client.Client, name string, is func(*ipamv1alpha1.IPAllocation) bool) error {
	var a ipamv1alpha1.IPAllocation
	if err := c.Get(ctx, client.ObjectKey{Name: name}, &a); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !is(&a) {
		return nil
	}
	if controllerutil.ContainsFinalizer(&a, ipamv1alpha1.AllocationFinalizer) {
		patch := client.MergeFromWithOptions(a.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.RemoveFinalizer(&a, ipamv1alpha1.AllocationFinalizer)
		if err := c.Patch(ctx, &a, patch); err != nil {
			return client.IgnoreNotFound(err)
		}
	}
	return client.IgnoreNotFound(c.Delete(ctx, &a, client.Preconditions{UID: &a.UID}))
}

// SetupWithManager registers the reconciler; a changed ledger wakes the
// claims that wait for space and those whose entry it dropped.
func (r *IPClaimReconciler) SetupWithManager(mgr ctrl.Manager) error {
	log := mgr.GetLogger().WithValues("controller", "ipclaim", "controllerGroup", ipamv1alpha1.GroupVersion.Group, "controllerKind", "IPClaim")
	return ctrl.NewControllerManagedBy(mgr).
		// Claims' own events come from claimEvents, not For.
		WatchesRawSource(&claimEvents{cache: mgr.GetCache(), r: r}).
		// What frees or adds space wakes the claims that wait for it: a
		// ledger's change, a pool created or changed, and a waiting claim
		// that leaves its namespace's queue, bound or gone (claimEvents).
		Watches(&ipamv1alpha1.IPLedger{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.waitingOn(ctx, o.(*ipamv1alpha1.IPLedger).Spec.Pool)
		})).
		Watches(&ipamv1alpha1.IPPool{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.waitingOn(ctx, o.GetName())
		}), builder.WithPredicates(predicate.Or[client.Object](
			predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, predicate.Funcs{CreateFunc: func(event.CreateEvent) bool { return true }}))).
		// A namespace's labels decide which pools its claims may draw on.
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.waitingIn(ctx, o.GetName())
		}), builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Watches(&ipamv1alpha1.IPLedger{}, r.ledgerLosses()).
		Named("ipclaim").
		// As For would log each reconcile.
		WithLogConstructor(func(req *reconcile.Request) logr.Logger {
			if req == nil {
				return log
			}
			return log.WithValues("IPClaim", klog.KRef(req.Namespace, req.Name), "namespace", req.Namespace, "name", req.Name)
		}).
		// Claims are independent: binds of one pool are serialised by its
		// Manager, and a namespace's queue is read afresh on each pass.
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.Workers, 1), RateLimiter: retryLimiter(r.RetryMaxDelay)}).
		Complete(r)
}

// claimEvents queues claims on their own events, from one handler
// registered on the claims' informer once the allocation records have
// synced. Registered on an informer that has listed, a handler is first
// given every claim it holds as a create of the initial list; of those,
// a claim settled with its records (settled) is not queued: at a restart
// of a manager holding 100,000 claims, their reconciles wrote nothing and
// the queue's maps they filled, which never shrink, kept 150 B a claim. A
// claim being deleted is queued at a new event's priority
// (pendingRelease); any other as controller-runtime's handler queues it.
// Whatever happens to a claim before the handler is registered is in
// that first list, as the claim now is; everything after reaches the
// handler. The records' source, which queues the claims of an
// IPAllocation gone, is started first, so an allocation deleted after a
// claim was judged settled still reaches it.
//
// It is one handler, not For's and a second one for the initial list: a
// second registration, made before or after For's, could miss a claim
// created between the two (given to the first as a new claim, to the
// second as one of its initial list), and each handler of an informer
// buffers its own copy of the events it has not handled, a restart's
// whole initial list included. For the same reason it also wakes a
// namespace's waiting claims when one of them leaves the queue (bound or
// gone).
type claimEvents struct {
	cache cache.Cache
	r     *IPClaimReconciler

	records source.TypedSyncingSource[reconcile.Request]
	// cancel stops the wait for the records; started is closed once claims
	// is started, or err says why not.
	cancel  context.CancelFunc
	started chan struct{}
	claims  source.TypedSyncingSource[reconcile.Request]
	err     error
}

func (s *claimEvents) Start(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	r := s.r
	// An IPAllocation gone makes room for the record of the claim that now
	// holds its prefix.
	s.records = records(r.Allocations, r.Client).source(func(_ context.Context, e allocEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if e.new != nil {
			return
		}
		spec := e.old.spec()
		claims, err := r.Holdings.claims(spec.Pool, spec.CIDR, "")
		if err != nil {
			return
		}
		for i := range claims {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&claims[i])})
		}
	})
	if err := s.records.Start(ctx, q); err != nil {
		return err
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.started = make(chan struct{})
	go func() {
		defer close(s.started)
		if s.err = s.records.WaitForSync(ctx); s.err != nil {
			return
		}
		s.claims = source.Kind(s.cache, client.Object(&ipamv1alpha1.IPClaim{}), handler.Funcs{
			CreateFunc: s.create, UpdateFunc: s.update, DeleteFunc: s.delete, GenericFunc: (&handler.EnqueueRequestForObject{}).Generic,
		})
		s.err = s.claims.Start(ctx, q)
	}()
	return nil
}

// update queues a claim changed, and wakes its namespace's waiting claims
// when it leaves their queue.
func (s *claimEvents) update(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	(&handler.EnqueueRequestForObject{}).Update(ctx, e, q)
	if ipam.Waiting(e.ObjectOld) && !ipam.Waiting(e.ObjectNew) {
		s.r.wakeNamespace(ctx, e.ObjectNew, q)
	}
}

// delete queues a claim gone, and wakes its namespace's waiting claims
// when it was one of them.
func (s *claimEvents) delete(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	(&handler.EnqueueRequestForObject{}).Delete(ctx, e, q)
	if ipam.Waiting(e.Object) {
		s.r.wakeNamespace(ctx, e.Object, q)
	}
}

// create queues a claim added, or of the initial list unless it is
// settled; one being deleted at the priority of a new event
// (pendingRelease).
func (s *claimEvents) create(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if e.IsInInitialList && e.Object != nil {
		if e.Object.GetDeletionTimestamp() != nil {
			pendingRelease(e.Object, q)
			return
		}
		if c := cachedClaim(e.Object); c != nil && s.r.settled(c) {
			return
		}
	}
	(&handler.EnqueueRequestForObject{}).Create(ctx, e, q)
}

// WaitForSync waits for the records, then for the claims' handler to have
// been given every claim of the informer, as controller-runtime's own
// sources do: a cancelled ctx (the manager stopping) is no error.
func (s *claimEvents) WaitForSync(ctx context.Context) error {
	select {
	case <-s.started:
		if s.err == nil {
			return s.claims.WaitForSync(ctx)
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil // the wait for the records ended with the manager
		}
		return s.err
	case <-ctx.Done():
		s.cancel()
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil
		}
		return fmt.Errorf("IPAllocation records not listed: %w", ctx.Err())
	}
}

func (s *claimEvents) String() string { return "IPAllocation records, then IPClaims" }

// pendingRelease queues o, a claim being deleted that the initial list
// of a new leader's cache holds, at the priority of a new event.
// controller-runtime's priority queue puts all the initial list below
// every new event, as a resync that can wait; but a release left pending
// by the last leader is work, and under steady traffic the new events
// alone keep the workers busy: in the chaos suite's kill-only run, with
// the leader changing every 40 s or so, releases waited behind them for
// up to ten minutes.
func pendingRelease(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)}
	if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
		pq.AddWithOpts(priorityqueue.AddOpts{Priority: ptr.To(0)}, req)
		return
	}
	q.Add(req)
}

// wakeNamespace queues the claims of o's namespace that wait for space.
func (r *IPClaimReconciler) wakeNamespace(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	for _, req := range r.waitingIn(ctx, o.GetNamespace()) {
		q.Add(req)
	}
}

// waitingOn lists the waiting claims that a change of pool may concern:
// those naming it, and those choosing by selector.
func (r *IPClaimReconciler) waitingOn(ctx context.Context, pool string) []reconcile.Request {
	var waiting ipamv1alpha1.IPClaimList
	if err := r.List(ctx, &waiting, client.MatchingFields{indexWaiting: "true"}); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range waiting.Items {
		if p := waiting.Items[i].Spec.Pool; p == "" || p == pool {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&waiting.Items[i])})
		}
	}
	return out
}

// waitingIn lists the waiting claims of a namespace.
func (r *IPClaimReconciler) waitingIn(ctx context.Context, namespace string) []reconcile.Request {
	var waiting ipamv1alpha1.IPClaimList
	if err := r.List(ctx, &waiting, client.InNamespace(namespace), client.MatchingFields{indexWaiting: "true"}); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(waiting.Items))
	for i := range waiting.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&waiting.Items[i])})
	}
	return out
}
