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
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// The chaos suite saw transient failures answered 403 Forbidden, which
// clients take as final: the IPAllocation delete webhook "reading the
// holder" while the API server was down, the IPPool webhook "listing pools
// ... context canceled". Each webhook is driven here through
// controller-runtime's handler, registered as SetupWithManager registers
// it, against a reader that fails as the API server did.

func answerScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := ipamv1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// reader answers reads from objs, or every read with fail when it is set.
func reader(t *testing.T, s *runtime.Scheme, fail error, objs ...client.Object) client.Reader {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).WithIndex(&ipamv1alpha1.IPLedger{}, ipam.LedgerPoolField, ipam.LedgerPool).Build()
	if fail == nil {
		return c
	}
	return interceptor.NewClient(c, interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return fail
		},
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error { return fail },
	})
}

var (
	// apiServerDown is what a read gets while kube-apiserver is down.
	apiServerDown = &url.Error{Op: "Get", URL: "https://127.0.0.1:6443/apis/ipam.kipam.dev/v1alpha1", Err: syscall.ECONNREFUSED}
	// apiTimeout is what a read gets from an API server that gave up.
	apiTimeout = apierrors.NewTimeoutError("the server was unable to return a response in the time allotted", 0)
	// forbiddenToKipam is a read kipam's own RBAC refuses: kipam's
	// trouble, not the requester's.
	forbiddenToKipam = apierrors.NewForbidden(schema.GroupResource{Group: ipamv1alpha1.GroupVersion.Group, Resource: "ipclaims"}, "x",
		context.Canceled)
)

func review(t *testing.T, op admissionv1.Operation, obj, old runtime.Object) admission.Request {
	t.Helper()
	raw := func(o runtime.Object) runtime.RawExtension {
		if o == nil {
			return runtime.RawExtension{}
		}
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: b}
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "review", Operation: op, Object: raw(obj), OldObject: raw(old),
	}}
}

// expectCode runs wh on req and expects a denial with code whose message
// contains want.
func expectCode(t *testing.T, wh *admission.Webhook, req admission.Request, code int32, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := wh.Handle(ctx, req)
	if resp.Allowed {
		t.Fatalf("allowed; want a %d", code)
	}
	if resp.Result == nil || resp.Result.Code != code || !strings.Contains(resp.Result.Message, want) {
		t.Fatalf("answered %d %q; want %d with %q", resp.Result.Code, resp.Result.Message, code, want)
	}
}

