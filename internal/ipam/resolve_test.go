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

package ipam

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// TestCandidatesReadsPastAStaleCache: a pool or namespace created a moment
// ago is not in the cache yet; the resolver must ask the API server rather
// than deny the claim.
func TestCandidatesReadsPastAStaleCache(t *testing.T) {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = ipamv1alpha1.AddToScheme(s)
	pool := &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "blue-v6"}, Spec: ipamv1alpha1.IPPoolSpec{
		CIDR:              "2001:db8::/48",
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}},
	}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "blue", Labels: map[string]string{"team": "blue"}}}
	stale := fake.NewClientBuilder().WithScheme(s).Build()
	live := fake.NewClientBuilder().WithScheme(s).WithObjects(pool, ns).Build()
	claim := &ipamv1alpha1.IPClaim{Spec: ipamv1alpha1.IPClaimSpec{Pool: "blue-v6"}}

	r := &Resolver{Reader: stale, APIReader: live}
	got, err := r.Candidates(context.Background(), claim, "blue")
	if err != nil || len(got) != 1 || got[0].Name != "blue-v6" {
		t.Fatalf("Candidates = %v, %v; want blue-v6", got, err)
	}
	if _, err := r.Candidates(context.Background(), claim, "red"); err == nil {
		t.Fatal("a namespace the pool does not select was admitted")
	}
}
