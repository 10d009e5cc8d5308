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

package v1alpha1

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/metrics"
)

// +kubebuilder:webhook:path=/mutate-ipam-kipam-dev-v1alpha1-ipclaim,mutating=true,failurePolicy=fail,sideEffects=NoneOnDryRun,groups=ipam.kipam.dev,resources=ipclaims,verbs=create;update,versions=v1alpha1,name=mipclaim-v1alpha1.kb.io,admissionReviewVersions=v1,timeoutSeconds=15

// EventRecorder records events; the manager's recorder satisfies it.
type EventRecorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// IPClaimAllocator allocates a claim's prefix while the claim is created, so
// that the object the API server stores and returns carries spec.cidr. The
// prefix is committed to the pool's ledger before it answers, and only
// after every rule that could still deny the create has passed. On update
// it keeps spec.cidr, kipam's annotations and the release finalizer in
// place, so that re-applying a manifest without them is a no-op, and lets
// nobody but kipam set spec.cidr on a claim created without one.
type IPClaimAllocator struct {
	Resolver *ipam.Resolver
	Manager  *ipam.Manager
	Recorder EventRecorder
}

var _ admission.Defaulter[*ipamv1alpha1.IPClaim] = &IPClaimAllocator{}

// Default allocates on create and preserves the allocation on update.
func (a *IPClaimAllocator) Default(ctx context.Context, claim *ipamv1alpha1.IPClaim) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return err
	}
	switch req.Operation {
	case admissionv1.Create:
		return a.allocate(ctx, claim, req)
	case admissionv1.Update:
		return a.keepAllocation(ctx, claim, req)
	}
	return nil
}

// keepAllocation restores what an apply without kipam's fields would drop,
// keeps kipam's annotations as kipam set them, and denies setting
// spec.cidr on a claim that has none unless kipam bound it (see
// boundByKipam).
func (a *IPClaimAllocator) keepAllocation(ctx context.Context, claim *ipamv1alpha1.IPClaim, req admission.Request) error {
	var old ipamv1alpha1.IPClaim
	if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("decoding the old IPClaim: %v", err))
	}
	if claim.Spec.CIDR == "" {
		claim.Spec.CIDR = old.Spec.CIDR
	}
	if len(claim.Spec.CIDRs) == 0 {
		claim.Spec.CIDRs = old.Spec.CIDRs
	}
	switch pool, ok := old.Annotations[ipam.PoolAnnotation]; {
	case ok && old.Spec.CIDR != "":
		metav1.SetMetaDataAnnotation(&claim.ObjectMeta, ipam.PoolAnnotation, pool)
	case claim.Spec.CIDR == "":
		// A waiting claim has no pool yet: kipam's bind gives it one, with
		// its cidr, which boundByKipam checks against that pool's ledger.
		delete(claim.Annotations, ipam.PoolAnnotation)
	}
	binding := old.Spec.CIDR == "" && claim.Spec.CIDR != ""
	for _, key := range []string{ipam.EntryAnnotation, ipam.SecondaryPoolAnnotation, ipam.FallbackAnnotation} {
		if binding && key == ipam.SecondaryPoolAnnotation {
			// Given with the cidrs by kipam's bind of a waiting dual-stack
			// claim, which boundByKipam checks against that pool's ledger.
			continue
		}
		if v, ok := old.Annotations[key]; ok {
			metav1.SetMetaDataAnnotation(&claim.ObjectMeta, key, v)
		} else {
			delete(claim.Annotations, key)
		}
	}
	if controllerutil.ContainsFinalizer(&old, ipamv1alpha1.ClaimFinalizer) && claim.DeletionTimestamp == nil {
		controllerutil.AddFinalizer(claim, ipamv1alpha1.ClaimFinalizer)
	}
	if binding || (len(old.Spec.CIDRs) == 0 && len(claim.Spec.CIDRs) > 0) {
		return a.boundByKipam(ctx, &old, claim)
	}
	return nil
}