func TestTransientFailuresAreRetryable(t *testing.T) {
	s := answerScheme(t)
	claim := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "u1"}}
	alloc := &ipamv1alpha1.IPAllocation{
		ObjectMeta: metav1.ObjectMeta{Name: "p-10.0.0.0-32"},
		Spec: ipamv1alpha1.IPAllocationSpec{Pool: "p", CIDR: "10.0.0.0/32",
			ClaimRef: ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: "ns", Name: "web", UID: "u1"}},
	}
	allocationWebhook := func(r client.Reader) *admission.Webhook {
		return admission.WithValidator(s, validator[*ipamv1alpha1.IPAllocation](&IPAllocationValidator{APIReader: r}))
	}
	poolWebhook := func(r client.Reader) *admission.Webhook {
		return admission.WithDefaulter(s, defaulter[*ipamv1alpha1.IPPool](&IPPoolAllocator{Reader: r, APIReader: r}),
			admission.DefaulterRemoveUnknownOrOmitableFields)
	}
	pool := &ipamv1alpha1.IPPool{TypeMeta: metav1.TypeMeta{APIVersion: ipamv1alpha1.GroupVersion.String(), Kind: "IPPool"},
		ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: ipamv1alpha1.IPPoolSpec{CIDR: "10.0.0.0/16"}}
	ledger := &ipamv1alpha1.IPLedger{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: ipamv1alpha1.IPLedgerSpec{Pool: "p"}}
	ledgerWebhook := func(r client.Reader) *admission.Webhook {
		return admission.WithValidator(s, validator[*ipamv1alpha1.IPLedger](&IPLedgerValidator{APIReader: r}))
	}

	for _, tc := range []struct {
		name string
		wh   *admission.Webhook
		req  admission.Request
		code int32
		want string
	}{
		{"an IPAllocation delete while the API server is down", allocationWebhook(reader(t, s, apiServerDown)),
			review(t, admissionv1.Delete, nil, alloc), http.StatusInternalServerError, "reading the holder of p-10.0.0.0-32"},
		{"an IPAllocation delete whose holder read timed out", allocationWebhook(reader(t, s, apiTimeout)),
			review(t, admissionv1.Delete, nil, alloc), http.StatusInternalServerError, "reading the holder"},
		{"an IPAllocation delete whose holder kipam may not read", allocationWebhook(reader(t, s, forbiddenToKipam)),
			review(t, admissionv1.Delete, nil, alloc), http.StatusInternalServerError, "reading the holder"},
		{"an IPPool create whose name check was cancelled", poolWebhook(reader(t, s, context.Canceled)),
			review(t, admissionv1.Create, pool, nil), http.StatusInternalServerError, "reading pool p: context canceled"},
		{"an IPPool create while the API server is down", poolWebhook(reader(t, s, apiServerDown)),
			review(t, admissionv1.Create, pool, nil), http.StatusInternalServerError, "connection refused"},
		{"an IPPool create the API server throttles", poolWebhook(reader(t, s, apierrors.NewTooManyRequests("slow down", 1))),
			review(t, admissionv1.Create, pool, nil), http.StatusTooManyRequests, "slow down"},
		{"an IPLedger delete while the API server is down", ledgerWebhook(reader(t, s, apiServerDown)),
			review(t, admissionv1.Delete, nil, ledger), http.StatusInternalServerError, "reading pool p of ledger p"},

		// Real refusals stay final.
		{"an IPAllocation delete under a live claim", allocationWebhook(reader(t, s, nil, claim)),
			review(t, admissionv1.Delete, nil, alloc), http.StatusForbidden, "held by the live IPClaim ns/web"},
		{"an IPPool create under a taken name", poolWebhook(reader(t, s, nil, pool.DeepCopy())),
			review(t, admissionv1.Create, pool, nil), http.StatusConflict, "already exists"},
	} {
		t.Run(tc.name, func(t *testing.T) { expectCode(t, tc.wh, tc.req, tc.code, tc.want) })
	}
}

func TestAnswer(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code int32
	}{
		{"kipam's refusal", forbidden("pool p is exhausted"), http.StatusForbidden},
		{"kipam's Invalid", invalid("IPClaim", "c", field.ErrorList{field.Invalid(field.NewPath("spec", "cidr"), "x", "bad")}), http.StatusUnprocessableEntity},
		{"kipam's busy pool", apierrors.NewTooManyRequests("pool busy", 1), http.StatusTooManyRequests},
		{"a plain error", context.DeadlineExceeded, http.StatusInternalServerError},
		{"a wrapped throttle", &wrapped{"listing pools", apierrors.NewTooManyRequests("slow down", 1)}, http.StatusTooManyRequests},
		{"a wrapped refusal of kipam's read", &wrapped{"listing pools", forbiddenToKipam}, http.StatusInternalServerError},
		{"a wrapped not-found", &wrapped{"reading the ledger", apierrors.NewNotFound(schema.GroupResource{Resource: "ipledgers"}, "p")},
			http.StatusInternalServerError},
		{"a busy ledger", &wrapped{"committing", ipam.ErrBusy}, http.StatusInternalServerError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := answer(tc.err)
			status, ok := err.(apierrors.APIStatus) //nolint:errorlint // answer returns the status itself
			if !ok {
				t.Fatalf("answer(%v) = %v, not an API status", tc.err, err)
			}
			if code := status.Status().Code; code != tc.code {
				t.Fatalf("answer(%v) has code %d; want %d", tc.err, code, tc.code)
			}
		})
	}
	if answer(nil) != nil {
		t.Fatal("answer(nil) is not nil")
	}
}

type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg + ": " + w.err.Error() }
func (w *wrapped) Unwrap() error { return w.err }
