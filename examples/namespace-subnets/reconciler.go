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

package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// The Namespace label that asks for a subnet, and the annotations where the
// controller says what came of it.
const (
	// LabelPool on a Namespace names the IPPool its subnet comes from.
	LabelPool = "kipam.dev/subnet"
	// AnnotationCIDR on a Namespace is the CIDR its IPClaim holds; absent
	// while it holds none.
	AnnotationCIDR = "kipam.dev/subnet-cidr"
	// AnnotationReason on a Namespace is the outcome of the last
	// reconcile, a PascalCase reason like a condition's (Reason* below).
	AnnotationReason = "kipam.dev/subnet-reason"
	// AnnotationMessage on a Namespace says that outcome in words: the
	// CIDR and pool, or kipam's denial.
	AnnotationMessage = "kipam.dev/subnet-message"
	// LabelManagedBy on an IPClaim marks the claims this controller made.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedBy is LabelManagedBy's value.
	ManagedBy = "namespace-subnets"
)

// Reasons, in AnnotationReason and in the Namespace's events, besides
// kipam's own ipamv1alpha1.ReasonAllocated, ReasonPending,
// ReasonPoolExhausted, ReasonNamespaceLimit, ReasonLedgerFull and
// ReasonQueued, which mean here what they mean there.
const (
	// ReasonPoolNotOpen: the pool does not exist or does not admit the
	// namespace (kipam does not say which, so that tenants learn nothing
	// of pools closed to them).
	ReasonPoolNotOpen = "PoolNotOpen"
	// ReasonInvalid: kipam refused the claim as invalid for another reason
	// (a prefix length the pool cannot hold, a pool being deleted).
	ReasonInvalid = "Invalid"
	// ReasonForbidden: a 403 this controller does not recognise, e.g. its
	// RBAC does not allow creating IPClaims.
	ReasonForbidden = "Forbidden"
	// ReasonClaimNotOwned: an IPClaim of the controller's name exists in
	// the namespace and is not controlled by the Namespace.
	ReasonClaimNotOwned = "ClaimNotOwned"
	// ReasonPoolChanged: the label names another pool than the one the
	// claim draws from (a claim's pool is immutable).
	ReasonPoolChanged = "PoolChanged"
)

// EventRecorder records events; the manager's recorder satisfies it.
type EventRecorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// Reconciler gives each Namespace labelled LabelPool one IPClaim from that
// pool, controlled by the Namespace, and records its CIDR, or why it has
// none, on the Namespace.
type Reconciler struct {
	client.Client
	Recorder EventRecorder
	// ClaimName is the name of the IPClaim in each namespace.
	ClaimName string
	// PrefixLength is the length of the prefix to claim; 0 takes the
	// pool's defaultPrefixLength.
	PrefixLength int32
	// Wait creates claims with whenExhausted: Wait: kipam creates them
	// without a CIDR when the pool is full and binds them when space frees.
	Wait bool
	// Backoff spaces the retries of a denied create, per namespace.
	Backoff workqueue.TypedRateLimiter[reconcile.Request]
}

// SetupWithManager registers the controller: it watches Namespaces (their
// creation and label changes, not the annotations it writes itself) and
// the IPClaims they control, so that a claim kipam binds, or one deleted
// by hand, wakes its Namespace.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("namespace-subnets").
		For(&corev1.Namespace{}, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Owns(&ipamv1alpha1.IPClaim{}).
		Complete(r)
}

// Reconcile makes sure the Namespace's IPClaim exists and its outcome is
// recorded on the Namespace.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ns corev1.Namespace
	if err := r.Get(ctx, req.NamespacedName, &ns); err != nil {
		if apierrors.IsNotFound(err) {
			r.Backoff.Forget(req)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	pool := ns.Labels[LabelPool]
	if pool == "" || ns.DeletionTimestamp != nil {
		// Nothing to undo: a claim is never deleted by this controller.
		// A deleted Namespace takes its claim with it (the namespace
		// controller deletes its contents, the garbage collector its
		// dependents), and kipam's finalizer on the claim releases the
		// prefix; a Namespace that loses the label keeps its subnet.
		r.Backoff.Forget(req)
		return ctrl.Result{}, nil
	}
	var claim ipamv1alpha1.IPClaim
	err := r.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: r.ClaimName}, &claim)
	switch {
	case apierrors.IsNotFound(err):
		return r.create(ctx, req, &ns, pool)
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("reading IPClaim %s/%s: %w", ns.Name, r.ClaimName, err)
	}
	r.Backoff.Forget(req)
	return ctrl.Result{}, r.observe(ctx, &ns, &claim, pool)
}

