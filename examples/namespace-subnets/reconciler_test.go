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
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// These tests drive Reconcile against controller-runtime's fake client,
// with kipam's webhook stood in for by a Create interceptor that answers
// as kipam does through the API server (the e2e spec in
// test/e2e/examples_test.go holds the controller to the real one).

const (
	exhaustedMessage = "pool full is exhausted: no free /28 left (largest free prefix /29) (set spec.whenExhausted: Wait to wait for space)"
	webhookPrefix    = `admission webhook "mipclaim-v1alpha1.kb.io" denied the request: `
	base             = time.Second
)

// webhookDenied is a webhook's error as the API server returns it: the
// webhook's status with the webhook named before its message.
func webhookDenied(err *apierrors.StatusError) *apierrors.StatusError {
	err.ErrStatus.Message = webhookPrefix + err.ErrStatus.Message
	return err
}

// denied is kipam's 403 with cause, as its webhook answers it.
func denied(cause, message string) error {
	return webhookDenied(&apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden, Message: message,
		Details: &metav1.StatusDetails{Group: "ipam.kipam.dev", Kind: "IPClaim", Causes: []metav1.StatusCause{{Type: metav1.CauseType(cause), Message: message, Field: "spec.pool"}}},
	}})
}

func exhausted(message string) error { return denied(ipamv1alpha1.ReasonPoolExhausted, message) }

func notOpen(pool, ns string) error {
	return webhookDenied(apierrors.NewInvalid(schema.GroupKind{Group: ipamv1alpha1.GroupVersion.Group, Kind: "IPClaim"}, "subnet",
		field.ErrorList{field.NotFound(field.NewPath("spec", "pool"), fmt.Sprintf("%s (no such pool is open to namespace %s)", pool, ns))}))
}

// kipam stands in for kipam's webhook: pool "open" hands out 10.0.0.16/28,
// "closed" admits no namespace, "full" has no room. Room makes "full"
// hand out 10.0.0.32/28.
type kipam struct {
	room        bool
	claimReads  int
	claimWrites int
}

func (k *kipam) funcs() interceptor.Funcs {
	return interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			claim, ok := obj.(*ipamv1alpha1.IPClaim)
			if !ok {
				return c.Create(ctx, obj, opts...)
			}
			k.claimWrites++
			switch {
			case claim.Spec.Pool == "open":
				claim.Spec.CIDR = "10.0.0.16/28"
			case claim.Spec.Pool == "closed":
				return notOpen("closed", claim.Namespace)
			case claim.Spec.Pool == "full" && k.room:
				claim.Spec.CIDR = "10.0.0.32/28"
			case claim.Spec.Pool == "full" && claim.Spec.WhenExhausted != ipamv1alpha1.Wait:
				return exhausted(exhaustedMessage)
			}
			return c.Create(ctx, obj, opts...)
		},
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*ipamv1alpha1.IPClaim); ok {
				k.claimReads++
			}
			return c.Get(ctx, key, obj, opts...)
		},
	}
}

type event struct{ kind, reason, note string }

type recorder struct{ events []event }

func (r *recorder) Eventf(_, _ runtime.Object, kind, reason, _, note string, args ...any) {
	r.events = append(r.events, event{kind, reason, fmt.Sprintf(note, args...)})
}

type harness struct {
	t      *testing.T
	c      client.Client
	r      *Reconciler
	rec    *recorder
	kipam  *kipam
	ns     string
	result ctrl.Result
}

func newHarness(t *testing.T, pool string, wait bool, objs ...client.Object) *harness {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := ipamv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", UID: types.UID("ns-uid"), Labels: map[string]string{}}}
	if pool != "" {
		ns.Labels[LabelPool] = pool
	}
	k := &kipam{}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(append(objs, ns)...).
		WithStatusSubresource(&ipamv1alpha1.IPClaim{}).WithInterceptorFuncs(k.funcs()).Build()
	rec := &recorder{}
	return &harness{t: t, c: c, rec: rec, kipam: k, ns: ns.Name, r: &Reconciler{
		Client: c, Recorder: rec, ClaimName: "subnet", PrefixLength: 28, Wait: wait,
		Backoff: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](base, 8*base),
	}}
}

func (h *harness) reconcile() {
	h.t.Helper()
	var err error
	h.result, err = h.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: h.ns}})
	if err != nil {
		h.t.Fatalf("Reconcile: %v", err)
	}
}

