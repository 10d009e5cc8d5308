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
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// dualSeq numbers the pools of the table's entries.
var dualSeq atomic.Int32

// dualClaim is a dual-stack claim of namespace ns from pools, one per
// family of families.
func dualClaim(ns string, policy ipamv1alpha1.IPFamilyPolicy, families []ipamv1alpha1.IPFamily, pools []string, lengths ...int32) *ipamv1alpha1.IPClaim {
	return newClaim(ns, "", func(c *ipamv1alpha1.IPClaim) {
		c.Spec.IPFamilyPolicy, c.Spec.IPFamilies, c.Spec.Pools, c.Spec.PrefixLengths = policy, families, pools, lengths
	})
}

// v6Pool creates an IPv6 pool handing out /64s by default.
func v6Pool(cidr string, mutate func(*ipamv1alpha1.IPPoolSpec)) *ipamv1alpha1.IPPool {
	GinkgoHelper()
	return createPool(cidr, func(s *ipamv1alpha1.IPPoolSpec) {
		s.DefaultPrefixLength = ptr.To[int32](64)
		if mutate != nil {
			mutate(s)
		}
	})
}

// expectBoundToBoth waits until the claim is Ready with one healthy
// IPAllocation per prefix, each naming the claim and the claim's entry.
func expectBoundToBoth(c *ipamv1alpha1.IPClaim) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(c.Status.Conditions, ipamv1alpha1.ConditionReady)).To(BeTrue())
		g.Expect(c.Status.CIDRs).To(Equal(c.Spec.CIDRs))
		g.Expect(c.Status.Allocations).To(HaveLen(len(c.Spec.CIDRs)))
		for i, name := range c.Status.Allocations {
			var a ipamv1alpha1.IPAllocation
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &a)).To(Succeed())
			g.Expect(a.Spec.CIDR).To(Equal(c.Spec.CIDRs[i]))
			g.Expect(a.Spec.ClaimRef.UID).To(Equal(c.UID))
			g.Expect(a.Spec.Entry).To(Equal(ipam.ClaimEntryID(c)))
			expectHealthy(g, &a)
		}
	}).Should(Succeed())
}

// waitingDual fills pool full with a claim of namespace ns (the filler),
// then creates a RequireDualStack claim of ns from pools (IPv4, IPv6) that
// waits for space (whenExhausted: Wait).
func waitingDual(ns string, pools []string, full string) (claim, filler *ipamv1alpha1.IPClaim) {
	GinkgoHelper()
	filler = newClaim(ns, full, nil)
	Expect(k8sClient.Create(ctx, filler)).To(Succeed())
	claim = dualClaim(ns, ipamv1alpha1.RequireDualStack, []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv4, ipamv1alpha1.IPv6}, pools)
	claim.Spec.WhenExhausted = ipamv1alpha1.Wait
	Expect(k8sClient.Create(ctx, claim)).To(Succeed())
	return claim, filler
}

// rejectLedgerWrites installs, until the spec ends, a policy that refuses
// every write of pool's ledgers: a commit to the pool fails. The pool's
// root ledger must exist (probe is a dry-run update of it).
func rejectLedgerWrites(pool string) {
	GinkgoHelper()
	installPolicy("reject-ledger-"+pool, "ipledgers",
		[]admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
		fmt.Sprintf("object.spec.pool != '%s'", pool), "ledger write rejected by policy", func() error {
			var l ipamv1alpha1.IPLedger
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: pool}, &l); err != nil {
				return err
			}
			return k8sClient.Update(ctx, &l, client.DryRunAll)
		})
}