// create creates the Namespace's claim and records the CIDR that kipam's
// webhook put in the object create returns, or why kipam denied it.
func (r *Reconciler) create(ctx context.Context, req ctrl.Request, ns *corev1.Namespace, pool string) (ctrl.Result, error) {
	claim := &ipamv1alpha1.IPClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name:      r.ClaimName,
			Namespace: ns.Name,
			Labels:    map[string]string{LabelManagedBy: ManagedBy},
		},
		Spec: ipamv1alpha1.IPClaimSpec{Pool: pool},
	}
	if r.PrefixLength > 0 {
		claim.Spec.PrefixLength = ptr.To(r.PrefixLength)
	}
	if r.Wait {
		claim.Spec.WhenExhausted = ipamv1alpha1.Wait
	}
	// A namespaced object may have a cluster-scoped owner. The controller
	// reference is how the claim's events find their Namespace (Owns), and
	// lets the garbage collector delete a claim that outlives it.
	if err := controllerutil.SetControllerReference(ns, claim, r.Scheme()); err != nil {
		return ctrl.Result{}, err
	}
	err := r.Create(ctx, claim)
	if err == nil {
		r.Backoff.Forget(req)
		// kipam allocates in its admission webhook: the object create
		// returns carries spec.cidr, so there is nothing to read again.
		if claim.Spec.CIDR != "" {
			return ctrl.Result{}, r.allocated(ctx, ns, claim)
		}
		return ctrl.Result{}, r.pending(ctx, ns, claim)
	}
	if apierrors.IsAlreadyExists(err) {
		// The cache has not seen it yet; its watch event brings it.
		return ctrl.Result{}, nil
	}
	reason, message, ok := denial(err)
	if !ok {
		return ctrl.Result{}, fmt.Errorf("creating IPClaim %s/%s: %w", ns.Name, r.ClaimName, err)
	}
	// A denial is an outcome, not a failure of the reconcile: it is
	// recorded and retried later, not logged as an error. The event says
	// the same words at each retry, so that they make one series.
	delay := r.Backoff.When(req)
	logf.FromContext(ctx).Info("kipam denied the claim", "pool", pool, "reason", reason, "message", message, "retryIn", delay)
	r.Recorder.Eventf(ns, nil, corev1.EventTypeWarning, reason, "CreateIPClaim", "%s", message)
	if err := r.record(ctx, ns, "", reason, message); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: delay}, nil
}

// observe records what the Namespace's existing claim holds.
func (r *Reconciler) observe(ctx context.Context, ns *corev1.Namespace, claim *ipamv1alpha1.IPClaim, pool string) error {
	if !metav1.IsControlledBy(claim, ns) {
		return r.report(ctx, ns, "", ReasonClaimNotOwned, fmt.Sprintf(
			"IPClaim %s/%s exists and is not controlled by this Namespace: it is left alone; "+
				"delete or rename it to get a subnet from pool %s", ns.Name, claim.Name, pool))
	}
	if claim.Spec.Pool != pool {
		return r.report(ctx, ns, claim.Spec.CIDR, ReasonPoolChanged, fmt.Sprintf(
			"the Namespace asks for pool %s, but its IPClaim %s holds %s from pool %s and a claim's pool cannot change: "+
				"delete the claim (kubectl delete ipclaim -n %s %s) to get a subnet from pool %s",
			pool, claim.Name, orNothing(claim.Spec.CIDR), claim.Spec.Pool, ns.Name, claim.Name, pool))
	}
	if claim.Spec.CIDR != "" {
		return r.allocated(ctx, ns, claim)
	}
	return r.pending(ctx, ns, claim)
}

// allocated records the claim's CIDR on the Namespace.
func (r *Reconciler) allocated(ctx context.Context, ns *corev1.Namespace, claim *ipamv1alpha1.IPClaim) error {
	return r.report(ctx, ns, claim.Spec.CIDR, ipamv1alpha1.ReasonAllocated,
		fmt.Sprintf("IPClaim %s holds %s from pool %s", claim.Name, claim.Spec.CIDR, claim.Spec.Pool))
}

