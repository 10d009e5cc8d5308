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
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// kipam's webhook adds its release finalizer to a claim of a kipam pool,
// whatever finalizers it has, and leaves every other field and every
// other provider's claim as it came.
func TestAddressClaimFinalizerAddsOnlyKipamsFinalizer(t *testing.T) {
	kipamPool := `"poolRef": {"apiGroup": "ipam.kipam.dev", "kind": "IPPool", "name": "p"}`
	for _, tc := range []struct {
		name, claim string
		want        []string // nil: no patch
	}{
		{"no finalizers", `{"metadata": {"name": "m"}, "spec": {` + kipamPool + `, "clusterName": "c"}, "extra": {"kept": 1}}`,
			[]string{ipamv1alpha1.ClaimFinalizer}},
		{"another finalizer", `{"metadata": {"name": "m", "finalizers": ["example.com/keep"]}, "spec": {` + kipamPool + `}}`,
			[]string{"example.com/keep", ipamv1alpha1.ClaimFinalizer}},
		{"a null list", `{"metadata": {"name": "m", "finalizers": null}, "spec": {` + kipamPool + `}}`,
			[]string{ipamv1alpha1.ClaimFinalizer}},
		{"an empty list", `{"metadata": {"name": "m", "finalizers": []}, "spec": {` + kipamPool + `}}`,
			[]string{ipamv1alpha1.ClaimFinalizer}},
		{"kipam's already", `{"metadata": {"name": "m", "finalizers": ["` + ipamv1alpha1.ClaimFinalizer + `"]}, "spec": {` + kipamPool + `}}`, nil},
		{"another provider's pool", `{"metadata": {"name": "m"}, "spec": {"poolRef": {"apiGroup": "ipam.cluster.x-k8s.io", "kind": "InClusterIPPool", "name": "p"}}}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := AddressClaimFinalizer{Served: true}.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(tc.claim)}}})
			if !res.Allowed {
				t.Fatalf("denied: %v", res.Result)
			}
			if tc.want == nil {
				if len(res.Patches) != 0 {
					t.Fatalf("patched %v, want no change", res.Patches)
				}
				return
			}
			ops, err := json.Marshal(res.Patches)
			if err != nil {
				t.Fatal(err)
			}
			patch, err := jsonpatch.DecodePatch(ops)
			if err != nil {
				t.Fatal(err)
			}
			out, err := patch.Apply([]byte(tc.claim))
			if err != nil {
				t.Fatalf("the patch %s does not apply: %v", ops, err)
			}
			var got, before map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.claim), &before); err != nil {
				t.Fatal(err)
			}
			fs, _ := json.Marshal(got["metadata"].(map[string]any)["finalizers"])
			want, _ := json.Marshal(tc.want)
			if string(fs) != string(want) {
				t.Errorf("finalizers %s, want %s", fs, want)
			}
			delete(got["metadata"].(map[string]any), "finalizers")
			delete(before["metadata"].(map[string]any), "finalizers")
			g, _ := json.Marshal(got)
			b, _ := json.Marshal(before)
			if string(g) != string(b) {
				t.Errorf("the patch changed more than the finalizers:\n%s\nwant\n%s", g, b)
			}
		})
	}
}

// Where kipam did not serve IPAddressClaims at its start (Cluster API
// installed after it), its webhook adds no finalizer: no controller would
// remove it, and a claim deleted before kipam's next start would wait.
func TestAddressClaimFinalizerAddsNothingWhereClaimsAreNotServed(t *testing.T) {
	claim := `{"metadata": {"name": "m"}, "spec": {"poolRef": {"apiGroup": "ipam.kipam.dev", "kind": "IPPool", "name": "p"}}}`
	res := AddressClaimFinalizer{}.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(claim)}}})
	if !res.Allowed || len(res.Patches) != 0 {
		t.Fatalf("answered %v, %v; want allowed, no change", res.Allowed, res.Patches)
	}
}