var _ = Describe("Dual-stack claims", func() {
	v4v6 := []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv4, ipamv1alpha1.IPv6}
	v6v4 := []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv6, ipamv1alpha1.IPv4}

	It("allocates both families in the create response, records each, and releases both on delete", func() {
		p4 := createPool("10.250.0.0/24", nil)
		p6 := v6Pool("fd00:250::/48", nil)
		c := dualClaim("default", ipamv1alpha1.RequireDualStack, v6v4, []string{p6.Name, p4.Name}, 64, 28)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDRs).To(Equal([]string{"fd00:250::/64", "10.250.0.0/28"}), "primary first")
		Expect(c.Spec.CIDR).To(Equal("fd00:250::/64"), "spec.cidr stays the primary")
		Expect(c.Annotations).To(HaveKeyWithValue(ipam.PoolAnnotation, p6.Name))
		Expect(c.Annotations).To(HaveKeyWithValue(ipam.SecondaryPoolAnnotation, p4.Name))
		Expect(c.Annotations).NotTo(HaveKey(ipam.FallbackAnnotation))
		Expect(c.Finalizers).To(ContainElement(ipamv1alpha1.ClaimFinalizer))
		Expect(ledgerOf(p6.Name)).To(ConsistOf("fd00:250::/64"))
		Expect(ledgerOf(p4.Name)).To(ConsistOf("10.250.0.0/28"))

		By("binding one IPAllocation per family, and saying it holds both")
		expectBoundToBoth(c)
		cond := meta.FindStatusCondition(c.Status.Conditions, ipamv1alpha1.ConditionDualStack)
		Expect(cond).NotTo(BeNil())
		Expect(cond.Status).To(Equal(metav1.ConditionTrue))
		Expect(cond.Reason).To(Equal(ipamv1alpha1.ReasonBothFamilies))

		By("keeping both through an update that leaves them out, and refusing to change them")
		Eventually(func() error {
			var cur ipamv1alpha1.IPClaim
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(c), &cur); err != nil {
				return err
			}
			cur.Spec.CIDR, cur.Spec.CIDRs = "", nil
			delete(cur.Annotations, ipam.SecondaryPoolAnnotation)
			cur.Labels = map[string]string{"touched": "yes"}
			return k8sClient.Update(ctx, &cur)
		}).Should(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
		Expect(c.Spec.CIDRs).To(Equal([]string{"fd00:250::/64", "10.250.0.0/28"}))
		Expect(c.Annotations).To(HaveKeyWithValue(ipam.SecondaryPoolAnnotation, p4.Name))
		moved := c.DeepCopy()
		moved.Spec.CIDRs = []string{"fd00:250::/64", "10.250.0.16/28"}
		Expect(k8sClient.Update(ctx, moved)).To(MatchError(ContainSubstring("cidrs is written by kipam when it allocates the claim and is immutable once set")))

		By("releasing both entries, each in its own pool, when the claim is deleted")
		allocations := c.Status.Allocations
		Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		Eventually(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c) }).Should(Satisfy(apierrors.IsNotFound))
		Expect(ledgerOf(p6.Name)).To(BeEmpty())
		Expect(ledgerOf(p4.Name)).To(BeEmpty())
		for _, name := range allocations {
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &ipamv1alpha1.IPAllocation{})).To(Satisfy(apierrors.IsNotFound), name)
		}
	})

	It("chooses one pool per family by selector", func() {
		lbl := map[string]string{"tier": fmt.Sprintf("dual-%d", seq.Add(1))}
		p4 := pool("10.250.1.0/24", nil)
		p4.Labels = lbl
		p6 := pool("fd00:250:1::/48", func(s *ipamv1alpha1.IPPoolSpec) { s.DefaultPrefixLength = ptr.To[int32](64) })
		p6.Labels = lbl
		Expect(k8sClient.Create(ctx, p4)).To(Succeed())
		Expect(k8sClient.Create(ctx, p6)).To(Succeed())
		c := newClaim("default", "", func(c *ipamv1alpha1.IPClaim) {
			c.Spec.IPFamilyPolicy, c.Spec.IPFamilies = ipamv1alpha1.PreferDualStack, v4v6
			c.Spec.PoolSelector = &metav1.LabelSelector{MatchLabels: lbl}
		})
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDRs).To(Equal([]string{"10.250.1.0/32", "fd00:250:1::/64"}))
		Expect(c.Annotations).To(HaveKeyWithValue(ipam.PoolAnnotation, p4.Name))
		Expect(c.Annotations).To(HaveKeyWithValue(ipam.SecondaryPoolAnnotation, p6.Name))
		expectBoundToBoth(c)
	})

	DescribeTable("commits neither family when the second cannot be allocated",
		func(second func(ns string) string, wantStatus func(error) bool, why string) {
			ns := createNamespace(map[string]string{"team": "red"})
			p4 := createPool(fmt.Sprintf("10.251.%d.0/24", dualSeq.Add(1)), nil)
			before := ledgerOf(p4.Name)
			c := dualClaim(ns, ipamv1alpha1.RequireDualStack, v4v6, []string{p4.Name, second(ns)})
			err := k8sClient.Create(ctx, c)
			Expect(err).To(Satisfy(wantStatus), "%v", err)
			Expect(err).To(MatchError(ContainSubstring("IPv6 (spec.ipFamilies[1])")))
			Expect(err).To(MatchError(ContainSubstring(why)))
			Expect(err).To(MatchError(MatchRegexp(`nothing is allocated to the claim: 10\.251\.\d+\.0/32, committed in pool \S+, was released`)))
			Expect(ledgerOf(p4.Name)).To(Equal(before), "the first family's entry was released before the denial")
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Satisfy(apierrors.IsNotFound))
		},
		Entry("exhausted", func(ns string) string {
			full := v6Pool("fd00:250:2::/64", nil)
			Expect(k8sClient.Create(ctx, newClaim(ns, full.Name, nil))).To(Succeed())
			return full.Name
		}, apierrors.IsForbidden, "is exhausted"),
		Entry("closed to the namespace", func(string) string {
			return v6Pool("fd00:250:3::/48", func(s *ipamv1alpha1.IPPoolSpec) {
				s.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}}
			}).Name
		}, apierrors.IsInvalid, "spec.pools[1]: Not found"),
		Entry("not found", func(string) string { return "no-such-v6-pool" }, apierrors.IsInvalid, `spec.pools[1]: Not found: "no-such-v6-pool`),
		Entry("of the wrong family", func(string) string { return createPool(fmt.Sprintf("10.251.%d.0/24", dualSeq.Add(1)), nil).Name },
			apierrors.IsInvalid, "spec.ipFamilies[1]: Invalid value: \"IPv6\""),
	)

	It("releases the first family's entry when the second pool's commit fails", func() {
		p4 := createPool("10.250.4.0/24", nil)
		p6 := v6Pool("fd00:250:4::/48", nil)
		Expect(k8sClient.Create(ctx, newClaim("default", p6.Name, nil))).To(Succeed()) // the root ledger exists
		rejectLedgerWrites(p6.Name)
		before := ledgerOf(p4.Name)
		c := dualClaim("default", ipamv1alpha1.RequireDualStack, v4v6, []string{p4.Name, p6.Name})
		err := k8sClient.Create(ctx, c)
		Expect(err).To(MatchError(ContainSubstring("ledger write rejected by policy")))
		Expect(err).To(MatchError(ContainSubstring("was released")))
		Expect(ledgerOf(p4.Name)).To(Equal(before))
	})

	It("falls back to the family that fits under PreferDualStack, and says why", func() {
		p4 := createPool("10.250.5.0/24", nil)
		full := v6Pool("fd00:250:5::/64", nil)
		Expect(k8sClient.Create(ctx, newClaim("default", full.Name, nil))).To(Succeed())
		c := dualClaim("default", ipamv1alpha1.PreferDualStack, v6v4, []string{full.Name, p4.Name})
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDRs).To(Equal([]string{"10.250.5.0/32"}))
		Expect(c.Spec.CIDR).To(Equal("10.250.5.0/32"))
		Expect(c.Annotations).To(HaveKeyWithValue(ipam.PoolAnnotation, p4.Name))
		Expect(c.Annotations).NotTo(HaveKey(ipam.SecondaryPoolAnnotation))
		expectBoundToBoth(c)
		cond := meta.FindStatusCondition(c.Status.Conditions, ipamv1alpha1.ConditionDualStack)
		Expect(cond).NotTo(BeNil())
		Expect(cond.Status).To(Equal(metav1.ConditionFalse))
		Expect(cond.Reason).To(Equal(ipamv1alpha1.ReasonFellBack))
		Expect(cond.Message).To(ContainSubstring("IPv6 (spec.ipFamilies[0])"))
		Expect(cond.Message).To(ContainSubstring("is exhausted"))

		By("denying it when neither family fits, saying why for each")
		Expect(k8sClient.Create(ctx, dualClaim("default", ipamv1alpha1.PreferDualStack, v6v4, []string{full.Name, "no-such-v4-pool"}))).
			To(MatchError(SatisfyAll(ContainSubstring("is exhausted"), ContainSubstring("no-such-v4-pool"))))
	})

	// The resolver leaves out pools being deleted; a deletion its cache
	// has not seen yet meets the commit's ErrPoolDeleted, which falls back
	// the same way.
	It("falls back under PreferDualStack when every pool of one family its selector matches is being deleted", func() {
		lbl := map[string]string{"tier": fmt.Sprintf("dual-%d", seq.Add(1))}
		p4 := pool("10.250.20.0/24", nil)
		p4.Labels = lbl
		Expect(k8sClient.Create(ctx, p4)).To(Succeed())
		for _, cidr := range []string{"fd00:250:20::/48", "fd00:250:21::/48"} {
			p6 := pool(cidr, func(s *ipamv1alpha1.IPPoolSpec) { s.DefaultPrefixLength = ptr.To[int32](64) })
			p6.Labels = lbl
			Expect(k8sClient.Create(ctx, p6)).To(Succeed())
			Expect(k8sClient.Create(ctx, newClaim("default", p6.Name, nil))).To(Succeed()) // keeps it draining
			Expect(k8sClient.Delete(ctx, p6)).To(Succeed())
			Eventually(poolReady(p6)).Should(HaveField("Reason", ipamv1alpha1.ReasonDraining))
		}
		c := newClaim("default", "", func(c *ipamv1alpha1.IPClaim) {
			c.Spec.IPFamilyPolicy, c.Spec.IPFamilies = ipamv1alpha1.PreferDualStack, v4v6
			c.Spec.PoolSelector = &metav1.LabelSelector{MatchLabels: lbl}
		})
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDRs).To(Equal([]string{"10.250.20.0/32"}))
		Eventually(func(g Gomega) *metav1.Condition {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			return meta.FindStatusCondition(c.Status.Conditions, ipamv1alpha1.ConditionDualStack)
		}).Should(And(Not(BeNil()),
			HaveField("Reason", ipamv1alpha1.ReasonFellBack),
			HaveField("Message", ContainSubstring("no IPv6 pool matching the selector"))))
	})

	It("releases both entries of a dual-stack claim the API server refused after kipam allowed it", func() {
		p4 := createPool("10.250.6.0/24", nil)
		p6 := v6Pool("fd00:250:6::/48", nil)
		rejectLabelled("ipclaims", func() error {
			return k8sClient.Create(ctx, newClaim("default", p4.Name, func(c *ipamv1alpha1.IPClaim) { c.Labels = map[string]string{"reject": "yes"} }), client.DryRunAll)
		})
		kept := dualClaim("default", ipamv1alpha1.RequireDualStack, v4v6, []string{p4.Name, p6.Name})
		Expect(k8sClient.Create(ctx, kept)).To(Succeed())
		half := dualClaim("default", ipamv1alpha1.RequireDualStack, v4v6, []string{p4.Name, p6.Name})
		half.Labels = map[string]string{"reject": "yes"}
		Expect(k8sClient.Create(ctx, half)).To(MatchError(ContainSubstring("rejected by policy")))
		Expect(ledgerOf(p4.Name)).To(HaveLen(2), "both families were committed for the refused claim")
		Expect(ledgerOf(p6.Name)).To(HaveLen(2))

		By("the orphan sweep releasing both once the grace has passed, and keeping the stored claim's")
		Eventually(func() []string { return ledgerOf(p4.Name) }).WithTimeout(4 * orphanGrace).Should(ConsistOf(kept.Spec.CIDRs[0]))
		Eventually(func() []string { return ledgerOf(p6.Name) }).WithTimeout(4 * orphanGrace).Should(ConsistOf(kept.Spec.CIDRs[1]))
		expectBoundToBoth(kept)
	})

	It("commits both when the two pools have different owners, and when the second's owner is gone", func() {
		p4 := createPool("10.250.7.0/24", nil)
		p6 := v6Pool("fd00:250:7::/48", nil)
		owner := startReplica("replica-dual")
		Expect(owner.owners.Owner(ctx, p6.Name)).To(BeEmpty(), "the replica takes the IPv6 pool's free Lease")

		By("making the suite's kipam a routed replica: it owns the IPv4 pool and forwards the IPv6 one")
		routeHere("replica-here")
		forwarded := dualClaim("default", ipamv1alpha1.RequireDualStack, v4v6, []string{p4.Name, p6.Name})
		Expect(k8sClient.Create(ctx, forwarded)).To(Succeed())
		Expect(forwarded.Spec.CIDRs).To(HaveLen(2))
		_, servedHere := pools.Snapshot(p6.Name)
		Expect(servedHere).To(BeFalse(), "the IPv6 family was committed by its owner")
		snap, ok := owner.pools.Snapshot(p6.Name)
		Expect(ok).To(BeTrue())
		Expect(snap.Claims).To(BeEquivalentTo(1))

		By("stopping the IPv6 pool's owner after the IPv4 pool's commits: the second commit is served here")
		owner.stop()
		var all4, all6 []string
		all4, all6 = append(all4, forwarded.Spec.CIDRs[0]), append(all6, forwarded.Spec.CIDRs[1])
		for range 3 {
			d := dualClaim("default", ipamv1alpha1.RequireDualStack, v4v6, []string{p4.Name, p6.Name})
			Expect(k8sClient.Create(ctx, d)).To(Succeed())
			all4, all6 = append(all4, d.Spec.CIDRs[0]), append(all6, d.Spec.CIDRs[1])
		}
		expectDisjoint(all6)
		Expect(ledgerOf(p4.Name)).To(ConsistOf(all4))
		Expect(ledgerOf(p6.Name)).To(ConsistOf(all6))
	})

	Describe("when the second pool's owner commits and fails over before it answers", func() {
		// answerLost serves a forwarded change (the owner commits it) and
		// then drops the connection, as an owner that dies before it
		// answers: the forwarding replica learns nothing of the commit.
		answerLost := func(served *atomic.Int32) func(*replicaConfig) {
			return func(rc *replicaConfig) {
				rc.handler = func(h http.Handler) http.Handler {
					return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
						h.ServeHTTP(httptest.NewRecorder(), req)
						served.Add(1)
						panic(http.ErrAbortHandler)
					})
				}
			}
		}

		It("keeps both families: the second is committed here, and the owner's unanswered entry is swept", func() {
			p4 := createPool("10.250.10.0/24", nil)
			p6 := v6Pool("fd00:250:10::/48", nil)
			var served atomic.Int32
			owner := startReplica("replica-lost", answerLost(&served))
			Expect(owner.owners.Owner(ctx, p6.Name)).To(BeEmpty(), "the replica takes the IPv6 pool's free Lease")
			routeHere("replica-here-lost")
			c := dualClaim("default", ipamv1alpha1.RequireDualStack, v4v6, []string{p4.Name, p6.Name})
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			Expect(served.Load()).To(BeEquivalentTo(1), "the IPv6 family was committed by its owner, whose answer was lost")
			owner.stop()
			Expect(c.Spec.CIDRs).To(HaveLen(2))
			Expect(ledgerOf(p4.Name)).To(ConsistOf(c.Spec.CIDRs[0]), "one entry in the first pool: the claim's")
			six := ledgerOf(p6.Name)
			Expect(six).To(HaveLen(2), "the owner's commit and the one made here after it could not answer")
			Expect(six).To(ContainElement(c.Spec.CIDRs[1]))
			expectDisjoint(six)
			expectBoundToBoth(c)

			By("the orphan sweep releasing the owner's entry, which no claim carries")
			Eventually(func() []string { return ledgerOf(p6.Name) }).WithTimeout(4 * orphanGrace).Should(ConsistOf(c.Spec.CIDRs[1]))
			Expect(ledgerOf(p4.Name)).To(ConsistOf(c.Spec.CIDRs[0]))
		})

		It("commits neither when the commit here is refused too, leaving nothing in the first pool", func() {
			p4 := createPool("10.250.11.0/24", nil)
			p6 := v6Pool("fd00:250:11::/48", nil)
			Expect(k8sClient.Create(ctx, newClaim("default", p6.Name, nil))).To(Succeed()) // the root ledger exists
			var served atomic.Int32
			user := "kipam-replica-refused"
			owner := startReplica("replica-refused", answerLost(&served), func(rc *replicaConfig) { rc.user = user })
			Expect(owner.owners.Owner(ctx, p6.Name)).To(BeEmpty(), "the replica takes the IPv6 pool's free Lease")
			By("refusing every write of the IPv6 pool's ledgers but the owner's")
			installPolicy("reject-ledger-here-"+p6.Name, "ipledgers",
				[]admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				fmt.Sprintf("request.userInfo.username == '%s' || object.spec.pool != '%s'", user, p6.Name), "ledger write rejected by policy", func() error {
					var l ipamv1alpha1.IPLedger
					if err := k8sClient.Get(ctx, client.ObjectKey{Name: p6.Name}, &l); err != nil {
						return err
					}
					return k8sClient.Update(ctx, &l, client.DryRunAll)
				})
			routeHere("replica-here-refused")
			before4, before6 := ledgerOf(p4.Name), ledgerOf(p6.Name)
			c := dualClaim("default", ipamv1alpha1.RequireDualStack, v4v6, []string{p4.Name, p6.Name})
			err := k8sClient.Create(ctx, c)
			Expect(err).To(MatchError(ContainSubstring("ledger write rejected by policy")))
			Expect(err).To(MatchError(MatchRegexp(`nothing is allocated to the claim: 10\.250\.11\.0/32, committed in pool \S+, was released`)))
			// The release of the owner's entry that the ledger's sweep tries
			// is forwarded to it too: not only the request's commit.
			Expect(served.Load()).To(BeNumerically(">=", 1), "the IPv6 family was committed by its owner, whose answer was lost")
			owner.stop()
			Expect(ledgerOf(p4.Name)).To(Equal(before4), "nothing left in the first pool")
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Satisfy(apierrors.IsNotFound))
			// The owner's entries (one per attempt: client-go retries a
			// create answered "busy") carry entry IDs that no stored claim
			// carries: the orphan sweep's case, as for any create the API
			// server never stored (the spec above sees it swept; the policy
			// keeps the sweep from writing here).
			Expect(len(ledgerOf(p6.Name))).To(BeNumerically(">", len(before6)), "the owner committed the IPv6 family")
		})
	})

	It("waits with one family exhausted, holding nothing in the other, and binds both when space frees", func() {
		ns := waitNamespace()
		p4 := createPool("10.250.8.0/24", nil)
		full := v6Pool("fd00:250:8::/64", nil) // one /64: one claim fills it
		c, filler := waitingDual(ns, []string{p4.Name, full.Name}, full.Name)
		Expect(c.Spec.CIDR).To(BeEmpty())
		Expect(c.Spec.CIDRs).To(BeEmpty())
		Expect(c.Annotations).NotTo(HaveKey(ipam.EntryAnnotation))
		Expect(c.Finalizers).To(ContainElement(ipamv1alpha1.ClaimFinalizer))

		By("waiting on the exhausted family's pool, with nothing held in the first family's")
		Eventually(readyReason(c)).Should(SatisfyAll(
			HaveField("Reason", ipamv1alpha1.ReasonPending),
			HaveField("Message", ContainSubstring("IPv6 (spec.ipFamilies[1]): waiting for space in pool "+full.Name))))
		Expect(c.Status.Pool).To(Equal(full.Name))
		Expect(ledgerOf(p4.Name)).To(BeEmpty(), "the IPv4 family was released at admission and is not committed while the claim waits")

		By("refusing a user's bind of the waiting claim")
		Eventually(func() error {
			forged := c.DeepCopy()
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(c), forged); err != nil {
				return err
			}
			forged.Spec.CIDR, forged.Spec.CIDRs = "10.250.8.0/32", []string{"10.250.8.0/32", "fd00:250:8::/64"}
			forged.Annotations = map[string]string{ipam.PoolAnnotation: p4.Name, ipam.SecondaryPoolAnnotation: full.Name}
			return k8sClient.Update(ctx, forged)
		}).Should(MatchError(ContainSubstring("only kipam sets the cidr")))

		By("a single-stack claim of the namespace on the first family's pool queueing behind it")
		behind := waiter(ns, p4.Name, nil)
		Expect(k8sClient.Create(ctx, behind)).To(Succeed())
		Expect(behind.Spec.CIDR).To(BeEmpty(), "the dual-stack claim waits on %s too", p4.Name)

		By("binding both families when the exhausted pool's claim is deleted: the ledger's watch wakes it (the pool has no reuse grace to requeue it)")
		Expect(k8sClient.Delete(ctx, filler)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(c.Spec.CIDRs).To(Equal([]string{"10.250.8.0/32", "fd00:250:8::/64"}))
		}).Should(Succeed())
		Expect(c.Spec.CIDR).To(Equal(c.Spec.CIDRs[0]))
		Expect(c.Annotations).To(HaveKeyWithValue(ipam.PoolAnnotation, p4.Name))
		Expect(c.Annotations).To(HaveKeyWithValue(ipam.SecondaryPoolAnnotation, full.Name))
		expectBoundToBoth(c)
		expectBound(behind)
		Expect(ledgerOf(p4.Name)).To(ConsistOf(c.Spec.CIDRs[0], behind.Spec.CIDR))
		Expect(ledgerOf(full.Name)).To(ConsistOf(c.Spec.CIDRs[1]))
		for i, pool := range []string{p4.Name, full.Name} {
			e, ok, err := ipam.LookupEntry(ctx, k8sClient, pool, netip.MustParsePrefix(c.Spec.CIDRs[i]))
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue())
			Expect(e.ID).To(Equal(string(c.UID)), "a bound waiting claim's entries are named by its uid")
		}

		By("releasing both when it is deleted")
		Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		Eventually(func() []string { return ledgerOf(full.Name) }).Should(BeEmpty())
		Expect(ledgerOf(p4.Name)).To(ConsistOf(behind.Spec.CIDR))
	})

	It("commits nothing for a waiting claim whose first family is exhausted", func() {
		ns := waitNamespace()
		full := createPool("10.250.9.0/32", nil)
		p6 := v6Pool("fd00:250:9::/48", nil)
		c, filler := waitingDual(ns, []string{full.Name, p6.Name}, full.Name)
		Expect(c.Spec.CIDRs).To(BeEmpty())
		Eventually(readyReason(c)).Should(HaveField("Message", ContainSubstring("IPv4 (spec.ipFamilies[0]): waiting for space in pool "+full.Name)))
		Expect(ledgerOf(p6.Name)).To(BeEmpty())
		Expect(k8sClient.Delete(ctx, filler)).To(Succeed())
		expectBoundToBoth(c)
		Expect(c.Spec.CIDRs).To(Equal([]string{"10.250.9.0/32", "fd00:250:9::/64"}))
	})

	It("gives dual-stack claims restored from a backup exactly both CIDRs back, and denies a restore of prefixes held by another", func() {
		p4 := createPool("10.250.12.0/24", nil)
		p6 := v6Pool("fd00:250:12::/48", nil)
		var exported []*ipamv1alpha1.IPClaim
		for i := range 4 {
			c := dualClaim("default", ipamv1alpha1.RequireDualStack, v4v6, []string{p4.Name, p6.Name}, []int32{32, 30}[i%2], []int32{64, 60}[i%2])
			if i%2 == 1 {
				c = dualClaim("default", ipamv1alpha1.PreferDualStack, v6v4, []string{p6.Name, p4.Name}, 60, 30)
			}
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			Expect(c.Spec.CIDRs).To(HaveLen(2))
			exported = append(exported, c.DeepCopy())
		}
		By("losing the claims: both ledgers empty")
		for _, c := range exported {
			Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		}
		Eventually(func() []string { return append(ledgerOf(p4.Name), ledgerOf(p6.Name)...) }).Should(BeEmpty())
		// The ledgers empty before the last finalizer goes: a claim may
		// still be stored, and applying it again would meet AlreadyExists.
		for _, c := range exported {
			Eventually(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(c), &ipamv1alpha1.IPClaim{}) }).
				Should(Satisfy(apierrors.IsNotFound))
		}

		By("applying the exported claims in reverse order: each gets both its CIDRs back")
		var all4, all6 []string
		for i := len(exported) - 1; i >= 0; i-- {
			c := exported[i].DeepCopy()
			want := c.Spec.CIDRs
			c.ResourceVersion, c.UID, c.CreationTimestamp, c.Status = "", "", metav1.Time{}, ipamv1alpha1.IPClaimStatus{}
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			Expect(c.Spec.CIDRs).To(Equal(want))
			Expect(c.Spec.CIDR).To(Equal(want[0]))
			Expect(c.Annotations).To(HaveKeyWithValue(ipam.SecondaryPoolAnnotation, exported[i].Annotations[ipam.SecondaryPoolAnnotation]))
			Expect(c.Annotations[ipam.EntryAnnotation]).NotTo(Equal(exported[i].Annotations[ipam.EntryAnnotation]), "a fresh entry, not the backup's")
			expectBoundToBoth(c)
			for _, cidr := range want {
				if netip.MustParsePrefix(cidr).Addr().Is4() {
					all4 = append(all4, cidr)
				} else {
					all6 = append(all6, cidr)
				}
			}
		}
		Expect(ledgerOf(p4.Name)).To(ConsistOf(all4))
		Expect(ledgerOf(p6.Name)).To(ConsistOf(all6))

		By("denying the restore of a claim whose IPv6 prefix another holds, with nothing left in the IPv4 pool")
		thief := exported[0].DeepCopy()
		thief.Name, thief.ResourceVersion, thief.UID, thief.CreationTimestamp, thief.Status = "", "", "", metav1.Time{}, ipamv1alpha1.IPClaimStatus{}
		free4 := "10.250.12.128/32"
		thief.Spec.CIDRs[0], thief.Spec.CIDR = free4, free4
		err := k8sClient.Create(ctx, thief)
		Expect(err).To(MatchError(ContainSubstring("IPv6 (spec.ipFamilies[1])")))
		Expect(err).To(MatchError(ContainSubstring(free4 + ", committed in pool " + p4.Name + ", was released")))
		Expect(ledgerOf(p4.Name)).To(ConsistOf(all4))
	})

	It("holds both prefixes for their pools' reuse grace, and expires a claim at its ttlSeconds releasing both", func() {
		grace := func(s *ipamv1alpha1.IPPoolSpec) { s.ReuseGracePeriodSeconds = ptr.To[int64](3600) }
		p4 := createPool("10.250.13.0/24", grace)
		p6 := v6Pool("fd00:250:13::/48", grace)
		c := dualClaim("default", ipamv1alpha1.RequireDualStack, v4v6, []string{p4.Name, p6.Name})
		c.Spec.TTLSeconds = ptr.To[int64](2)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		cidrs := c.Spec.CIDRs
		Expect(cidrs).To(HaveLen(2))

		By("deleting it at its lifetime, releasing each prefix by its own entry")
		Eventually(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c) }).WithTimeout(30 * time.Second).Should(Satisfy(apierrors.IsNotFound))
		for i, pool := range []string{p4.Name, p6.Name} {
			l, err := ipam.ReadLedger(ctx, k8sClient, pool)
			Expect(err).NotTo(HaveOccurred())
			Expect(l.Allocations).To(BeEmpty())
			Expect(l.Holds).To(HaveKey(netip.MustParsePrefix(cidrs[i])), "held for the reuse grace in pool %s", pool)
		}

		By("giving a new claim other prefixes in both families while the grace lasts")
		d := dualClaim("default", ipamv1alpha1.RequireDualStack, v4v6, []string{p4.Name, p6.Name})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Expect(d.Spec.CIDRs[0]).NotTo(Equal(cidrs[0]))
		Expect(d.Spec.CIDRs[1]).NotTo(Equal(cidrs[1]))
	})
})
