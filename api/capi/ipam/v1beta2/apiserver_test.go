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

package v1beta2_test

import (
	"context"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	capiipam "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	"github.com/kipam/kipam/internal/testenv"
)

// Against a real API server with the vendored CRDs installed, objects
// written through kipam's types with a controller-runtime client are stored
// and read back as they were written; and a status patch computed from them
// leaves the fields they do not model alone.
func TestAgainstTheAPIServer(t *testing.T) {
	assets, err := testenv.Assets()
	if err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(testenv.Root, "config", "capi", "crd")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	if n := len(env.CRDs); n != 2 {
		t.Fatalf("installed %d CRDs from config/capi/crd, want 2", n)
	}
	scheme := runtime.NewScheme()
	if err := capiipam.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const ns = "default"

	t.Run("a claim, and its status", func(t *testing.T) {
		g := NewWithT(t)
		want := fullClaim()
		want.Namespace = ns
		claim := want.DeepCopy()
		claim.Status = capiipam.IPAddressClaimStatus{}
		g.Expect(c.Create(ctx, claim)).To(Succeed())

		base := claim.DeepCopy()
		claim.Status = *want.Status.DeepCopy()
		claim.Status.Conditions[0].ObservedGeneration = claim.Generation
		g.Expect(c.Status().Patch(ctx, claim, client.MergeFrom(base))).To(Succeed())

		got := &capiipam.IPAddressClaim{}
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(claim), got)).To(Succeed())
		g.Expect(got.Spec).To(Equal(want.Spec))
		g.Expect(equality.Semantic.DeepEqual(got.Status, claim.Status)).To(BeTrue(), "status read back: %+v", got.Status)
		g.Expect(got.Labels).To(Equal(want.Labels))

		list := &capiipam.IPAddressClaimList{}
		g.Expect(c.List(ctx, list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).To(ContainElement(HaveField("Name", want.Name)))
	})

	t.Run("addresses", func(t *testing.T) {
		for name, mutate := range map[string]func(*capiipam.IPAddressSpec){
			"ipv4":        nil,
			"ipv6-no-gw":  func(s *capiipam.IPAddressSpec) { s.Address, s.Prefix, s.Gateway = "2001:db8::a", ptr.To[int32](64), "" },
			"prefix-zero": func(s *capiipam.IPAddressSpec) { s.Prefix = ptr.To[int32](0) },
		} {
			g := NewWithT(t)
			want := fullAddress()
			want.Name, want.Namespace = name, ns
			want.Spec.ClaimRef.Name = name
			if mutate != nil {
				mutate(&want.Spec)
			}
			g.Expect(c.Create(ctx, want.DeepCopy())).To(Succeed(), name)
			got := &capiipam.IPAddress{}
			g.Expect(c.Get(ctx, client.ObjectKeyFromObject(want), got)).To(Succeed())
			g.Expect(got.Spec).To(Equal(want.Spec), name)
		}
		list := &capiipam.IPAddressList{}
		NewWithT(t).Expect(c.List(ctx, list, client.InNamespace(ns))).To(Succeed())
		NewWithT(t).Expect(list.Items).To(HaveLen(3))
	})

	// A provider still on v1beta1 conditions writes status.deprecated, which
	// these types do not model: a merge patch from them keeps it, and an
	// update of the status would drop it. kipam patches.
	t.Run("status.deprecated survives a patch, not an update", func(t *testing.T) {
		g := NewWithT(t)
		claim := fullClaim()
		claim.Name, claim.Namespace = "keeps-deprecated", ns
		claim.Status = capiipam.IPAddressClaimStatus{}
		g.Expect(c.Create(ctx, claim)).To(Succeed())

		deprecated := []byte(`{"status":{"deprecated":{"v1beta1":{"conditions":[{"type":"Ready","status":"False","severity":"Warning",` +
			`"lastTransitionTime":"2026-08-01T10:00:00Z","reason":"PoolExhausted","message":"written by a v1beta1 provider"}]}}}}`)
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(capiipam.GroupVersion.WithKind("IPAddressClaim"))
		u.SetNamespace(ns)
		u.SetName(claim.Name)
		g.Expect(c.Status().Patch(ctx, u, client.RawPatch(types.MergePatchType, deprecated))).To(Succeed())
		conditionsOf := func() []any {
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(u.GroupVersionKind())
			g.Expect(c.Get(ctx, client.ObjectKeyFromObject(claim), got)).To(Succeed())
			cs, _, err := unstructured.NestedSlice(got.Object, "status", "deprecated", "v1beta1", "conditions")
			g.Expect(err).NotTo(HaveOccurred())
			return cs
		}
		g.Expect(conditionsOf()).To(HaveLen(1))

		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(claim), claim)).To(Succeed())
		base := claim.DeepCopy()
		claim.Status.AddressRef.Name = claim.Name
		ready := metav1.Condition{Type: capiipam.ReadyCondition, Status: metav1.ConditionTrue, Reason: "Allocated", LastTransitionTime: transition}
		claim.Status.Conditions = []metav1.Condition{ready}
		g.Expect(c.Status().Patch(ctx, claim, client.MergeFrom(base))).To(Succeed())
		g.Expect(conditionsOf()).To(HaveLen(1), "a merge patch from our types dropped status.deprecated")

		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(claim), claim)).To(Succeed())
		g.Expect(claim.Status.AddressRef.Name).To(Equal(claim.Name))
		g.Expect(c.Status().Update(ctx, claim)).To(Succeed())
		g.Expect(conditionsOf()).To(BeEmpty(), "an update from our types replaces the whole status")
	})
}
