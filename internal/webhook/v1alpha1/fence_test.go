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
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

func createNamespace(labels map[string]string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("fence-%d", seq.Add(1)), Labels: labels}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

var _ = Describe("A create that fails allocates nothing", func() {
	It("commits nothing for a claim whose name exists, however often it is created again", func() {
		p := createPool("10.160.0.0/16", nil)
		web := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](24) })
		Expect(k8sClient.Create(ctx, web)).To(Succeed())
		Eventually(func(g Gomega) {
			// The webhook reads the name from its cache.
			g.Expect(k8sClient.Create(ctx, newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Name = web.Name }), client.DryRunAll)).
				To(Satisfy(apierrors.IsAlreadyExists))
		}).Should(Succeed())
		want := ledgerOf(p.Name)
		Expect(want).To(Equal([]string{web.Spec.CIDR}))
		// A controller that creates on every reconcile and ignores
		// AlreadyExists.
		for i := range 1000 {
			again := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) {
				c.Name = web.Name
				c.Spec.PrefixLength = ptr.To[int32](24)
			})
			Expect(k8sClient.Create(ctx, again)).To(Satisfy(apierrors.IsAlreadyExists))
			Expect(ledgerOf(p.Name)).To(Equal(want), "after create %d", i+1)
		}
	})

	It("runs every rule that can deny a create before it commits, so a denial leaves the pool as it was", func() {
		p := createPool("10.161.0.0/24", nil)
		for _, bad := range []struct {
			field  string
			mutate func(*ipamv1alpha1.IPClaim)
		}{
			{"spec.pool", func(c *ipamv1alpha1.IPClaim) {
				c.Spec.PoolSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"any": "pool"}}
			}},
			{"spec.ttlSeconds", func(c *ipamv1alpha1.IPClaim) { c.Spec.TTLSeconds = ptr.To[int64](0) }},
			{"spec.whenExhausted", func(c *ipamv1alpha1.IPClaim) { c.Spec.WhenExhausted = "Later" }},
			{"spec.prefixLength", func(c *ipamv1alpha1.IPClaim) {
				c.Spec.IPFamily = ipamv1alpha1.IPv4
				c.Spec.PrefixLength = ptr.To[int32](40)
			}},
		} {
			err := k8sClient.Create(ctx, newClaim("default", p.Name, bad.mutate))
			Expect(err).To(MatchError(ContainSubstring(bad.field)))
			Expect(ledgerOf(p.Name)).To(BeEmpty(), "after a claim denied for %s", bad.field)
		}
	})
})

var _ = Describe("Every invalid input of the validation table", func() {
	It("is denied against the real API server before anything is committed", func() {
		p := createPool("10.167.0.0/24", nil)
		denied := 0
		for _, c := range claimCases {
			if len(c.want) == 0 {
				continue
			}
			spec := *c.spec.DeepCopy()
			if spec.Pool != "" && len(spec.Pool) < 64 {
				spec.Pool = p.Name // a pool that exists and has room
			}
			claim := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{GenerateName: "table-", Namespace: "default"}, Spec: spec}
			Expect(k8sClient.Create(ctx, claim)).NotTo(Succeed(), c.name)
			Expect(ledgerOf(p.Name)).To(BeEmpty(), "after %q was denied", c.name)
			denied++
		}
		Expect(denied).To(BeNumerically(">", 30))
	})
})

var _ = Describe("Only kipam gives a claim its cidr and entry", func() {
	It("denies setting spec.cidr on a waiting claim, and keeps kipam's annotations as kipam set them", func() {
		p := createPool("10.162.0.0/30", nil)
		var held []*ipamv1alpha1.IPClaim
		for range 4 {
			c := newClaim("default", p.Name, nil)
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			held = append(held, c)
		}
		waiting := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.WhenExhausted = ipamv1alpha1.Wait })
		createWaiting(waiting, "waiting for space")

		By("setting the cidr another claim holds, or any other")
		for _, cidr := range []string{held[0].Spec.CIDR, "10.162.0.4/32"} {
			patch := client.MergeFrom(waiting.DeepCopy())
			waiting.Spec.CIDR = cidr
			err := k8sClient.Patch(ctx, waiting, patch)
			Expect(err).To(MatchError(ContainSubstring("spec.cidr: Forbidden: only kipam sets the cidr of a claim created without one")))
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(waiting), waiting)).To(Succeed())
			Expect(waiting.Spec.CIDR).To(BeEmpty())
		}

		By("copying another claim's entry into a claim, or changing its own")
		id := held[0].Annotations[ipam.EntryAnnotation]
		Expect(id).NotTo(BeEmpty())
		patch := client.MergeFrom(waiting.DeepCopy())
		metav1.SetMetaDataAnnotation(&waiting.ObjectMeta, ipam.EntryAnnotation, id)
		Expect(k8sClient.Patch(ctx, waiting, patch)).To(Succeed())
		Expect(waiting.Annotations).NotTo(HaveKey(ipam.EntryAnnotation))
		patch = client.MergeFrom(held[1].DeepCopy())
		own := held[1].Annotations[ipam.EntryAnnotation]
		metav1.SetMetaDataAnnotation(&held[1].ObjectMeta, ipam.EntryAnnotation, id)
		metav1.SetMetaDataAnnotation(&held[1].ObjectMeta, ipam.PoolAnnotation, "another-pool")
		Expect(k8sClient.Patch(ctx, held[1], patch)).To(Succeed())
		Expect(held[1].Annotations).To(HaveKeyWithValue(ipam.EntryAnnotation, own))
		Expect(held[1].Annotations).To(HaveKeyWithValue(ipam.PoolAnnotation, p.Name))

		By("a create carrying an entry annotation gets kipam's own")
		Expect(k8sClient.Delete(ctx, held[0])).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(waiting), waiting)).To(Succeed())
			g.Expect(waiting.Spec.CIDR).To(Equal(held[0].Spec.CIDR), "kipam binds the waiting claim")
		}).Should(Succeed())
		forged := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) {
			c.Spec.WhenExhausted = ipamv1alpha1.Wait
			c.Annotations = map[string]string{ipam.EntryAnnotation: own}
		})
		Expect(k8sClient.Create(ctx, forged)).To(Succeed())
		Expect(forged.Annotations).NotTo(HaveKey(ipam.EntryAnnotation))
	})

	It("records a claim's unrecorded cidr only in a pool its namespace could have claimed from", func() {
		open := createPool("10.163.0.0/24", nil)
		closed := createPool("10.164.0.0/24", func(s *ipamv1alpha1.IPPoolSpec) {
			s.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "gold"}}
		})
		ns := createNamespace(nil)
		bypassWebhook(open.Name)
		c := newClaim(ns, closed.Name, func(c *ipamv1alpha1.IPClaim) {
			c.Labels = map[string]string{bypassLabel: "yes"}
			c.Spec.CIDR = "10.164.0.7/32"
		})
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			cond := meta.FindStatusCondition(c.Status.Conditions, ipamv1alpha1.ConditionReady)
			g.Expect(cond).NotTo(BeNil())
			g.Expect(cond.Reason).To(Equal(ipamv1alpha1.ReasonInvalid))
			g.Expect(cond.Message).To(ContainSubstring("no such pool is open to namespace " + ns))
		}).Should(Succeed())
		Consistently(func() []string { return ledgerOf(closed.Name) }).Should(BeEmpty())
	})
})