// boundByKipam allows an update that sets spec.cidr (and a dual-stack
// claim's spec.cidrs) on a claim created without one only when it binds
// what kipam committed for this claim: each pool's stored ledger records
// exactly that cidr for the claim's namespace with the claim's uid as its
// entry ID, which only the claim controller commits (for a waiting claim)
// and no user can write. So a tenant cannot take space from a pool closed
// to it, skip the Wait queue, or adopt another claim's entry.
func (a *IPClaimAllocator) boundByKipam(ctx context.Context, old, claim *ipamv1alpha1.IPClaim) error {
	forbidden := field.Forbidden(field.NewPath("spec", "cidr"),
		"only kipam sets the cidr of a claim created without one (it binds a waiting claim as space frees); "+
			"to ask for a specific prefix, create a new claim with spec.cidr")
	holdings, want := ipam.Holdings(claim), 1
	if ipam.DualStack(claim) {
		want = 2
	}
	if old.Spec.CIDR != "" || len(holdings) != want || (want == 1 && len(claim.Spec.CIDRs) > 0) {
		// cidrs set apart from a bind, or not the bind's shape: a
		// single-stack claim has no cidrs, a dual-stack one is bound with
		// both, primary first.
		return claimError(claim, forbidden)
	}
	for _, h := range holdings {
		cidr, err := netip.ParsePrefix(h.CIDR)
		pool := h.Pool
		if pool == "" && !ipam.DualStack(claim) {
			pool = claim.Spec.Pool
		}
		if err != nil || pool == "" {
			return claimError(claim, forbidden)
		}
		e, ok, err := ipam.LookupEntry(ctx, a.Resolver.APIReader, pool, cidr)
		if err != nil {
			return err
		}
		if !ok || !e.Is(ipam.ClaimHolder(old.Namespace), string(old.UID)) {
			return claimError(claim, forbidden)
		}
	}
	return nil
}

func (a *IPClaimAllocator) allocate(ctx context.Context, claim *ipamv1alpha1.IPClaim, req admission.Request) error {
	namespace := req.Namespace
	dryRun := req.DryRun != nil && *req.DryRun
	// The entry ID and the pool are kipam's to give: a user's would let
	// the claim name another claim's entry, or another pool's ledger.
	delete(claim.Annotations, ipam.EntryAnnotation)
	delete(claim.Annotations, ipam.PoolAnnotation)
	delete(claim.Annotations, ipam.SecondaryPoolAnnotation)
	delete(claim.Annotations, ipam.FallbackAnnotation)
	// Every rule that can still deny the create runs before anything is
	// committed: what the API server refuses after this webhook allowed it
	// holds a prefix until the orphan sweep finds it.
	if errs := ValidateClaimCreate(claim); len(errs) > 0 {
		return invalid("IPClaim", claimName(claim), errs)
	}
	if errs := ValidateFamilies(claim); len(errs) > 0 {
		return invalid("IPClaim", claimName(claim), errs)
	}
	if err := a.notExisting(ctx, claim, namespace); err != nil {
		return err
	}
	if ipam.DualStack(claim) {
		return a.allocateDual(ctx, claim, namespace, dryRun)
	}
	id := ipam.NewEntryID()
	p, pool, err := a.allocateFrom(ctx, claim, namespace, id, dryRun)
	if err != nil || pool == nil {
		return err
	}
	claim.Spec.CIDR = p.String()
	metav1.SetMetaDataAnnotation(&claim.ObjectMeta, ipam.PoolAnnotation, pool.Name)
	metav1.SetMetaDataAnnotation(&claim.ObjectMeta, ipam.EntryAnnotation, id)
	controllerutil.AddFinalizer(claim, ipamv1alpha1.ClaimFinalizer)
	logf.FromContext(ctx).V(1).Info("allocated", "pool", pool.Name, "cidr", p, "dryRun", dryRun)
	return nil
}