func (h *harness) namespace() *corev1.Namespace {
	h.t.Helper()
	var ns corev1.Namespace
	if err := h.c.Get(context.Background(), client.ObjectKey{Name: h.ns}, &ns); err != nil {
		h.t.Fatal(err)
	}
	return &ns
}

// claim returns the namespace's claim, nil when there is none.
func (h *harness) claim() *ipamv1alpha1.IPClaim {
	h.t.Helper()
	var claim ipamv1alpha1.IPClaim
	err := h.c.Get(context.Background(), client.ObjectKey{Namespace: h.ns, Name: "subnet"}, &claim)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return &claim
}

// expect checks the namespace's annotations: cidr ("" for absent), reason,
// and a message containing message.
func (h *harness) expect(cidr, reason, message string) {
	h.t.Helper()
	a := h.namespace().Annotations
	got, has := a[AnnotationCIDR]
	if has != (cidr != "") || got != cidr {
		h.t.Errorf("annotation %s = %q (present: %v), want %q", AnnotationCIDR, got, has, cidr)
	}
	if a[AnnotationReason] != reason {
		h.t.Errorf("annotation %s = %q, want %q", AnnotationReason, a[AnnotationReason], reason)
	}
	if !strings.Contains(a[AnnotationMessage], message) {
		h.t.Errorf("annotation %s = %q, want it to contain %q", AnnotationMessage, a[AnnotationMessage], message)
	}
}

func (h *harness) expectEvents(want ...event) {
	h.t.Helper()
	if len(h.rec.events) != len(want) {
		h.t.Fatalf("events %+v, want %d: %+v", h.rec.events, len(want), want)
	}
	for i, e := range h.rec.events {
		if e.kind != want[i].kind || e.reason != want[i].reason || !strings.Contains(e.note, want[i].note) {
			h.t.Errorf("event %d is %+v, want %+v (note containing)", i, e, want[i])
		}
	}
}

func TestAllocatesFromTheCreateResponse(t *testing.T) {
	h := newHarness(t, "open", false)
	h.reconcile()
	if h.kipam.claimReads != 1 {
		t.Errorf("%d reads of the claim, want 1 (the one that found none): the CIDR comes from the create response", h.kipam.claimReads)
	}
	if h.result != (ctrl.Result{}) {
		t.Errorf("result %+v, want none", h.result)
	}
	claim := h.claim()
	if claim == nil {
		t.Fatal("no claim created")
	}
	if claim.Spec.Pool != "open" || ptr.Deref(claim.Spec.PrefixLength, 0) != 28 || claim.Spec.WhenExhausted != "" {
		t.Errorf("claim spec %+v, want pool open, prefixLength 28 and no whenExhausted", claim.Spec)
	}
	if claim.Labels[LabelManagedBy] != ManagedBy {
		t.Errorf("claim labels %v, want %s=%s", claim.Labels, LabelManagedBy, ManagedBy)
	}
	owner := metav1.GetControllerOf(claim)
	if owner == nil || owner.Kind != "Namespace" || owner.APIVersion != "v1" || owner.Name != h.ns || owner.UID != "ns-uid" {
		t.Errorf("claim's controller %+v, want Namespace %s (uid ns-uid)", owner, h.ns)
	}
	h.expect("10.0.0.16/28", ipamv1alpha1.ReasonAllocated, "IPClaim subnet holds 10.0.0.16/28 from pool open")
	h.expectEvents(event{corev1.EventTypeNormal, ipamv1alpha1.ReasonAllocated, "10.0.0.16/28"})

	step := "reconciling again: nothing changes, no event, no create"
	h.reconcile()
	h.expect("10.0.0.16/28", ipamv1alpha1.ReasonAllocated, "10.0.0.16/28")
	h.expectEvents(event{corev1.EventTypeNormal, ipamv1alpha1.ReasonAllocated, "10.0.0.16/28"})
	if h.kipam.claimWrites != 1 {
		t.Errorf("%s: %d creates, want 1", step, h.kipam.claimWrites)
	}
}

