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
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/metrics"
)

// waitNamespace creates a namespace for one spec's claims.
func waitNamespace() string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("wait-%d", seq.Add(1))}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func waiter(ns, pool string, mutate func(*ipamv1alpha1.IPClaim)) *ipamv1alpha1.IPClaim {
	return newClaim(ns, pool, func(c *ipamv1alpha1.IPClaim) {
		c.Spec.WhenExhausted = ipamv1alpha1.Wait
		if mutate != nil {
			mutate(c)
		}
	})
}

// expectBound waits until c is Ready with a cidr.
func expectBound(c *ipamv1alpha1.IPClaim) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
		g.Expect(c.Spec.CIDR).NotTo(BeEmpty())
		g.Expect(meta.IsStatusConditionTrue(c.Status.Conditions, ipamv1alpha1.ConditionReady)).To(BeTrue())
	}).Should(Succeed())
}

// readyReason is a claim's Ready reason and message.
func readyReason(c *ipamv1alpha1.IPClaim) func(Gomega) metav1.Condition {
	return func(g Gomega) metav1.Condition {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
		cond := meta.FindStatusCondition(c.Status.Conditions, ipamv1alpha1.ConditionReady)
		g.Expect(cond).NotTo(BeNil())
		return *cond
	}
}

var _ = Describe("Claims that wait for space", func() {
	It("queues per namespace: one namespace's limit never delays another's claims", func() {
		p := createPool("10.150.0.0/30", func(s *ipamv1alpha1.IPPoolSpec) {
			s.NamespaceLimit = &ipamv1alpha1.NamespaceLimit{Claims: ptr.To[int32](2)}
		})
		w1, w2 := waitNamespace(), waitNamespace()
		var held []*ipamv1alpha1.IPClaim
		for _, ns := range []string{w1, w1, w2, w2} {
			c := newClaim(ns, p.Name, nil)
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			held = append(held, c)
		}
		older := waiter(w1, p.Name, nil)
		createWaiting(older, "waiting for space")
		younger := waiter(w2, p.Name, nil)
		createWaiting(younger, "waiting for space")

		By("space frees: w1's claim still waits on its limit, w2's takes it")
		deleteAndWait(held[2])
		expectBound(younger)
		Consistently(func() string {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(older), older)).To(Succeed())
			return older.Spec.CIDR
		}).WithTimeout(2 * time.Second).Should(BeEmpty())
		Expect(readyReason(older)(Default)).To(HaveField("Reason", ipamv1alpha1.ReasonPending))
	})

	It("serves a waiting claim before any later claim of its namespace, Deny or Wait", func() {
		p := createPool("10.151.0.0/31", nil)
		ns := waitNamespace()
		holders := []*ipamv1alpha1.IPClaim{newClaim(ns, p.Name, nil), newClaim(ns, p.Name, nil)}
		for _, c := range holders {
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
		}
		first := waiter(ns, p.Name, nil)
		createWaiting(first, "first in namespace "+ns+"'s queue")
		second := waiter(ns, p.Name, nil)
		createWaiting(second, "behind 1 older claims of namespace "+ns)
		err := k8sClient.Create(ctx, newClaim(ns, p.Name, nil))
		Expect(err).To(MatchError(ContainSubstring(
			"2 older claims of namespace " + ns + " wait for space in the same pools (the first is " + first.Name + ")")))
		Expect(apierrors.HasStatusCause(err, ipamv1alpha1.ReasonQueued)).To(BeTrue(), "cause %s in %#v", ipamv1alpha1.ReasonQueued, err)
		Expect(promtestutil.ToFloat64(metrics.ClaimsQueued.WithLabelValues(p.Name, ipamv1alpha1.ReasonQueued))).To(BeEquivalentTo(1), "the second, queued behind the first")
		Expect(promtestutil.ToFloat64(metrics.ClaimsDenied.WithLabelValues(p.Name, ipamv1alpha1.ReasonQueued))).To(BeEquivalentTo(1), "the Deny claim behind them")
		By("another namespace is not held back by this one's queue: it is denied for the pool's own reason")
		Expect(k8sClient.Create(ctx, newClaim("default", p.Name, nil))).To(MatchError(ContainSubstring("pool " + p.Name + " is exhausted")))

		By("releases bind them in order")
		deleteAndWait(holders[0])
		expectBound(first)
		Expect(second.Spec.CIDR).To(BeEmpty())
		deleteAndWait(holders[1])
		expectBound(second)
	})

	It("denies at admission a claim that can never fit, naming why", func() {
		// .1 and .5 reserved: no /30 of the /29 is ever free.
		p := createPool("10.152.0.0/29", func(s *ipamv1alpha1.IPPoolSpec) {
			s.Reserved = []string{"10.152.0.1/32", "10.152.0.5/32"}
			s.NamespaceLimit = &ipamv1alpha1.NamespaceLimit{AddressSpace: ptr.To[int32](31)}
		})
		for _, mutate := range []func(*ipamv1alpha1.IPClaim){
			func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](30) },
			func(c *ipamv1alpha1.IPClaim) {
				c.Spec.PrefixLength = ptr.To[int32](30)
				c.Spec.WhenExhausted = ipamv1alpha1.Wait
			},
		} {
			err := k8sClient.Create(ctx, newClaim("default", p.Name, mutate))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
			Expect(err).To(MatchError(ContainSubstring("spec.prefixLength")))
			Expect(err).To(MatchError(ContainSubstring("a /30 is more than pool " + p.Name + "'s spec.namespaceLimit.addressSpace lets one namespace hold")))
		}
		q := createPool("10.152.1.0/29", func(s *ipamv1alpha1.IPPoolSpec) { s.Reserved = []string{"10.152.1.1/32", "10.152.1.5/32"} })
		err := k8sClient.Create(ctx, waiter("default", q.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](30) }))
		Expect(err).To(MatchError(ContainSubstring("the largest block that pool " + q.Name + "'s reserved and excluded space leaves is a /31, so a /30 never fits")))
		Expect(ledgerOf(q.Name)).To(BeEmpty())
	})

	It("marks a waiting claim that no longer fits once its pool changes, and lets the claims behind it go", func() {
		p := createPool("10.153.0.0/29", nil)
		ns := waitNamespace()
		full := newClaim(ns, p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](29) })
		Expect(k8sClient.Create(ctx, full)).To(Succeed())
		big := waiter(ns, p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](30) })
		createWaiting(big, "first in namespace")
		small := waiter(ns, p.Name, nil)
		createWaiting(small, "behind 1 older claims")

		By("a limit that a /30 passes takes the big claim out of the queue")
		patch := client.MergeFrom(p.DeepCopy())
		p.Spec.NamespaceLimit = &ipamv1alpha1.NamespaceLimit{AddressSpace: ptr.To[int32](31)}
		Expect(k8sClient.Patch(ctx, p, patch)).To(Succeed())
		Eventually(readyReason(big)).Should(And(HaveField("Reason", ipamv1alpha1.ReasonNeverFits),
			HaveField("Message", ContainSubstring("spec.namespaceLimit.addressSpace"))))
		deleteAndWait(full)
		expectBound(small)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(big), big)).To(Succeed())
		Expect(big.Spec.CIDR).To(BeEmpty())
	})

	It("takes a waiting claim whose pools are gone out of its namespace's queue, and back when one matches again", func() {
		g := fmt.Sprint(seq.Add(1))
		full := pool("10.158.0.0/32", nil)
		full.Labels = map[string]string{"test.kipam.dev/sel": g}
		Expect(k8sClient.Create(ctx, full)).To(Succeed())
		Expect(k8sClient.Create(ctx, newClaim("default", full.Name, nil))).To(Succeed())
		ns := waitNamespace()
		bySelector := func(value string) func(*ipamv1alpha1.IPClaim) {
			return func(c *ipamv1alpha1.IPClaim) {
				c.Spec.Pool = ""
				c.Spec.PoolSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"test.kipam.dev/sel": value}}
				c.Spec.IPFamily = ipamv1alpha1.IPv4
			}
		}
		head := waiter(ns, "", bySelector(g))
		createWaiting(head, "waiting for space in pool "+full.Name)

		By("its only pool relabelled: it can never be bound, and leaves the queue")
		patch := client.MergeFrom(full.DeepCopy())
		full.Labels["test.kipam.dev/sel"] = "elsewhere"
		Expect(k8sClient.Patch(ctx, full, patch)).To(Succeed())
		Eventually(readyReason(head)).Should(And(HaveField("Reason", ipamv1alpha1.ReasonNeverFits),
			HaveField("Message", ContainSubstring("no IPv4 pool matching the selector"))))
		other := fmt.Sprint(seq.Add(1))
		roomy := pool("10.158.1.0/30", nil)
		roomy.Labels = map[string]string{"test.kipam.dev/sel": other}
		Expect(k8sClient.Create(ctx, roomy)).To(Succeed())
		Expect(k8sClient.Create(ctx, newClaim(ns, "", bySelector(other)))).To(Succeed(), "not held behind a claim that can never be bound")

		By("a pool matching it again brings it back, and it binds")
		fresh := pool("10.158.2.0/30", nil)
		fresh.Labels = map[string]string{"test.kipam.dev/sel": g}
		Expect(k8sClient.Create(ctx, fresh)).To(Succeed())
		expectBound(head)
	})

	It("wakes waiting claims at once when several prefixes are released together", func() {
		p := createPool("10.154.0.0/30", nil)
		ns := waitNamespace()
		var held, waiting []*ipamv1alpha1.IPClaim
		for range 4 {
			c := newClaim(ns, p.Name, nil)
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			held = append(held, c)
		}
		for range 4 {
			c := waiter(ns, p.Name, nil)
			createWaiting(c, "waiting for space")
			waiting = append(waiting, c)
		}
		for _, c := range held {
			Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		}
		for _, c := range waiting {
			expectBound(c)
		}
	})

	It("wakes a waiting claim when a released prefix's reuse grace ends", func() {
		p := createPool("10.155.0.0/32", func(s *ipamv1alpha1.IPPoolSpec) { s.ReuseGracePeriodSeconds = ptr.To[int64](2) })
		holder := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, holder)).To(Succeed())
		w := waiter(waitNamespace(), p.Name, nil)
		createWaiting(w, "waiting for space")
		deleteAndWait(holder)
		expectBound(w)
		Expect(w.Spec.CIDR).To(Equal("10.155.0.0/32"))
	})

	It("wakes a waiting claim when a matching pool is created", func() {
		lbl := map[string]string{"test.kipam.dev/wait": fmt.Sprint(seq.Add(1))}
		full := pool("10.156.0.0/32", nil)
		full.Labels = lbl
		Expect(k8sClient.Create(ctx, full)).To(Succeed())
		Expect(k8sClient.Create(ctx, newClaim("default", full.Name, nil))).To(Succeed())
		w := waiter(waitNamespace(), "", func(c *ipamv1alpha1.IPClaim) {
			c.Spec.Pool = ""
			c.Spec.PoolSelector = &metav1.LabelSelector{MatchLabels: lbl}
			c.Spec.IPFamily = ipamv1alpha1.IPv4
		})
		createWaiting(w, "waiting for space in pool "+full.Name)
		p := pool("10.156.1.0/30", nil)
		p.Labels = lbl
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		expectBound(w)
		Expect(w.Annotations).To(HaveKeyWithValue("ipam.kipam.dev/pool", p.Name))
	})

	It("shows which pool a claim waits on, with an event, and counts it as queued, not denied", func() {
		p := createPool("10.157.0.0/32", nil)
		Expect(k8sClient.Create(ctx, newClaim("default", p.Name, nil))).To(Succeed())
		w := waiter(waitNamespace(), p.Name, nil)
		createWaiting(w, "waiting for space in pool "+p.Name)
		Expect(w.Status.Pool).To(Equal(p.Name), "the POOL column")
		Eventually(func(g Gomega) []string { return eventNotes(g, w, corev1.EventTypeNormal, ipamv1alpha1.ReasonPending) }).Should(ContainElement(And(
			ContainSubstring("waiting for space in pool "+p.Name), ContainSubstring("first in namespace "+w.Namespace+"'s queue"))))
		Expect(promtestutil.ToFloat64(metrics.ClaimsQueued.WithLabelValues(p.Name, "Exhausted"))).To(BeEquivalentTo(1))
		Expect(promtestutil.ToFloat64(metrics.ClaimsDenied.WithLabelValues(p.Name, "Exhausted"))).To(BeZero())
		Expect(k8sClient.Create(ctx, newClaim("default", p.Name, nil))).To(MatchError(ContainSubstring("exhausted")))
		Expect(promtestutil.ToFloat64(metrics.ClaimsDenied.WithLabelValues(p.Name, "Exhausted"))).To(BeEquivalentTo(1))
	})
})
