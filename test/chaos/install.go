//go:build chaos

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

package chaos

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kipam/kipam/internal/testenv"
)

// install puts kipam's CRDs, its webhook configurations (pointing at the
// round-robin proxy in front of the replicas, trusted through the run's
// CA), the namespaces and the chaos policies (unbound) into the cluster.
func install(ctx context.Context, c client.Client, root, lbAddr string, caPEM []byte) error {
	crds, err := testenv.ReadObjects(filepath.Join(root, "config", "crd", "bases"))
	if err != nil {
		return err
	}
	for _, u := range crds {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &crd); err != nil {
			return err
		}
		if err := c.Create(ctx, &crd); err != nil {
			return fmt.Errorf("creating CRD %s: %w", crd.Name, err)
		}
		if err := poll(ctx, 200*time.Millisecond, func(ctx context.Context) error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(&crd), &crd); err != nil {
				return err
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
			return fmt.Errorf("CRD %s is not established", crd.Name)
		}); err != nil {
			return err
		}
	}

	webhooks, err := testenv.ReadObjects(filepath.Join(root, "config", "webhook", "manifests.yaml"))
	if err != nil {
		return err
	}
	url := func(cc *admissionv1.WebhookClientConfig) {
		path := ptr.Deref(cc.Service.Path, "/")
		cc.Service = nil
		cc.URL = ptr.To("https://" + lbAddr + path)
		cc.CABundle = caPEM
	}
	for _, u := range webhooks {
		switch u.GetKind() {
		case "MutatingWebhookConfiguration":
			var m admissionv1.MutatingWebhookConfiguration
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &m); err != nil {
				return err
			}
			for i := range m.Webhooks {
				url(&m.Webhooks[i].ClientConfig)
			}
			if err := c.Create(ctx, &m); err != nil {
				return err
			}
		case "ValidatingWebhookConfiguration":
			var v admissionv1.ValidatingWebhookConfiguration
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &v); err != nil {
				return err
			}
			for i := range v.Webhooks {
				url(&v.Webhooks[i].ClientConfig)
			}
			if err := c.Create(ctx, &v); err != nil {
				return err
			}
		}
	}

	for _, ns := range append([]string{leaseNamespace, switchNamespace}, namespaces...) {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	return installPolicies(ctx, c)
}

// The chaos policies, and the switch that the release policy reads.
const (
	rejectCreatesPolicy = "chaos-reject-creates"
	// rejectCreatesMessage is what chaos-reject-creates says.
	rejectCreatesMessage = "chaos: refused after kipam's webhook allowed it"
	failReleasesPolicy   = "chaos-fail-releases"
	switchNamespace      = "chaos-system"
	switchName           = "chaos-switch"
)

// installPolicies creates the two ValidatingAdmissionPolicies, unbound:
// a fault binds one for a while.
//
// chaos-reject-creates refuses the create of a claim or carved pool whose
// generated name (c-…, dyn-…) ends in b, c, d or f: 4 of the 27
// characters generateName picks from, so about 15% of creates, after
// kipam's mutating webhook has committed their prefix (validating
// admission runs after mutating admission, and the API server has
// generated the name by then). The static pools' names (c4-b) are spared:
// a pool created again under its name would be refused for as long as the
// policy is bound.
//
// chaos-fail-releases refuses IPAllocation deletes and the claim updates
// that remove kipam's release finalizer while the ConfigMap switch says
// on. CEL has no randomness (and request has no uid), and a rule on the
// name would refuse the same object for ever; the harness flips the switch
// instead, so a share of attempts fail and kipam's retries get through.
func installPolicies(ctx context.Context, c client.Client) error {
	policies := []*admissionv1.ValidatingAdmissionPolicy{
		{
			ObjectMeta: metav1.ObjectMeta{Name: rejectCreatesPolicy},
			Spec: admissionv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr.To(admissionv1.Fail),
				MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionv1.RuleWithOperations{
						Operations: []admissionv1.OperationType{admissionv1.Create},
						Rule: admissionv1.Rule{APIGroups: []string{"ipam.kipam.dev"}, APIVersions: []string{"v1alpha1"},
							Resources: []string{"ipclaims", "ippools"}},
					},
				}}},
				Validations: []admissionv1.Validation{{
					Expression: "!object.metadata.name.matches('^(c|dyn)-.*[bcdf]$')",
					Message:    rejectCreatesMessage,
				}},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: failReleasesPolicy},
			Spec: admissionv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr.To(admissionv1.Fail),
				ParamKind:     &admissionv1.ParamKind{APIVersion: "v1", Kind: "ConfigMap"},
				MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{
					{RuleWithOperations: admissionv1.RuleWithOperations{
						Operations: []admissionv1.OperationType{admissionv1.Delete},
						Rule: admissionv1.Rule{APIGroups: []string{"ipam.kipam.dev"}, APIVersions: []string{"v1alpha1"},
							Resources: []string{"ipallocations"}},
					}},
					{RuleWithOperations: admissionv1.RuleWithOperations{
						Operations: []admissionv1.OperationType{admissionv1.Update},
						Rule: admissionv1.Rule{APIGroups: []string{"ipam.kipam.dev"}, APIVersions: []string{"v1alpha1"},
							Resources: []string{"ipclaims"}},
					}},
				}},
				MatchConditions: []admissionv1.MatchCondition{{
					Name: "release",
					Expression: "request.operation == 'DELETE' || " +
						"(has(oldObject.metadata.finalizers) && 'ipam.kipam.dev/release' in oldObject.metadata.finalizers && " +
						"!(has(object.metadata.finalizers) && 'ipam.kipam.dev/release' in object.metadata.finalizers))",
				}},
				Validations: []admissionv1.Validation{{
					Expression: "!has(params.data) || !('deny' in params.data) || params.data['deny'] != 'on'",
					Message:    "chaos: release refused for now, try again",
				}},
			},
		},
	}
	for _, p := range policies {
		if err := c.Create(ctx, p); err != nil {
			return fmt.Errorf("creating policy %s: %w", p.Name, err)
		}
	}
	return c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: switchNamespace, Name: switchName},
		Data: map[string]string{"deny": "off"}})
}

// bind creates (on) or deletes (off) the binding of policy, retrying
// through an API server that is being restarted.
func (in *injector) bind(ctx context.Context, policy string, on bool) error {
	b := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policy},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policy,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
		},
	}
	if policy == failReleasesPolicy {
		b.Spec.ParamRef = &admissionv1.ParamRef{Name: switchName, Namespace: switchNamespace,
			ParameterNotFoundAction: ptr.To(admissionv1.AllowAction)}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return poll(ctx, time.Second, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if on {
			err := in.c.Create(actx, b.DeepCopy())
			if apierrors.IsAlreadyExists(err) {
				return nil
			}
			return err
		}
		return client.IgnoreNotFound(in.c.Delete(actx, b.DeepCopy()))
	})
}

// setSwitch turns the release policy's switch on or off.
func (in *injector) setSwitch(ctx context.Context, on bool) error {
	v := "off"
	if on {
		v = "on"
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: switchNamespace, Name: switchName}}
	patch := []byte(fmt.Sprintf(`{"data":{"deny":%q}}`, v))
	return in.c.Patch(actx, cm, client.RawPatch("application/merge-patch+json", patch))
}