// allocateFrom commits one prefix for a single-stack claim (or one family
// of a dual-stack one, FamilyView) from the first of its candidate pools
// that has room, as entry id, and returns it with its pool. A claim that
// waits (whenExhausted: Wait) gets the release finalizer and no pool. An
// error is the denial to return; one that says the claim does not fit
// (no pool open to it, exhaustion, a pool being deleted, its namespace's
// queue) is an *unfitError, which a PreferDualStack claim falls back on.
func (a *IPClaimAllocator) allocateFrom(ctx context.Context, claim *ipamv1alpha1.IPClaim, namespace, id string, dryRun bool) (netip.Prefix, *ipamv1alpha1.IPPool, error) {
	var none netip.Prefix
	pools, err := a.Resolver.Candidates(ctx, claim, namespace)
	var fe *field.Error
	if errors.As(err, &fe) {
		return none, nil, &unfitError{claimError(claim, err)}
	}
	if err != nil {
		return none, nil, err
	}
	holder := ipam.ClaimHolder(namespace)
	wait := claim.Spec.WhenExhausted == ipamv1alpha1.Wait
	if claim.Spec.CIDR == "" {
		// A claim is served after every older claim of its namespace that
		// waits on the same pools (a claim asking for one exact prefix, a
		// restore, takes it if it is free).
		ahead, err := ipam.Ahead(ctx, a.Resolver.Reader, claim, namespace)
		if err != nil {
			return none, nil, fmt.Errorf("listing waiting claims: %w", err)
		}
		if len(ahead) > 0 {
			if !dryRun {
				counter := metrics.ClaimsDenied
				if wait {
					counter = metrics.ClaimsQueued
				}
				counter.WithLabelValues(pools[0].Name, ipamv1alpha1.ReasonQueued).Inc()
			}
			if wait {
				controllerutil.AddFinalizer(claim, ipamv1alpha1.ClaimFinalizer)
				return none, nil, nil // the claim controller binds it in its turn
			}
			msg := fmt.Sprintf("%d older claims of namespace %s wait for space in the same pools (the first is %s): "+
				"a new claim would take it before them (set spec.whenExhausted: Wait to queue behind them)", len(ahead), namespace, ahead[0].Name)
			return none, nil, &unfitError{forbidden(msg, metav1.StatusCause{Type: ipamv1alpha1.ReasonQueued, Message: msg, Field: "spec.pool"})}
		}
	}
	// refusal is why one pool had no room for the claim: said to the user
	// with the other pools' reasons, counted, and reported on the pool.
	type refusal struct {
		pool                              *ipamv1alpha1.IPPool
		bits                              int
		metricReason, eventReason, detail string
	}
	var (
		refusals []refusal
		messages []string
		never    []string
		deleting []string
	)
	refuse := func(pool *ipamv1alpha1.IPPool, r ipam.Request, metricReason, eventReason, message, detail string) {
		if err := ipam.NeverFits(r); err != nil {
			never = append(never, err.Error())
		}
		messages = append(messages, message)
		refusals = append(refusals, refusal{pool, r.Bits, metricReason, eventReason, detail})
	}
	for _, pool := range pools {
		r, err := ipam.RequestFor(claim, pool, holder, dryRun)
		if err != nil {
			if len(pools) > 1 {
				continue // a selector may match pools this claim does not fit
			}
			return none, nil, claimError(claim, err)
		}
		r.ID = id
		p, err := a.Manager.Allocate(ctx, r)
		var ex *allocator.ExhaustedError
		reason, full := ipam.Full(err)
		switch {
		case errors.As(err, &ex):
			// err, not ex: it may say what the pool retains for the claims
			// that released it, and when that frees.
			refuse(pool, r, "Exhausted", ipamv1alpha1.ReasonPoolExhausted, fmt.Sprintf("pool %s is exhausted: %s", pool.Name, err.Error()), err.Error())
			continue
		case full:
			// Full in the way that matters to the claim: this pool
			// cannot take it until a release there.
			refuse(pool, r, reason, reason, err.Error(), err.Error())
			continue
		case errors.Is(err, ipam.ErrPoolDeleted):
			if len(pools) > 1 {
				deleting = append(deleting, pool.Name)
				continue
			}
			return none, nil, &unfitError{claimError(claim, field.Forbidden(field.NewPath("spec", "pool"), fmt.Sprintf("pool %s is being deleted: it takes no new claims", pool.Name)))}
		case errors.Is(err, ipam.ErrBusy):
			return none, nil, apierrors.NewTooManyRequests(err.Error(), 1)
		case err != nil:
			return none, nil, claimError(claim, ipam.ClaimError(err, r))
		}
		return p, pool, nil
	}
	if len(refusals) == 0 {
		msg := "no matching pool can serve this claim"
		if len(deleting) > 0 {
			msg += fmt.Sprintf(" (%s being deleted)", strings.Join(deleting, ", "))
		}
		return none, nil, &unfitError{claimError(claim, field.Invalid(field.NewPath("spec", "poolSelector"), claim.Spec.PoolSelector, msg))}
	}
	if len(never) == len(refusals) {
		// Waiting would be for ever: no release can make room.
		path, value := field.NewPath("spec", "prefixLength"), any(refusals[0].bits)
		if claim.Spec.CIDR != "" {
			path, value = field.NewPath("spec", "cidr"), claim.Spec.CIDR
		}
		return none, nil, claimError(claim, field.Invalid(path, value, strings.Join(never, "; ")))
	}
	for _, f := range refusals {
		if dryRun {
			break
		}
		if wait {
			metrics.ClaimsQueued.WithLabelValues(f.pool.Name, f.metricReason).Inc()
			a.Recorder.Eventf(f.pool, nil, corev1.EventTypeNormal, ipamv1alpha1.ReasonPending, "Allocate",
				"a /%d for a claim in namespace %s waits for space: %s", f.bits, namespace, f.detail)
			continue
		}
		metrics.ClaimsDenied.WithLabelValues(f.pool.Name, f.metricReason).Inc()
		a.Recorder.Eventf(f.pool, nil, corev1.EventTypeWarning, f.eventReason, "Allocate",
			"denied a /%d to a claim in namespace %s: %s", f.bits, namespace, f.detail)
	}
	if wait {
		// Created without a prefix; the claim controller binds it, in its
		// namespace's order, when space frees up.
		controllerutil.AddFinalizer(claim, ipamv1alpha1.ClaimFinalizer)
		return none, nil, nil
	}
	causes := make([]metav1.StatusCause, 0, len(refusals))
	for _, f := range refusals {
		causes = append(causes, metav1.StatusCause{Type: metav1.CauseType(f.eventReason), Message: fmt.Sprintf("pool %s: %s", f.pool.Name, f.detail), Field: "spec.pool"})
	}
	return none, nil, &unfitError{forbidden(strings.Join(messages, "; ")+waitHint, causes...)}
}

