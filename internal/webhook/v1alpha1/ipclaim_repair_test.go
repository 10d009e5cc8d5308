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
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// bypassLabel on a claim makes the API server skip kipam's webhook while
// bypassWebhook is in effect.
const bypassLabel = "test.kipam.dev/bypass"

// ledgerHolders maps each prefix in a pool's ledgers to its holder.
func ledgerHolders(pool string) map[string]string {
	GinkgoHelper()
	l, err := ipam.ReadLedger(ctx, k8sClient, pool)
	Expect(err).NotTo(HaveOccurred())
	out := map[string]string{}
	for p, e := range l.Allocations {
		out[p.String()] = e.Holder
	}
	return out
}

// dropFromLedger removes cidr's line from whichever of pool's ledgers
// records it, behind kipam's back.
func dropFromLedger(pool, cidr string) {
	GinkgoHelper()
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var ledgers ipamv1alpha1.IPLedgerList
		if err := k8sClient.List(ctx, &ledgers, client.MatchingLabels{ipamv1alpha1.LabelPool: pool}); err != nil {
			return err
		}
		for i := range ledgers.Items {
			l := &ledgers.Items[i]
			lines := strings.SplitAfter(l.Spec.Allocations, "\n")
			kept := slices.DeleteFunc(slices.Clone(lines), func(line string) bool { return strings.HasPrefix(line, cidr+" ") })
			if len(kept) != len(lines) {
				l.Spec.Allocations = strings.Join(kept, "")
				return k8sClient.Update(ctx, l)
			}
		}
		return fmt.Errorf("no ledger of pool %s records %s", pool, cidr)
	})).To(Succeed())
}

func expectReady(c *ipamv1alpha1.IPClaim) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(c.Status.Conditions, ipamv1alpha1.ConditionReady)).To(BeTrue())
		var a ipamv1alpha1.IPAllocation
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: c.Status.Allocation}, &a)).To(Succeed())
		g.Expect(a.Spec.ClaimRef.UID).To(Equal(c.UID))
		expectHealthy(g, &a)
	}).Should(Succeed())
}

// expectHealthy fails unless a is bound to a holder by uid and its status
// reports nothing wrong: a healthy allocation has no status at all.
func expectHealthy(g Gomega, a *ipamv1alpha1.IPAllocation) {
	g.Expect(a.Spec.ClaimRef.UID).NotTo(BeEmpty(), a.Name)
	g.Expect(meta.IsStatusConditionTrue(a.Status.Conditions, ipamv1alpha1.ConditionOrphaned)).To(BeFalse(), a.Name)
	g.Expect(meta.IsStatusConditionFalse(a.Status.Conditions, ipamv1alpha1.ConditionBound)).To(BeFalse(), a.Name)
}

// eventNotes returns the notes of the events of reason regarding a claim.
func eventNotes(g Gomega, c *ipamv1alpha1.IPClaim, eventType, reason string) []string {
	var events eventsv1.EventList
	g.Expect(k8sClient.List(ctx, &events, client.InNamespace(c.Namespace))).To(Succeed())
	var notes []string
	for _, e := range events.Items {
		if e.Regarding.Kind == "IPClaim" && e.Regarding.Name == c.Name && e.Type == eventType && e.Reason == reason {
			notes = append(notes, e.Note)
		}
	}
	return notes
}

// bypassWebhook makes the API server store claims labelled bypassLabel
// without calling kipam's webhook, as when a backup is restored before
// kipam's webhook configuration, until the spec ends. probePool is a pool
// with room, for dry runs that tell when the change took effect.
func bypassWebhook(probePool string) {
	GinkgoHelper()
	setSelector := func(sel *metav1.LabelSelector) {
		GinkgoHelper()
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var cfg admissionregistrationv1.MutatingWebhookConfiguration
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: "mutating-webhook-configuration"}, &cfg); err != nil {
				return err
			}
			for i := range cfg.Webhooks {
				if cfg.Webhooks[i].Name == "mipclaim-v1alpha1.kb.io" {
					cfg.Webhooks[i].ObjectSelector = sel
				}
			}
			return k8sClient.Update(ctx, &cfg)
		})).To(Succeed())
	}
	// probe is what a dry run of a labelled claim gets for spec.cidr.
	probe := func() (string, error) {
		c := newClaim("default", probePool, func(c *ipamv1alpha1.IPClaim) { c.Labels = map[string]string{bypassLabel: "yes"} })
		err := k8sClient.Create(ctx, c, client.DryRunAll)
		return c.Spec.CIDR, err
	}
	setSelector(&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: bypassLabel, Operator: metav1.LabelSelectorOpDoesNotExist,
	}}})
	DeferCleanup(func() {
		setSelector(&metav1.LabelSelector{})
		Eventually(probe).ShouldNot(BeEmpty(), "kipam's webhook is back for every claim")
	})
	Eventually(probe).Should(BeEmpty(), "the API server skips kipam's webhook for labelled claims")
}