func TestRetriesAnExhaustedPoolWithExponentialBackoff(t *testing.T) {
	h := newHarness(t, "full", false)
	for i, want := range []time.Duration{base, 2 * base, 4 * base, 8 * base, 8 * base} {
		h.reconcile()
		if h.result.RequeueAfter != want {
			t.Errorf("denial %d: RequeueAfter %s, want %s", i+1, h.result.RequeueAfter, want)
		}
	}
	if h.claim() != nil {
		t.Fatal("a claim exists though kipam denied it")
	}
	h.expect("", ipamv1alpha1.ReasonPoolExhausted, exhaustedMessage)
	if m := h.namespace().Annotations[AnnotationMessage]; strings.Contains(m, "admission webhook") {
		t.Errorf("message %q names the webhook: only kipam's words belong in it", m)
	}
	for i, e := range h.rec.events {
		if e != (event{corev1.EventTypeWarning, ipamv1alpha1.ReasonPoolExhausted, exhaustedMessage}) {
			t.Errorf("event %d is %+v, want a Warning PoolExhausted in kipam's words, the same at each retry", i, e)
		}
	}
	if len(h.rec.events) != 5 {
		t.Errorf("%d events, want one per denial, 5", len(h.rec.events))
	}

	h.kipam.room = true
	h.reconcile()
	h.expect("10.0.0.32/28", ipamv1alpha1.ReasonAllocated, "from pool full")
	if h.result != (ctrl.Result{}) {
		t.Errorf("result %+v once allocated, want none", h.result)
	}
	if got := h.rec.events[len(h.rec.events)-1]; got.kind != corev1.EventTypeNormal || got.reason != ipamv1alpha1.ReasonAllocated {
		t.Errorf("last event %+v, want Normal Allocated", got)
	}
	if n := h.r.Backoff.NumRequeues(ctrl.Request{NamespacedName: types.NamespacedName{Name: h.ns}}); n != 0 {
		t.Errorf("the backoff still counts %d denials after the allocation", n)
	}
}

func TestReportsAPoolThatDoesNotAdmitTheNamespace(t *testing.T) {
	h := newHarness(t, "closed", false)
	h.reconcile()
	if h.result.RequeueAfter != base {
		t.Errorf("RequeueAfter %s, want %s", h.result.RequeueAfter, base)
	}
	h.expect("", ReasonPoolNotOpen, `spec.pool: Not found: "closed (no such pool is open to namespace team-a)"`)
	h.expectEvents(event{corev1.EventTypeWarning, ReasonPoolNotOpen, "no such pool is open to namespace team-a"})
}

func TestWaitsForKipamToBindAWaitingClaim(t *testing.T) {
	h := newHarness(t, "full", true)
	h.reconcile()
	claim := h.claim()
	if claim == nil || claim.Spec.WhenExhausted != ipamv1alpha1.Wait || claim.Spec.CIDR != "" {
		t.Fatalf("claim %+v, want one with whenExhausted Wait and no cidr", claim)
	}
	if h.result != (ctrl.Result{}) {
		t.Errorf("result %+v, want none: kipam's bind wakes the namespace through the claim's watch", h.result)
	}
	h.expect("", ipamv1alpha1.ReasonPending, "IPClaim subnet waits for space in pool full")

	step := "kipam reports the claim waiting"
	meta.SetStatusCondition(&claim.Status.Conditions, metav1.Condition{Type: ipamv1alpha1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: ipamv1alpha1.ReasonPending, Message: "waiting for space in pool full, first in namespace team-a's queue"})
	if err := h.c.Status().Update(context.Background(), claim); err != nil {
		t.Fatal(step, err)
	}
	h.reconcile()
	h.expect("", ipamv1alpha1.ReasonPending, "IPClaim subnet: waiting for space in pool full, first in namespace team-a's queue")

	step = "kipam binds it"
	claim.Spec.CIDR = "10.0.0.32/28"
	if err := h.c.Update(context.Background(), claim); err != nil {
		t.Fatal(step, err)
	}
	h.reconcile()
	h.expect("10.0.0.32/28", ipamv1alpha1.ReasonAllocated, "IPClaim subnet holds 10.0.0.32/28 from pool full")
	h.expectEvents(
		event{corev1.EventTypeNormal, ipamv1alpha1.ReasonPending, "waits for space"},
		event{corev1.EventTypeNormal, ipamv1alpha1.ReasonAllocated, "10.0.0.32/28"},
	)
}

func TestLeavesAClaimItDoesNotControlAlone(t *testing.T) {
	theirs := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Name: "subnet", Namespace: "team-a"},
		Spec: ipamv1alpha1.IPClaimSpec{Pool: "open", CIDR: "10.0.0.48/28"}}
	h := newHarness(t, "open", false, theirs)
	h.reconcile()
	h.expect("", ReasonClaimNotOwned, "IPClaim team-a/subnet exists and is not controlled by this Namespace")
	if got := h.claim(); got.Spec.CIDR != "10.0.0.48/28" || len(got.OwnerReferences) != 0 {
		t.Errorf("the claim was changed: %+v", got)
	}
	if h.kipam.claimWrites != 0 {
		t.Errorf("%d creates, want none", h.kipam.claimWrites)
	}
}

