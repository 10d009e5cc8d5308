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
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// kipam's cache keeps only a record of what kipam reads of claims
// (ipam.ClaimRecord), and of allocations a record of their spec
// (internal/controller, allocations);
// these specs show that what either leaves out is never written back.
var _ = Describe("What kipam's cache leaves out of claims and allocations", func() {
	It("survives kipam's writes to the claim: its status, its finalizer's removal", func() {
		p := createPool("10.253.0.0/28", nil)
		owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "owner-", Namespace: "default"}}
		Expect(k8sClient.Create(ctx, owner)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, owner))).To(Succeed()) })
		const hold = "example.com/hold"
		labels := map[string]string{"example.com/team": "a"}
		foreign := map[string]string{
			"example.com/note":                      "kept",
			corev1.LastAppliedConfigAnnotation:      `{"kind":"IPClaim","spec":{"pool":"` + p.Name + `"}}`,
			"example.com/" + fmt.Sprint(seq.Add(1)): "",
		}
		refs := []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}}
		c := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) {
			c.Labels = labels
			c.Annotations = foreign
			c.OwnerReferences = refs
			c.Finalizers = []string{hold}
		})
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		unchanged := func(g Gomega, c *ipamv1alpha1.IPClaim) {
			g.Expect(c.Labels).To(Equal(labels))
			for k, v := range foreign {
				g.Expect(c.Annotations).To(HaveKeyWithValue(k, v))
			}
			g.Expect(c.OwnerReferences).To(Equal(refs))
			g.Expect(c.Finalizers).To(ContainElement(hold))
		}

		By("kipam's status write and its IPAllocation")
		var alloc ipamv1alpha1.IPAllocation
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(meta.IsStatusConditionTrue(c.Status.Conditions, ipamv1alpha1.ConditionReady)).To(BeTrue())
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: c.Status.Allocation}, &alloc)).To(Succeed())
		}).Should(Succeed())
		unchanged(Default, c)
		Expect(c.Finalizers).To(ConsistOf(hold, ipamv1alpha1.ClaimFinalizer))
		Expect(alloc.Labels).To(Equal(map[string]string{ipamv1alpha1.LabelPool: p.Name, ipamv1alpha1.LabelClaimNamespace: "default"}),
			"the labels kipam keeps no record of stay on the allocation")

		By("kipam's release: its finalizer goes, the rest stays")
		Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(c.Finalizers).To(Equal([]string{hold}))
			g.Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(&alloc), &alloc))).To(BeTrue(), "its IPAllocation is gone")
		}).Should(Succeed())
		unchanged(Default, c)
		Expect(c.Annotations).To(HaveKey(ipam.EntryAnnotation), "kipam's own annotations are left too")

		patch := client.MergeFrom(c.DeepCopy())
		controllerutil.RemoveFinalizer(c, hold)
		Expect(k8sClient.Patch(ctx, c, patch)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c))
		}).Should(BeTrue())
	})
})