// waitHint ends an exhaustion denial of a claim that could wait instead.
const waitHint = " (set spec.whenExhausted: Wait to wait for space)"

// forbidden is the API's 403 with message, and kipam's reasons for it as
// the status's causes (type PoolExhausted, NamespaceLimit, LedgerFull or
// Queued), so that a client tells them apart from each other and from an
// RBAC denial without reading the message: apierrors.HasStatusCause.
func forbidden(message string, causes ...metav1.StatusCause) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusForbidden,
		Reason:  metav1.StatusReasonForbidden,
		Message: message,
		Details: &metav1.StatusDetails{Group: ipamv1alpha1.GroupVersion.Group, Kind: "IPClaim", Causes: causes},
	}}
}

// notExisting answers AlreadyExists, as the API server would, for a claim
// whose name is taken: such a create (a controller that creates on every
// reconcile and ignores that error) must not take a prefix each time. The
// cache tells first; a name it holds is confirmed live, since a claim
// deleted a moment ago must not make its successor fail. A claim the cache
// has not seen yet gets a prefix, which the orphan sweep releases when the
// API server refuses the create.
func (a *IPClaimAllocator) notExisting(ctx context.Context, claim *ipamv1alpha1.IPClaim, namespace string) error {
	if claim.Name == "" {
		return nil // generateName: the API server names it after admission
	}
	key := client.ObjectKey{Namespace: namespace, Name: claim.Name}
	var cur ipamv1alpha1.IPClaim
	err := a.Resolver.Reader.Get(ctx, key, &cur)
	if err == nil {
		err = a.Resolver.APIReader.Get(ctx, key, &cur)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("reading claim %s: %w", key, err)
	}
	return apierrors.NewAlreadyExists(schema.GroupResource{Group: ipamv1alpha1.GroupVersion.Group, Resource: "ipclaims"}, claim.Name)
}

// claimName is how errors name a claim that may have no name yet.
func claimName(claim *ipamv1alpha1.IPClaim) string {
	if claim.Name == "" {
		return claim.GenerateName // the API server names it after admission
	}
	return claim.Name
}

// claimError turns a field error into the API's Invalid error for claim.
func claimError(claim *ipamv1alpha1.IPClaim, err error) error {
	return fieldError("IPClaim", claimName(claim), err)
}

// fieldError turns a field error into the API's Invalid error for an
// object of a kipam kind; any other error is returned as it is.
func fieldError(kind, name string, err error) error {
	var fe *field.Error
	if errors.As(err, &fe) {
		return invalid(kind, name, field.ErrorList{fe})
	}
	return err
}
