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
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/metrics"
)

func newClaim(ns, pool string, mutate func(*ipamv1alpha1.IPClaim)) *ipamv1alpha1.IPClaim {
	c := &ipamv1alpha1.IPClaim{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("claim-%d", seq.Add(1)), Namespace: ns},
		Spec:       ipamv1alpha1.IPClaimSpec{Pool: pool},
	}
	if mutate != nil {
		mutate(c)
	}
	return c
}

// createWaiting creates claim, which may wait, and waits until its Ready
// condition says Pending with a message containing why.
func createWaiting(claim *ipamv1alpha1.IPClaim, why string) {
	GinkgoHelper()
	Expect(k8sClient.Create(ctx, claim)).To(Succeed())
	Expect(claim.Spec.CIDR).To(BeEmpty())
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(claim), claim)).To(Succeed())
		cond := meta.FindStatusCondition(claim.Status.Conditions, ipamv1alpha1.ConditionReady)
		g.Expect(cond).NotTo(BeNil())
		g.Expect(cond.Reason).To(Equal(ipamv1alpha1.ReasonPending))
		g.Expect(cond.Message).To(ContainSubstring(why))
	}).Should(Succeed())
}

func createPool(cidr string, mutate func(*ipamv1alpha1.IPPoolSpec)) *ipamv1alpha1.IPPool {
	GinkgoHelper()
	p := pool(cidr, mutate)
	Expect(k8sClient.Create(ctx, p)).To(Succeed())
	return p
}

// ledgerOf is what pool's ledgers (root and shards) record, read live.
func ledgerOf(pool string) []string {
	GinkgoHelper()
	l, err := ipam.ReadLedger(ctx, k8sClient, pool)
	Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, p := range l.Prefixes() {
		out = append(out, p.String())
	}
	return out
}

// expectDisjoint fails unless the prefixes are pairwise disjoint.
func expectDisjoint(cidrs []string) {
	GinkgoHelper()
	var b netipx.IPSetBuilder
	for _, c := range cidrs {
		p := netip.MustParsePrefix(c)
		set, err := b.IPSet()
		Expect(err).NotTo(HaveOccurred())
		Expect(set.OverlapsPrefix(p)).To(BeFalse(), "%s overlaps another allocation", p)
		b.AddPrefix(p)
	}
}