func TestReportsALabelThatNamesAnotherPool(t *testing.T) {
	h := newHarness(t, "open", false)
	h.reconcile()
	ns := h.namespace()
	ns.Labels[LabelPool] = "other"
	if err := h.c.Update(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	h.expect("10.0.0.16/28", ReasonPoolChanged, "the Namespace asks for pool other, but its IPClaim subnet holds 10.0.0.16/28 from pool open")
	if h.claim().Spec.Pool != "open" {
		t.Error("the claim's pool changed")
	}
}

func TestLeavesUnlabelledNamespacesAlone(t *testing.T) {
	h := newHarness(t, "", false)
	h.reconcile()
	if h.claim() != nil || len(h.namespace().Annotations) != 0 || len(h.rec.events) != 0 {
		t.Errorf("an unlabelled namespace got a claim, annotations %v or events %v", h.namespace().Annotations, h.rec.events)
	}
}

func TestDenial(t *testing.T) {
	for _, tc := range []struct {
		name, reason, message string
		err                   error
	}{
		{"exhausted", ipamv1alpha1.ReasonPoolExhausted, exhaustedMessage, exhausted(exhaustedMessage)},
		{"namespace limit", ipamv1alpha1.ReasonNamespaceLimit, "", denied(ipamv1alpha1.ReasonNamespaceLimit,
			"namespace team-a holds 2 claims from pool p, which its spec.namespaceLimit.claims allows at most (set spec.whenExhausted: Wait to wait for space)")},
		{"ledger full", ipamv1alpha1.ReasonLedgerFull, "", denied(ipamv1alpha1.ReasonLedgerFull, "pool p cannot record another /28: the pool's root ledger holds 1048576 bytes of entries")},
		{"queued", ipamv1alpha1.ReasonQueued, "", denied(ipamv1alpha1.ReasonQueued,
			"1 older claims of namespace team-a wait for space in the same pools (the first is w): a new claim would take it before them")},
		{"RBAC", ReasonForbidden, `User "x" cannot create resource "ipclaims"`,
			apierrors.NewForbidden(schema.GroupResource{Group: "ipam.kipam.dev", Resource: "ipclaims"}, "subnet", errors.New(`User "x" cannot create resource "ipclaims"`))},
		{"not open", ReasonPoolNotOpen, `spec.pool: Not found: "p (no such pool is open to namespace team-a)"`, notOpen("p", "team-a")},
		{"invalid", ReasonInvalid, "spec.prefixLength", webhookDenied(apierrors.NewInvalid(schema.GroupKind{Group: "ipam.kipam.dev", Kind: "IPClaim"}, "subnet",
			field.ErrorList{field.Invalid(field.NewPath("spec", "prefixLength"), 28, "must lie between /48 and /128")}))},
		{"busy", "", "", apierrors.NewTooManyRequests("pool busy", 1)},
		{"not an API error", "", "", errors.New("connection refused")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason, message, ok := denial(tc.err)
			if ok != (tc.reason != "") || reason != tc.reason {
				t.Errorf("denial = %q, %v; want %q", reason, ok, tc.reason)
			}
			if !strings.Contains(message, tc.message) || strings.HasPrefix(message, "admission webhook") {
				t.Errorf("message %q, want kipam's words only, containing %q", message, tc.message)
			}
		})
	}
}

func TestCheckFlags(t *testing.T) {
	for _, tc := range []struct {
		name       string
		claim      string
		length     int
		base, max_ time.Duration
		want       string
	}{
		{"defaults", "subnet", 28, 5 * time.Second, 5 * time.Minute, ""},
		{"pool default", "subnet", 0, time.Second, time.Second, ""},
		{"bad name", "Subnet_1", 28, time.Second, time.Minute, "-claim-name"},
		{"too long", "subnet", 129, time.Second, time.Minute, "-prefix-length 129"},
		{"negative", "subnet", -1, time.Second, time.Minute, "-prefix-length -1"},
		{"no base", "subnet", 28, 0, time.Minute, "-retry-base 0s"},
		{"max below base", "subnet", 28, time.Minute, time.Second, "at most -retry-max 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkFlags(tc.claim, tc.length, tc.base, tc.max_)
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("checkFlags = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