var _ = Describe("IPClaim whose CIDR its pool's ledger does not record", func() {
	It("records it again when its ledger entry was lost", func() {
		p := createPool("10.81.0.0/24", nil)
		c := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](28) })
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		cidr := c.Spec.CIDR
		expectReady(c)

		By("removing the claim's entry from the ledger behind kipam's back")
		dropFromLedger(p.Name, cidr)
		touch(c)

		By("finding the same prefix recorded again for the claim's namespace")
		Eventually(func() map[string]string { return ledgerHolders(p.Name) }).Should(Equal(map[string]string{cidr: ipam.ClaimHolder("default")}))
		Eventually(func(g Gomega) []string {
			return eventNotes(g, c, corev1.EventTypeNormal, ipamv1alpha1.ReasonAllocated)
		}).Should(ContainElement(ContainSubstring("recorded %s in pool %s", cidr, p.Name)))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
		Expect(c.Spec.CIDR).To(Equal(cidr))
		expectReady(c)

		By("never handing it out again")
		n := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](28) })
		Expect(k8sClient.Create(ctx, n)).To(Succeed())
		expectDisjoint([]string{cidr, n.Spec.CIDR})
		Expect(ledgerOf(p.Name)).To(ConsistOf(cidr, n.Spec.CIDR))
	})

	It("binds a claim created with the webhook bypassed if its CIDR is free, and marks it Conflict if not", func() {
		p := pool("10.82.0.0/24", nil)
		p.Labels = map[string]string{"restore": p.Name}
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		held := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.CIDR = "10.82.0.0/26" })
		Expect(k8sClient.Create(ctx, held)).To(Succeed())
		expectReady(held)
		bypassWebhook(p.Name)
		bypassed := func(cidr string) *ipamv1alpha1.IPClaim {
			GinkgoHelper()
			c := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) {
				c.Labels = map[string]string{bypassLabel: "yes"}
				c.Spec.CIDR = cidr
			})
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			Expect(c.Finalizers).To(BeEmpty(), "the webhook was bypassed")
			return c
		}

		By("a claim whose CIDR is free: recorded and bound")
		free := bypassed("10.82.0.128/28")
		expectReady(free)
		Expect(free.Finalizers).To(ContainElement(ipamv1alpha1.ClaimFinalizer))
		Expect(ledgerHolders(p.Name)).To(HaveKeyWithValue("10.82.0.128/28", ipam.ClaimHolder("default")))

		By("a claim by selector, stored without the pool annotation: given the pool its CIDR lies in")
		sel := newClaim("default", "", func(c *ipamv1alpha1.IPClaim) {
			c.Labels = map[string]string{bypassLabel: "yes"}
			c.Spec.PoolSelector = &metav1.LabelSelector{MatchLabels: p.Labels}
			c.Spec.CIDR = "10.82.0.160/30"
		})
		Expect(k8sClient.Create(ctx, sel)).To(Succeed())
		Expect(sel.Annotations).NotTo(HaveKey(ipam.PoolAnnotation))
		expectReady(sel)
		Expect(sel.Annotations).To(HaveKeyWithValue(ipam.PoolAnnotation, p.Name))
		Expect(sel.Status.Pool).To(Equal(p.Name))
		Expect(ledgerHolders(p.Name)).To(HaveKeyWithValue("10.82.0.160/30", ipam.ClaimHolder("default")))
		Expect(k8sClient.Delete(ctx, sel)).To(Succeed())
		Eventually(func() map[string]string { return ledgerHolders(p.Name) }).ShouldNot(HaveKey("10.82.0.160/30"))

		By("claims whose CIDR overlaps another claim's or equals it: Conflict, with a Warning event")
		inside, same := bypassed("10.82.0.16/28"), bypassed("10.82.0.0/26")
		for c, want := range map[*ipamv1alpha1.IPClaim]string{
			inside: "10.82.0.16/28 is not recorded in pool " + p.Name + " and cannot be: it overlaps 10.82.0.0/26, held by IPClaim default/" + held.Name,
			same:   "10.82.0.0/26 in pool " + p.Name + " is held by IPClaim default/" + held.Name,
		} {
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
				cond := meta.FindStatusCondition(c.Status.Conditions, ipamv1alpha1.ConditionReady)
				g.Expect(cond).NotTo(BeNil())
				g.Expect(cond.Status).To(Equal(metav1.ConditionFalse))
				g.Expect(cond.Reason).To(Equal(ipamv1alpha1.ReasonConflict))
				g.Expect(cond.Message).To(Equal(want))
				g.Expect(c.Status.CIDR).To(BeEmpty())
				g.Expect(eventNotes(g, c, corev1.EventTypeWarning, ipamv1alpha1.ReasonConflict)).To(ConsistOf(want))
			}).Should(Succeed(), c.Name)
		}
		Expect(ledgerHolders(p.Name)).To(Equal(map[string]string{
			"10.82.0.0/26": ipam.ClaimHolder("default"), "10.82.0.128/28": ipam.ClaimHolder("default"),
		}))

		By("deleting them, which releases nothing")
		for _, c := range []*ipamv1alpha1.IPClaim{inside, same} {
			Expect(k8sClient.Delete(ctx, c)).To(Succeed())
			Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)) }).Should(BeTrue())
		}
		Expect(ledgerOf(p.Name)).To(ConsistOf("10.82.0.0/26", "10.82.0.128/28"))
		expectReady(held)

		By("deleting, at once, a restored duplicate that carries the finalizer from its backup, which releases nothing")
		dup := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) {
			c.Labels = map[string]string{bypassLabel: "yes"}
			c.Finalizers = []string{ipamv1alpha1.ClaimFinalizer}
			c.Spec.CIDR = "10.82.0.0/26"
		})
		Expect(k8sClient.Create(ctx, dup)).To(Succeed())
		Expect(k8sClient.Delete(ctx, dup)).To(Succeed())
		Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(dup), dup)) }).Should(BeTrue())
		Expect(ledgerOf(p.Name)).To(ConsistOf("10.82.0.0/26", "10.82.0.128/28"))
		expectReady(held)

		By("deleting the bound one, which releases its prefix")
		Expect(k8sClient.Delete(ctx, free)).To(Succeed())
		Eventually(func() []string { return ledgerOf(p.Name) }).Should(ConsistOf("10.82.0.0/26"))
	})
})