var _ = Describe("IPClaim allocation at admission", func() {
	It("returns the CIDR in the created object, lowest first", func() {
		p := createPool("10.50.0.0/24", nil)
		var got []string
		for range 3 {
			c := newClaim("default", p.Name, nil)
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			got = append(got, c.Spec.CIDR)
			Expect(c.Finalizers).To(ContainElement(ipamv1alpha1.ClaimFinalizer))
		}
		Expect(got).To(Equal([]string{"10.50.0.0/32", "10.50.0.1/32", "10.50.0.2/32"}))

		By("mixing sizes in one pool, aligned")
		c := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](28) })
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDR).To(Equal("10.50.0.16/28"))

		By("mirroring the result into status and an IPAllocation")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(meta.IsStatusConditionTrue(c.Status.Conditions, ipamv1alpha1.ConditionReady)).To(BeTrue())
			g.Expect(c.Status.CIDR).To(Equal("10.50.0.16/28"))
			var a ipamv1alpha1.IPAllocation
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: c.Status.Allocation}, &a)).To(Succeed())
			g.Expect(a.Spec.ClaimRef.UID).To(Equal(c.UID))
			expectHealthy(g, &a)
		}).Should(Succeed())

		By("publishing the pool's usage")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(p.Status.Allocated).To(Equal("19"))
			g.Expect(p.Status.Capacity).To(Equal("256"))
			g.Expect(p.Status.Available).To(Equal("237"))
			g.Expect(p.Status.Utilization).To(Equal("7.42%"))
			g.Expect(p.Status.Claims).To(BeEquivalentTo(4))
			g.Expect(p.Status.LargestFreePrefix).To(HaveValue(BeEquivalentTo(25)))
			g.Expect(meta.IsStatusConditionTrue(p.Status.Conditions, ipamv1alpha1.ConditionReady)).To(BeTrue())
			g.Expect(meta.IsStatusConditionFalse(p.Status.Conditions, ipamv1alpha1.ConditionExhausted)).To(BeTrue())
		}).Should(Succeed())
	})

	It("honours the pool's defaults, reservations and exclusions", func() {
		p := createPool("10.51.0.0/24", func(s *ipamv1alpha1.IPPoolSpec) {
			s.ExcludeFirst, s.ExcludeLast = 1, 1
			s.Reserved = []string{"10.51.0.1-10.51.0.9"}
		})
		c := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDR).To(Equal("10.51.0.10/32"))
		last := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.CIDR = "10.51.0.255/32" })
		Expect(k8sClient.Create(ctx, last)).To(MatchError(ContainSubstring("overlaps space reserved in pool " + p.Name)))
		below := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.CIDR = "10.51.0.254/32" })
		Expect(k8sClient.Create(ctx, below)).To(Succeed())

		v6 := createPool("2001:db8:51::/48", func(s *ipamv1alpha1.IPPoolSpec) { s.DefaultPrefixLength = ptr.To[int32](64) })
		c = newClaim("default", v6.Name, nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDR).To(Equal("2001:db8:51::/64"))
	})

	It("honours a specific CIDR or says why not", func() {
		p := createPool("10.52.0.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.Reserved = []string{"10.52.0.240/28"} })
		c := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.CIDR = "10.52.0.64/26" })
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDR).To(Equal("10.52.0.64/26"))

		for cidr, want := range map[string]string{
			"10.52.0.64/26":  "is already allocated in pool " + p.Name,
			"10.52.0.70/32":  "is already allocated in pool " + p.Name,
			"10.52.0.0/24":   "is already allocated in pool " + p.Name,
			"10.52.0.240/30": "overlaps space reserved in pool " + p.Name,
			"10.53.0.0/30":   "lies outside pool " + p.Name,
			"10.52.0.0/23":   "is larger than pool " + p.Name,
			"2001:db8::/64":  "pool " + p.Name + " is IPv4",
		} {
			err := k8sClient.Create(ctx, newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.CIDR = cidr }))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%s: %v", cidr, err)
			Expect(err.Error()).To(ContainSubstring("spec.cidr"))
			Expect(err.Error()).To(ContainSubstring(want), cidr)
		}
		Expect(ledgerOf(p.Name)).To(ConsistOf("10.52.0.64/26"))
	})

	It("denies bad input with the field and the reason, allocating nothing", func() {
		p := createPool("10.54.0.0/24", func(s *ipamv1alpha1.IPPoolSpec) {
			s.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}}
		})
		for _, ns := range []string{"blue", "red"} {
			Expect(client.IgnoreAlreadyExists(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
				Name: ns, Labels: map[string]string{"team": ns}}}))).To(Succeed())
		}
		err := k8sClient.Create(ctx, newClaim("red", p.Name, nil))
		Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf(`spec.pool: Not found: "%s (no such pool is open to namespace red)"`, p.Name))))
		err = k8sClient.Create(ctx, newClaim("red", "no-such-pool", nil))
		Expect(err).To(MatchError(ContainSubstring(`spec.pool: Not found: "no-such-pool (no such pool is open to namespace red)"`)))
		err = k8sClient.Create(ctx, newClaim("blue", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](16) }))
		Expect(err).To(MatchError(ContainSubstring("spec.prefixLength: Invalid value: 16: must lie between /24")))
		err = k8sClient.Create(ctx, newClaim("blue", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.IPFamily = ipamv1alpha1.IPv6 }))
		Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("spec.ipFamily: Invalid value: \"IPv6\": pool %s is IPv4", p.Name))))
		err = k8sClient.Create(ctx, newClaim("blue", "", func(c *ipamv1alpha1.IPClaim) {
			c.Spec.PoolSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"nothing": "matches"}}
			c.Spec.IPFamily = ipamv1alpha1.IPv4
		}))
		Expect(err).To(MatchError(ContainSubstring("spec.poolSelector: Invalid value: \"nothing=matches\": no IPv4 pool matching the selector is open to namespace blue")))
		Expect(ledgerOf(p.Name)).To(BeEmpty())

		c := newClaim("blue", p.Name, nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDR).To(Equal("10.54.0.0/32"))

		By("admitting a claim in a namespace created a moment ago")
		fresh := fmt.Sprintf("blue-%d", seq.Add(1))
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: fresh, Labels: map[string]string{"team": "blue"}}})).To(Succeed())
		c = newClaim(fresh, p.Name, nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDR).To(Equal("10.54.0.1/32"))
	})

	It("chooses among pools by selector in name order, moving on when one is full", func() {
		lbl := map[string]string{"tier": fmt.Sprintf("sel-%d", seq.Add(1))}
		a := pool("10.55.0.0/31", nil)
		a.Name, a.Labels = "sel-a-"+lbl["tier"], lbl
		b := pool("10.55.1.0/30", nil)
		b.Name, b.Labels = "sel-b-"+lbl["tier"], lbl
		Expect(k8sClient.Create(ctx, b)).To(Succeed())
		Expect(k8sClient.Create(ctx, a)).To(Succeed())
		var got []string
		for range 4 {
			c := newClaim("default", "", func(c *ipamv1alpha1.IPClaim) {
				c.Spec.PoolSelector = &metav1.LabelSelector{MatchLabels: lbl}
				c.Spec.IPFamily = ipamv1alpha1.IPv4
			})
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			got = append(got, c.Annotations[ipam.PoolAnnotation]+"="+c.Spec.CIDR)
		}
		Expect(got).To(Equal([]string{a.Name + "=10.55.0.0/32", a.Name + "=10.55.0.1/32", b.Name + "=10.55.1.0/32", b.Name + "=10.55.1.1/32"}))
	})

	It("denies a claim its pool's ledger has no room for, saying which ledger and what to do", func() {
		p := createPool("10.94.0.0/16", nil) // a pool of hosts: its /24s are recorded in its root ledger
		pools.SetMaxLedgerBytes(200)         // about five lines
		DeferCleanup(func() { pools.SetMaxLedgerBytes(ipam.DefaultMaxLedgerBytes) })
		slash24 := func() *ipamv1alpha1.IPClaim {
			return newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](24) })
		}
		var (
			err    error
			fitted []*ipamv1alpha1.IPClaim
		)
		for range 10 {
			c := slash24()
			if err = k8sClient.Create(ctx, c); err != nil {
				break
			}
			fitted = append(fitted, c)
		}
		Expect(len(fitted)).To(BeNumerically(">=", 2), "the first /24s fit")
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(apierrors.HasStatusCause(err, ipamv1alpha1.ReasonLedgerFull)).To(BeTrue(), "cause %s in %#v", ipamv1alpha1.ReasonLedgerFull, err)
		Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("pool %s cannot record another /24: the pool's root ledger", p.Name))))
		Expect(err).To(MatchError(ContainSubstring("spec.defaultPrefixLength")))
		Expect(promtestutil.ToFloat64(metrics.ClaimsDenied.WithLabelValues(p.Name, ipamv1alpha1.ReasonLedgerFull))).To(BeEquivalentTo(1))
		Eventually(func(g Gomega) {
			var events eventsv1.EventList
			g.Expect(k8sClient.List(ctx, &events, client.InNamespace("default"))).To(Succeed())
			var reasons []string
			for _, e := range events.Items {
				if e.Regarding.Kind == "IPPool" && e.Regarding.Name == p.Name {
					reasons = append(reasons, e.Reason)
				}
			}
			g.Expect(reasons).To(ContainElement(ipamv1alpha1.ReasonLedgerFull))
		}).Should(Succeed())

		By("a claim that may wait waits, saying why, and binds once a release makes room")
		waiting := slash24()
		waiting.Spec.WhenExhausted = ipamv1alpha1.Wait
		createWaiting(waiting, "cannot record another /24")
		Expect(k8sClient.Delete(ctx, fitted[0])).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(waiting), waiting)).To(Succeed())
			g.Expect(waiting.Spec.CIDR).To(Equal(fitted[0].Spec.CIDR))
		}).Should(Succeed())

		By("a host still fits: it is recorded in a shard")
		Expect(k8sClient.Create(ctx, newClaim("default", p.Name, nil))).To(Succeed())
	})

	It("caps what one namespace's claims hold from a pool, exactly, and lets a claim wait for its namespace's release", func() {
		p := createPool("10.95.0.0/16", func(s *ipamv1alpha1.IPPoolSpec) {
			s.NamespaceLimit = &ipamv1alpha1.NamespaceLimit{Claims: ptr.To[int32](2), AddressSpace: ptr.To[int32](24)}
		})
		var held []*ipamv1alpha1.IPClaim
		for range 2 {
			c := newClaim("default", p.Name, nil)
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			held = append(held, c)
		}
		err := k8sClient.Create(ctx, newClaim("default", p.Name, nil))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(apierrors.HasStatusCause(err, ipamv1alpha1.ReasonNamespaceLimit)).To(BeTrue(), "cause %s in %#v", ipamv1alpha1.ReasonNamespaceLimit, err)
		Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("namespace default holds 2 claims from pool %s", p.Name))))
		Expect(promtestutil.ToFloat64(metrics.ClaimsDenied.WithLabelValues(p.Name, ipamv1alpha1.ReasonNamespaceLimit))).To(BeEquivalentTo(1))

		By("another namespace has its own count, and the cap on addresses")
		Expect(k8sClient.Create(ctx, newClaim("kube-public", p.Name, nil))).To(Succeed())
		err = k8sClient.Create(ctx, newClaim("kube-public", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](24) }))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(err).To(MatchError(ContainSubstring("past its spec.namespaceLimit.addressSpace of a /24 (256)")))

		By("a claim that may wait waits, and binds once its namespace releases one")
		waiting := newClaim("default", p.Name, nil)
		waiting.Spec.WhenExhausted = ipamv1alpha1.Wait
		createWaiting(waiting, "namespace default holds 2 claims")
		Expect(k8sClient.Delete(ctx, held[0])).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(waiting), waiting)).To(Succeed())
			g.Expect(waiting.Spec.CIDR).NotTo(BeEmpty())
		}).Should(Succeed())

		By("refusing a cap larger than the pool")
		bad := pool("10.96.0.0/16", func(s *ipamv1alpha1.IPPoolSpec) {
			s.NamespaceLimit = &ipamv1alpha1.NamespaceLimit{AddressSpace: ptr.To[int32](8)}
		})
		Expect(k8sClient.Create(ctx, bad)).To(MatchError(ContainSubstring("namespaceLimit.addressSpace must lie between the pool's own prefix length")))
	})

	It("denies an exhausted pool naming it, the size and the largest free prefix", func() {
		p := createPool("10.56.0.0/28", nil)
		Expect(k8sClient.Create(ctx, newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.CIDR = "10.56.0.0/29" }))).To(Succeed())
		err := k8sClient.Create(ctx, newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](28) }))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(apierrors.HasStatusCause(err, ipamv1alpha1.ReasonPoolExhausted)).To(BeTrue(), "cause %s in %#v", ipamv1alpha1.ReasonPoolExhausted, err)
		Expect(apierrors.HasStatusCause(err, ipamv1alpha1.ReasonNamespaceLimit)).To(BeFalse())
		Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("pool %s is exhausted: no free /28 left (largest free prefix /29)", p.Name))))

		By("counting it in a metric and an event on the pool")
		Expect(promtestutil.ToFloat64(metrics.ClaimsDenied.WithLabelValues(p.Name, "Exhausted"))).To(BeEquivalentTo(1))
		Eventually(func(g Gomega) {
			var events eventsv1.EventList
			g.Expect(k8sClient.List(ctx, &events, client.InNamespace("default"))).To(Succeed())
			var notes []string
			for _, e := range events.Items {
				if e.Regarding.Kind == "IPPool" && e.Regarding.Name == p.Name && e.Reason == ipamv1alpha1.ReasonPoolExhausted {
					notes = append(notes, e.Note)
				}
			}
			g.Expect(notes).To(ContainElement("denied a /28 to a claim in namespace default: no free /28 left (largest free prefix /29)"))
		}).Should(Succeed())
	})

	It("allocates nothing on a dry run and works with generateName", func() {
		p := createPool("10.57.0.0/24", nil)
		dry := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Name, c.GenerateName = "", "web-" })
		Expect(k8sClient.Create(ctx, dry, client.DryRunAll)).To(Succeed())
		Expect(dry.Spec.CIDR).To(Equal("10.57.0.0/32"))
		Expect(ledgerOf(p.Name)).To(BeEmpty())

		real := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Name, c.GenerateName = "", "web-" })
		Expect(k8sClient.Create(ctx, real)).To(Succeed())
		Expect(real.Name).To(HavePrefix("web-"))
		Expect(real.Spec.CIDR).To(Equal("10.57.0.0/32"))
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(real), real)).To(Succeed())
			g.Expect(real.Status.Allocation).To(Equal(ipam.AllocationName(p.Name, netip.MustParsePrefix("10.57.0.0/32"))))
		}).Should(Succeed())
	})

	It("keeps spec.cidr immutable and re-applying without it a no-op", func() {
		p := createPool("10.58.0.0/24", nil)
		c := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		cidr := c.Spec.CIDR

		patch := client.MergeFrom(c.DeepCopy())
		c.Spec.CIDR = "10.58.0.99/32"
		Expect(k8sClient.Patch(ctx, c, patch)).To(MatchError(ContainSubstring("spec.cidr: Invalid value: cidr is immutable once set")))

		By("an update that drops spec.cidr and the finalizer, as a re-applied manifest would")
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c); err != nil {
				return err
			}
			c.Spec.CIDR, c.Finalizers = "", nil
			return k8sClient.Update(ctx, c)
		})).To(Succeed())
		Expect(c.Spec.CIDR).To(Equal(cidr))
		Expect(c.Finalizers).To(ContainElement(ipamv1alpha1.ClaimFinalizer))

		By("server-side apply of the original manifest")
		applied := &ipamv1alpha1.IPClaim{
			TypeMeta:   metav1.TypeMeta{APIVersion: ipamv1alpha1.GroupVersion.String(), Kind: "IPClaim"},
			ObjectMeta: metav1.ObjectMeta{Name: c.Name, Namespace: c.Namespace},
			Spec:       ipamv1alpha1.IPClaimSpec{Pool: p.Name},
		}
		Expect(k8sClient.Patch(ctx, applied, client.Apply, client.FieldOwner("helm"), client.ForceOwnership)).To(Succeed()) //nolint:staticcheck // client.Apply is what helm and kubectl --server-side send
		Expect(applied.Spec.CIDR).To(Equal(cidr))
	})

	It("releases on delete, after the reuse grace, and guards the IPAllocation", func() {
		p := createPool("10.59.0.0/30", func(s *ipamv1alpha1.IPPoolSpec) { s.ReuseGracePeriodSeconds = ptr.To[int64](3600) })
		c := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(c.Status.Allocation).NotTo(BeEmpty())
		}).Should(Succeed())

		var a ipamv1alpha1.IPAllocation
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: c.Status.Allocation}, &a)).To(Succeed())
		err := k8sClient.Delete(ctx, &a)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("is held by the live IPClaim default/%s: delete the IPClaim to release it", c.Name))))

		Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)) &&
				apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Name: a.Name}, &a))
		}).Should(BeTrue())
		Expect(ledgerOf(p.Name)).To(BeEmpty())

		By("not handing the released address out again within the grace")
		for _, want := range []string{"10.59.0.1/32", "10.59.0.2/32", "10.59.0.3/32"} {
			n := newClaim("default", p.Name, nil)
			Expect(k8sClient.Create(ctx, n)).To(Succeed())
			Expect(n.Spec.CIDR).To(Equal(want))
		}
		Expect(k8sClient.Create(ctx, newClaim("default", p.Name, nil))).To(MatchError(ContainSubstring("exhausted")))
	})

	It("binds a waiting claim in creation order when space frees", func() {
		p := createPool("10.60.0.0/31", nil)
		held := []*ipamv1alpha1.IPClaim{newClaim("default", p.Name, nil), newClaim("default", p.Name, nil)}
		for _, c := range held {
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
		}
		waiting := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.WhenExhausted = ipamv1alpha1.Wait })
		createWaiting(waiting, "waiting for space")

		Expect(k8sClient.Delete(ctx, held[1])).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(waiting), waiting)).To(Succeed())
			g.Expect(waiting.Spec.CIDR).To(Equal(held[1].Spec.CIDR))
			g.Expect(meta.IsStatusConditionTrue(waiting.Status.Conditions, ipamv1alpha1.ConditionReady)).To(BeTrue())
		}).Should(Succeed())
	})

	It("hands out exactly 256 of a /24 to a storm of 500 concurrent creates", func() {
		p := createPool("10.70.0.0/24", nil)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created []string
			denied  int
			other   []error
		)
		for range 500 {
			wg.Go(func() {
				defer GinkgoRecover()
				c := newClaim("default", p.Name, nil)
				err := k8sClient.Create(ctx, c)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					created = append(created, c.Spec.CIDR)
				case apierrors.IsForbidden(err) && strings.Contains(err.Error(), fmt.Sprintf("pool %s is exhausted: no free /32 left: no address is free", p.Name)):
					denied++
				default:
					other = append(other, err)
				}
			})
		}
		wg.Wait()
		Expect(other).To(BeEmpty())
		Expect(created).To(HaveLen(256))
		Expect(denied).To(Equal(244))
		Expect(sets.New(created...).Len()).To(Equal(256))
		expectDisjoint(created)
		Expect(ledgerOf(p.Name)).To(ConsistOf(created))
		Eventually(func(g Gomega) {
			var allocs ipamv1alpha1.IPAllocationList
			g.Expect(k8sClient.List(ctx, &allocs, client.MatchingLabels{ipamv1alpha1.LabelPool: p.Name})).To(Succeed())
			g.Expect(allocs.Items).To(HaveLen(256))
		}).WithTimeout(time.Minute).Should(Succeed())
	})

	DescribeTable("releases what the API server rejected after kipam allowed it", func(cidr string, retain bool) {
		p := createPool(cidr, func(s *ipamv1alpha1.IPPoolSpec) {
			if retain {
				s.RetainReleased = &metav1.Duration{Duration: time.Hour}
			}
		})
		// A policy that rejects, after kipam's webhook, every claim labelled
		// reject=yes; a dry run allocates nothing.
		rejectLabelled("ipclaims", func() error {
			return k8sClient.Create(ctx, newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Labels = map[string]string{"reject": "yes"} }), client.DryRunAll)
		})
		Expect(ledgerOf(p.Name)).To(BeEmpty())

		var kept []string
		for i := range 30 {
			c := newClaim("default", p.Name, nil)
			if i%3 == 2 {
				c.Labels = map[string]string{"reject": "yes"}
				Expect(k8sClient.Create(ctx, c)).To(MatchError(ContainSubstring("rejected by policy")))
				continue
			}
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			kept = append(kept, c.Spec.CIDR)
		}
		Expect(len(ledgerOf(p.Name))).To(BeNumerically(">", len(kept)), "the rejected claims' prefixes were committed")
		By("counting them apart in the pool's status, as pending")
		pending := func(g Gomega) int32 {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			return p.Status.Pending
		}
		Eventually(pending).Should(BeEquivalentTo(10))
		By("releasing every leaked prefix once the orphan grace has passed")
		Eventually(func() []string { return ledgerOf(p.Name) }).WithTimeout(4 * orphanGrace).Should(ConsistOf(kept))
		Eventually(pending).Should(BeZero())
		// A claim that never existed keeps nothing, in a pool that retains
		// released prefixes too: its prefix is free for anyone.
		l, err := ipam.ReadLedger(ctx, k8sClient, p.Name)
		Expect(err).NotTo(HaveOccurred())
		Expect(l.Released).To(BeEmpty())
	},
		Entry("in a pool that keeps nothing", "10.71.0.0/24", false),
		Entry("in a pool that retains released prefixes", "10.71.1.0/24", true),
	)

	It("fences two allocators that both believe they own the pool", func() {
		p := createPool("10.72.0.0/20", nil)
		store := ipam.ClientStore{Reader: k8sClient, Writer: k8sClient}
		owners := []*ipam.Manager{ipam.NewManager(store, nil), ipam.NewManager(store, nil)}
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			got  []string
			lost int
		)
		for i := range 200 {
			wg.Go(func() {
				defer GinkgoRecover()
				bits := []int{32, 30, 29, 28}[i%4]
				prefix, err := owners[i%2].Allocate(ctx, ipam.Request{Pool: p, Bits: bits, Holder: "IPClaim/default"})
				mu.Lock()
				defer mu.Unlock()
				var ex *allocator.ExhaustedError
				switch {
				case errors.As(err, &ex):
					return
				case err != nil:
					Expect(err).To(MatchError(ipam.ErrBusy))
					lost++
					return
				}
				got = append(got, prefix.String())
			})
		}
		wg.Wait()
		Expect(got).NotTo(BeEmpty())
		expectDisjoint(got)
		Expect(ledgerOf(p.Name)).To(ConsistOf(got), "every answer was committed, and nothing else")
		GinkgoWriter.Printf("fence: %d committed, %d lost races retried, %d requests told they lost for good\n",
			len(got), owners[0].Conflicts()+owners[1].Conflicts(), lost)
	})

	It("expires a claim at its lifetime, renewed when ttlSeconds is raised", func() {
		p := createPool("10.74.0.0/24", nil)
		c := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.TTLSeconds = ptr.To[int64](3600) })
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(c.Status.ExpiresAt).NotTo(BeNil())
			g.Expect(c.Status.ExpiresAt.Time).To(BeTemporally("==", c.CreationTimestamp.Add(time.Hour)))
		}).Should(Succeed())

		By("renewing")
		patch := client.MergeFrom(c.DeepCopy())
		c.Spec.TTLSeconds = ptr.To[int64](7200)
		Expect(k8sClient.Patch(ctx, c, patch)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(c.Status.ExpiresAt.Time).To(BeTemporally("==", c.CreationTimestamp.Add(2*time.Hour)))
		}).Should(Succeed())

		By("moving the clock past the first lifetime: nothing happens")
		clockSkew.Store(int64(90 * time.Minute))
		DeferCleanup(func() { clockSkew.Store(0) })
		touch(c)
		Consistently(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c) }).WithTimeout(time.Second).Should(Succeed())

		By("moving it past the renewed one: released and deleted")
		clockSkew.Store(int64(2*time.Hour + time.Second))
		touch(c)
		Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)) }).Should(BeTrue())
		Expect(ledgerOf(p.Name)).To(BeEmpty())
		Expect(promtestutil.ToFloat64(metrics.Released.WithLabelValues(p.Name, ipamv1alpha1.ReasonExpired))).To(BeEquivalentTo(1))
		Expect(promtestutil.ToFloat64(metrics.Released.WithLabelValues(p.Name, "Deleted"))).To(BeZero(), "an expiry is counted once")
	})

	It("never binds a waiting claim whose lifetime ran out while it waited", func() {
		p := createPool("10.75.0.0/32", nil)
		holder := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, holder)).To(Succeed())
		waiting := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) {
			c.Spec.WhenExhausted = ipamv1alpha1.Wait
			c.Spec.TTLSeconds = ptr.To[int64](3600)
		})
		createWaiting(waiting, "waiting for space")
		clockSkew.Store(int64(time.Hour + time.Second))
		DeferCleanup(func() { clockSkew.Store(0) })
		touch(waiting) // its requeue is due in an hour of the real clock
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(waiting), waiting))
		}).
			Should(BeTrue(), "deleted at its lifetime, unbound")
		Expect(k8sClient.Delete(ctx, holder)).To(Succeed())
		Eventually(func() []string { return ledgerOf(p.Name) }).Should(BeEmpty())
		Consistently(func() []string { return ledgerOf(p.Name) }).WithTimeout(time.Second).Should(BeEmpty())
		Expect(promtestutil.ToFloat64(metrics.Released.WithLabelValues(p.Name, ipamv1alpha1.ReasonExpired))).To(BeZero(),
			"the waiting claim never held a prefix to release")
	})

	It("keeps every CIDR across a restart in the middle of a storm and never collides after it", func() {
		p := createPool("10.78.0.0/22", nil)
		ns := fmt.Sprintf("restart-%d", seq.Add(1))
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())

		const total, stopAfter, workers = 200, 50, 8
		todo := make(chan *ipamv1alpha1.IPClaim, total)
		for i := range total {
			todo <- newClaim(ns, p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To(int32([]int{32, 31, 30, 29}[i%4])) })
		}
		close(todo)
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			createdAs = map[string]string{} // claim name: the CIDR its create returned
			failed    []error
			succeeded atomic.Int64
			// down is closed once kipam has stopped. A worker that has seen
			// stopAfter creates succeed waits for it before its next create,
			// so that creates still in flight meet the shutdown and every
			// later one meets a kipam that is down.
			down     = make(chan struct{})
			stopping = make(chan struct{})
			stopOnce sync.Once
		)
		for range workers {
			wg.Go(func() {
				defer GinkgoRecover()
				for c := range todo {
					select {
					case <-stopping:
						<-down
					default:
					}
					err := k8sClient.Create(ctx, c)
					mu.Lock()
					if err != nil {
						failed = append(failed, err)
					} else {
						createdAs[c.Name] = c.Spec.CIDR
					}
					mu.Unlock()
					if err == nil && succeeded.Add(1) == stopAfter {
						stopOnce.Do(func() { close(stopping) })
					}
				}
			})
		}
		By("stopping kipam once enough creates have succeeded")
		Eventually(stopping).WithTimeout(2 * time.Minute).Should(BeClosed())
		stopKipam()
		close(down)
		wg.Wait()
		Expect(len(createdAs)).To(BeNumerically(">=", stopAfter))
		Expect(failed).NotTo(BeEmpty(), "some creates met kipam down")
		for _, err := range failed {
			// failurePolicy Fail: the API server rejects what it cannot admit.
			Expect(err).To(MatchError(ContainSubstring("mipclaim-v1alpha1.kb.io")))
		}
		GinkgoWriter.Printf("restart: %d creates succeeded, %d failed while kipam was down\n", len(createdAs), len(failed))

		By("starting a new kipam that knows only what the API server holds")
		stopKipam = startKipam()

		By("every stored claim keeping the CIDR its create returned")
		var claims ipamv1alpha1.IPClaimList
		Expect(k8sClient.List(ctx, &claims, client.InNamespace(ns))).To(Succeed())
		var stored []string
		for _, c := range claims.Items {
			if want, ok := createdAs[c.Name]; ok {
				Expect(c.Spec.CIDR).To(Equal(want), c.Name)
			}
			Expect(c.Spec.CIDR).NotTo(BeEmpty(), c.Name)
			stored = append(stored, c.Spec.CIDR)
		}
		Expect(len(stored)).To(BeNumerically(">=", len(createdAs)))
		expectDisjoint(stored)

		By("the ledger recording every stored claim, and nothing a failed create left behind once the orphan grace has passed")
		Expect(ledgerOf(p.Name)).To(ContainElements(stored))
		// Stopping kipam cancels the admission requests in flight; what they
		// committed regardless is left for the orphan sweep. The new kipam
		// sweeps every pool's ledger one at a time, and earlier specs left
		// hundreds of orphans in theirs, so this pool's turn may take a while.
		GinkgoWriter.Printf("restart: %d claims stored, %d prefixes in the ledger\n", len(stored), len(ledgerOf(p.Name)))
		Eventually(func() []string { return ledgerOf(p.Name) }).WithTimeout(time.Minute).Should(ConsistOf(stored))

		By("new claims never colliding with the stored ones")
		after := slices.Clone(stored)
		for i := range 40 {
			c := newClaim(ns, p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To(int32([]int{29, 30, 31, 32}[i%4])) })
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			after = append(after, c.Spec.CIDR)
		}
		expectDisjoint(after)
		Expect(ledgerOf(p.Name)).To(ConsistOf(after))

		By("binding every claim's IPAllocation")
		Eventually(func(g Gomega) {
			var allocs ipamv1alpha1.IPAllocationList
			g.Expect(k8sClient.List(ctx, &allocs, client.MatchingLabels{ipamv1alpha1.LabelPool: p.Name})).To(Succeed())
			var bound []string
			for _, a := range allocs.Items {
				expectHealthy(g, &a)
				bound = append(bound, a.Spec.CIDR)
			}
			g.Expect(bound).To(ConsistOf(after))
			g.Expect(k8sClient.List(ctx, &claims, client.InNamespace(ns))).To(Succeed())
			for _, c := range claims.Items {
				g.Expect(meta.IsStatusConditionTrue(c.Status.Conditions, ipamv1alpha1.ConditionReady)).To(BeTrue(), c.Name)
			}
		}).WithTimeout(time.Minute).Should(Succeed())
	})

	It("gives claims restored from a backup exactly their CIDRs back", func() {
		p := createPool("10.77.0.0/24", nil)
		var exported []*ipamv1alpha1.IPClaim
		for i := range 6 {
			c := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To(int32([]int{32, 29, 30}[i%3])) })
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			exported = append(exported, c.DeepCopy())
		}
		By("losing the cluster: claims, pool and ledger gone")
		for _, c := range exported {
			Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		}
		Eventually(func() []string { return ledgerOf(p.Name) }).Should(BeEmpty())
		Expect(k8sClient.Delete(ctx, p)).To(Succeed())
		// The garbage collector may already be deleting them: the pool owns its ledgers.
		Expect(k8sClient.DeleteAllOf(ctx, &ipamv1alpha1.IPLedger{}, client.MatchingLabels{ipamv1alpha1.LabelPool: p.Name})).To(Succeed())
		pools.Forget(p.Name)
		Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)) }).Should(BeTrue())
		restored := pool("10.77.0.0/24", nil)
		restored.Name = p.Name
		Expect(k8sClient.Create(ctx, restored)).To(Succeed())

		By("applying the exported claims in reverse order")
		for i := len(exported) - 1; i >= 0; i-- {
			c := exported[i]
			want := c.Spec.CIDR
			c.ResourceVersion, c.UID, c.CreationTimestamp, c.Status = "", "", metav1.Time{}, ipamv1alpha1.IPClaimStatus{}
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			Expect(c.Spec.CIDR).To(Equal(want))
		}
	})

	It("survives a new owner taking over in the middle of a storm", func() {
		p := createPool("10.76.0.0/22", nil)
		store := ipam.ClientStore{Reader: k8sClient, Writer: k8sClient}
		var (
			owner atomic.Pointer[ipam.Manager]
			wg    sync.WaitGroup
			mu    sync.Mutex
			got   []string
		)
		owner.Store(ipam.NewManager(store, nil))
		for i := range 300 {
			if i == 150 {
				owner.Store(ipam.NewManager(store, nil)) // the old one's in-flight batches still finish
			}
			wg.Go(func() {
				defer GinkgoRecover()
				prefix, err := owner.Load().Allocate(ctx, ipam.Request{Pool: p, Bits: []int{32, 31, 30}[i%3], Holder: "IPClaim/default"})
				if errors.Is(err, ipam.ErrBusy) {
					return
				}
				Expect(err).NotTo(HaveOccurred())
				mu.Lock()
				got = append(got, prefix.String())
				mu.Unlock()
			})
		}
		wg.Wait()
		expectDisjoint(got)
		Expect(ledgerOf(p.Name)).To(ConsistOf(got))
	})
})

// touch changes an annotation so that the claim is reconciled now.
func touch(c *ipamv1alpha1.IPClaim) {
	GinkgoHelper()
	patch := client.MergeFrom(c.DeepCopy())
	metav1.SetMetaDataAnnotation(&c.ObjectMeta, "test.kipam.dev/touched", fmt.Sprint(seq.Add(1)))
	Expect(k8sClient.Patch(ctx, c, patch)).To(Succeed())
}