// pending records that the claim waits for space, in kipam's words once
// kipam has said them in the claim's Ready condition.
func (r *Reconciler) pending(ctx context.Context, ns *corev1.Namespace, claim *ipamv1alpha1.IPClaim) error {
	reason := ipamv1alpha1.ReasonPending
	message := fmt.Sprintf("IPClaim %s waits for space in pool %s", claim.Name, claim.Spec.Pool)
	if c := meta.FindStatusCondition(claim.Status.Conditions, ipamv1alpha1.ConditionReady); c != nil && c.Status != metav1.ConditionTrue {
		reason, message = c.Reason, fmt.Sprintf("IPClaim %s: %s", claim.Name, c.Message)
	}
	return r.report(ctx, ns, "", reason, message)
}

// report records an outcome on the Namespace and, when its reason or CIDR
// changed, an event: Normal for a subnet held or awaited, Warning for the
// rest.
func (r *Reconciler) report(ctx context.Context, ns *corev1.Namespace, cidr, reason, message string) error {
	before := ns.Annotations[AnnotationReason] + " " + ns.Annotations[AnnotationCIDR]
	if err := r.record(ctx, ns, cidr, reason, message); err != nil || before == reason+" "+cidr {
		return err
	}
	kind := corev1.EventTypeWarning
	if reason == ipamv1alpha1.ReasonAllocated || reason == ipamv1alpha1.ReasonPending {
		kind = corev1.EventTypeNormal
	}
	r.Recorder.Eventf(ns, nil, kind, reason, "ReconcileSubnet", "%s", message)
	return nil
}

// record patches the annotations on the Namespace, if they differ. An
// empty cidr removes AnnotationCIDR.
func (r *Reconciler) record(ctx context.Context, ns *corev1.Namespace, cidr, reason, message string) error {
	a := ns.Annotations
	if _, has := a[AnnotationCIDR]; has == (cidr != "") && a[AnnotationCIDR] == cidr &&
		a[AnnotationReason] == reason && a[AnnotationMessage] == message {
		return nil
	}
	base := ns.DeepCopy()
	if cidr == "" {
		delete(ns.Annotations, AnnotationCIDR)
	} else {
		metav1.SetMetaDataAnnotation(&ns.ObjectMeta, AnnotationCIDR, cidr)
	}
	metav1.SetMetaDataAnnotation(&ns.ObjectMeta, AnnotationReason, reason)
	metav1.SetMetaDataAnnotation(&ns.ObjectMeta, AnnotationMessage, message)
	// A merge patch of the annotations only: the labels, and anyone
	// else's annotations, are not this controller's to overwrite.
	if err := r.Patch(ctx, ns, client.MergeFrom(base)); err != nil {
		return fmt.Errorf("annotating Namespace %s: %w", ns.Name, err)
	}
	return nil
}

// denial reports whether err is kipam, or the API server, refusing the
// claim, with a reason and the message to show. kipam answers with the
// API's status codes and kipam's status causes: an exhausted pool, a
// namespace at its namespaceLimit, a full ledger and a queue of older
// waiting claims are all 403 Forbidden, told apart from each other and
// from an RBAC denial by the cause kipam puts in the status's details
// (type PoolExhausted, NamespaceLimit, LedgerFull or Queued;
// apierrors.HasStatusCause tells one); a pool that does not exist or does
// not admit the namespace is 422 Invalid with a FieldValueNotFound cause
// on spec.pool. Other errors (429 busy, a timeout, no kipam answering) are
// not denials: the caller retries them as errors.
func denial(err error) (reason, message string, ok bool) {
	var s apierrors.APIStatus
	if !errors.As(err, &s) {
		return "", "", false
	}
	status := s.Status()
	message = status.Message
	// The API server says which webhook spoke; the rest is kipam's.
	if _, after, found := strings.Cut(message, " denied the request: "); found {
		message = after
	}
	switch status.Code {
	case http.StatusForbidden:
		if status.Details != nil {
			for _, c := range status.Details.Causes {
				switch reason := string(c.Type); reason {
				case ipamv1alpha1.ReasonPoolExhausted, ipamv1alpha1.ReasonNamespaceLimit, ipamv1alpha1.ReasonLedgerFull, ipamv1alpha1.ReasonQueued:
					return reason, message, true
				}
			}
		}
		return ReasonForbidden, message, true
	case http.StatusUnprocessableEntity:
		if status.Details != nil {
			for _, c := range status.Details.Causes {
				if c.Field == "spec.pool" && c.Type == metav1.CauseTypeFieldValueNotFound {
					return ReasonPoolNotOpen, message, true
				}
			}
		}
		return ReasonInvalid, message, true
	}
	return "", "", false
}

func orNothing(cidr string) string {
	if cidr == "" {
		return "nothing yet"
	}
	return cidr
}
