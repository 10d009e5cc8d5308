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
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"go4.org/netipx"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/controller"
	"github.com/kipam/kipam/internal/ipam"
)

// child is a pool to carve from parent: a /bits when cidr is empty, else
// exactly cidr.
func child(parent *ipamv1alpha1.IPPool, bits int32, cidr string) *ipamv1alpha1.IPPool {
	return pool(cidr, func(s *ipamv1alpha1.IPPoolSpec) {
		s.ParentPool = parent.Name
		if cidr == "" {
			s.PrefixLength = ptr.To(bits)
		}
	})
}

// createAsClientsDo creates obj, and again after an answer that says to
// retry (429, 500, a timeout), with backoff, as controllers do: a spec
// that counts successes then does not depend on how loaded the machine is.
func createAsClientsDo(c client.Client, obj client.Object) error {
	retryable := func(err error) bool {
		return apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err) || apierrors.IsServerTimeout(err) ||
			apierrors.IsTimeout(err) || apierrors.IsServiceUnavailable(err)
	}
	backoff := wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: 8, Cap: 5 * time.Second}
	return retry.OnError(backoff, retryable, func() error { return c.Create(ctx, obj) })
}

// fastClient is a client without client-go's rate limit, for specs that
// send hundreds of requests at once.
func fastClient() client.Client {
	GinkgoHelper()
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst = -1, 0
	cl, err := client.New(c, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	return cl
}

// deleteAndWait deletes obj and waits until it is gone.
func deleteAndWait(obj client.Object) {
	GinkgoHelper()
	Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, obj))).To(Succeed())
	Eventually(func() bool {
		return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj))
	}).WithTimeout(30 * time.Second).Should(BeTrue())
}

var _ = Describe("Pool hierarchy", func() {
	DescribeTable("carves four levels at creation, the cidr in the create response",
		func(top string, bits []int32) {
			levels := []*ipamv1alpha1.IPPool{createPool(top, nil)}
			for _, b := range bits {
				parent := levels[len(levels)-1]
				c := child(parent, b, "")
				Expect(k8sClient.Create(ctx, c)).To(Succeed())
				Expect(c.Spec.CIDR).NotTo(BeEmpty(), "the create response carries the carved cidr")
				p := netip.MustParsePrefix(c.Spec.CIDR)
				Expect(p.Bits()).To(BeEquivalentTo(b))
				Expect(netip.MustParsePrefix(parent.Spec.CIDR).Contains(p.Addr())).To(BeTrue(), "%s inside %s", p, parent.Spec.CIDR)
				Expect(c.Annotations).To(HaveKey(ipam.EntryAnnotation))
				Expect(ledgerOf(parent.Name)).To(ContainElement(c.Spec.CIDR), "recorded in the parent's ledger")
				levels = append(levels, c)
			}

			By("every level's claims and children stay out of one another, whatever is asked for")
			for i, lvl := range levels {
				// Ask the parent for everything up to the child's size:
				// none of it may fall inside the child.
				for range 4 {
					c := newClaim("default", lvl.Name, nil)
					Expect(k8sClient.Create(ctx, c)).To(Succeed())
					if i+1 < len(levels) {
						Expect(netip.MustParsePrefix(levels[i+1].Spec.CIDR).Overlaps(netip.MustParsePrefix(c.Spec.CIDR))).To(BeFalse(),
							"claim %s on %s lies in its child %s", c.Spec.CIDR, lvl.Name, levels[i+1].Spec.CIDR)
					}
				}
				expectDisjoint(ledgerOf(lvl.Name))
			}
			if i := len(levels) - 2; i >= 0 {
				// An explicit claim on a parent inside its child is denied.
				c := newClaim("default", levels[i].Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.CIDR = levels[i+1].Spec.CIDR })
				Expect(k8sClient.Create(ctx, c)).To(MatchError(ContainSubstring("is already allocated in pool " + levels[i].Name)))
			}

			By("each child's prefix has an IPAllocation bound to it, protected while it lives")
			for i := 1; i < len(levels); i++ {
				var a ipamv1alpha1.IPAllocation
				name := ipam.AllocationName(levels[i-1].Name, netip.MustParsePrefix(levels[i].Spec.CIDR))
				Eventually(func() error { return k8sClient.Get(ctx, client.ObjectKey{Name: name}, &a) }).Should(Succeed())
				Expect(a.Spec.ClaimRef).To(Equal(ipamv1alpha1.ClaimRef{Kind: "IPPool", Name: levels[i].Name, UID: levels[i].UID}))
				Eventually(func(g Gomega) {
					g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &a)).To(Succeed())
					expectHealthy(g, &a)
				}).Should(Succeed())
				Expect(k8sClient.Delete(ctx, &a)).To(MatchError(ContainSubstring("is held by the live IPPool " + levels[i].Name)))
			}

			By("the status rolls up: a parent counts its child")
			Eventually(func(g Gomega) {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(levels[0]), levels[0])).To(Succeed())
				g.Expect(levels[0].Status.ChildPools).To(BeEquivalentTo(1))
				g.Expect(levels[0].Status.Claims).To(BeEquivalentTo(4))
			}).Should(Succeed())
		},
		Entry("IPv4", "10.170.0.0/16", []int32{20, 24, 28}),
		Entry("IPv6, /48 to /56 to /64", "2001:db8:170::/48", []int32{56, 64, 96}),
	)

	It("selects pools by label the same at every depth", func() {
		lbl := map[string]string{"test.kipam.dev/depth": fmt.Sprint(seq.Add(1))}
		top := createPool("10.169.0.0/16", nil)
		mid := child(top, 20, "")
		Expect(k8sClient.Create(ctx, mid)).To(Succeed())
		leaf := child(mid, 24, "")
		leaf.Labels = lbl
		Expect(k8sClient.Create(ctx, leaf)).To(Succeed())
		leafCIDR := netip.MustParsePrefix(leaf.Spec.CIDR)
		for range 3 {
			c := newClaim("default", "", func(c *ipamv1alpha1.IPClaim) {
				c.Spec.PoolSelector = &metav1.LabelSelector{MatchLabels: lbl}
				c.Spec.IPFamily = ipamv1alpha1.IPv4
				c.Spec.PrefixLength = ptr.To[int32](28)
			})
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			Expect(leafCIDR.Contains(netip.MustParsePrefix(c.Spec.CIDR).Addr())).To(BeTrue(), "%s from the selected leaf %s", c.Spec.CIDR, leafCIDR)
			Expect(c.Annotations[ipam.PoolAnnotation]).To(Equal(leaf.Name))
		}
		Expect(ledgerOf(leaf.Name)).To(HaveLen(3))
		Expect(ledgerOf(mid.Name)).To(ConsistOf(leaf.Spec.CIDR), "the leaf's claims are its own, not its parent's")
	})

	It("records an explicit child in its parent, or denies it naming what is in the way", func() {
		parent := createPool("10.171.0.0/16", func(s *ipamv1alpha1.IPPoolSpec) { s.Reserved = []string{"10.171.255.0/24"} })
		// The case: a child at the start of its parent, then a
		// claim on each: never the same address.
		first := child(parent, 0, "10.171.0.0/24")
		Expect(k8sClient.Create(ctx, first)).To(Succeed())
		onParent := newClaim("default", parent.Name, nil)
		Expect(k8sClient.Create(ctx, onParent)).To(Succeed())
		onChild := newClaim("default", first.Name, nil)
		Expect(k8sClient.Create(ctx, onChild)).To(Succeed())
		Expect(onChild.Spec.CIDR).To(Equal("10.171.0.0/32"))
		Expect(onParent.Spec.CIDR).To(Equal("10.171.1.0/32"))

		for cidr, want := range map[string]string{
			"10.171.1.0/24":   "overlaps a claim in namespace default (10.171.1.0/32) in pool " + parent.Name,
			"10.171.0.128/25": "overlaps pool " + first.Name + " (10.171.0.0/24) in pool " + parent.Name,
			"10.171.255.0/25": "overlaps space reserved in pool " + parent.Name,
			"10.172.0.0/24":   "lies outside its parent pool " + parent.Name + " (10.171.0.0/16)",
			"10.0.0.0/8":      "lies outside its parent pool " + parent.Name,
			"2001:db8::/64":   "is IPv6 but its parent pool " + parent.Name,
		} {
			err := k8sClient.Create(ctx, child(parent, 0, cidr))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%s: want Invalid, got %v", cidr, err)
			Expect(err.Error()).To(ContainSubstring("spec.cidr"))
			Expect(err.Error()).To(ContainSubstring(want), cidr)
		}
		Expect(k8sClient.Create(ctx, child(parent, 0, "10.171.2.0/24"))).To(Succeed())
	})

	It("denies a parent that does not exist, and a prefixLength the parent cannot hold, with the field path", func() {
		parent := createPool("10.172.0.0/24", nil)
		err := k8sClient.Create(ctx, child(&ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "nosuch"}}, 28, ""))
		Expect(err).To(MatchError(ContainSubstring(`spec.parentPool: Invalid value: "nosuch": no IPPool of that name exists`)))
		Expect(k8sClient.Create(ctx, child(parent, 16, ""))).To(MatchError(ContainSubstring(
			"spec.prefixLength: Invalid value: 16: a /16 cannot be carved from pool " + parent.Name + " (10.172.0.0/24): it must lie between /24 and /32")))
		Expect(k8sClient.Create(ctx, child(parent, 25, ""))).To(Succeed())
		Expect(k8sClient.Create(ctx, child(parent, 25, ""))).To(Succeed())
		Expect(k8sClient.Create(ctx, child(parent, 32, ""))).To(MatchError(ContainSubstring(
			"spec.prefixLength: Forbidden: pool " + parent.Name + " is exhausted: no free /32 left")))
		Expect(k8sClient.Create(ctx, pool("", func(s *ipamv1alpha1.IPPoolSpec) { s.ParentPool = parent.Name }))).To(MatchError(ContainSubstring(
			"spec.prefixLength: Invalid value: prefixLength is required when cidr is empty")))
		Expect(ledgerOf(parent.Name)).To(HaveLen(2), "nothing was committed for the denied pools")
	})

	It("keeps cidr, parentPool and prefixLength immutable", func() {
		parent := createPool("10.174.0.0/24", nil)
		c := child(parent, 28, "")
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		for what, mutate := range map[string]func(*ipamv1alpha1.IPPoolSpec){
			"spec.cidr":         func(s *ipamv1alpha1.IPPoolSpec) { s.CIDR = "10.174.0.16/28" },
			"spec.parentPool":   func(s *ipamv1alpha1.IPPoolSpec) { s.ParentPool = "" },
			"spec.prefixLength": func(s *ipamv1alpha1.IPPoolSpec) { s.PrefixLength = ptr.To[int32](27) },
		} {
			changed := c.DeepCopy()
			mutate(&changed.Spec)
			Expect(k8sClient.Patch(ctx, changed, client.MergeFrom(c))).To(MatchError(ContainSubstring(what)), what)
		}
		By("kipam's entry annotation is kept as kipam set it")
		id := c.Annotations[ipam.EntryAnnotation]
		patch := client.MergeFrom(c.DeepCopy())
		c.Annotations[ipam.EntryAnnotation] = "someone-elses"
		Expect(k8sClient.Patch(ctx, c, patch)).To(Succeed())
		Expect(c.Annotations[ipam.EntryAnnotation]).To(Equal(id))
	})

	It("denies a change of reserved space or exclusions that would cover a claim or a child, counting them", func() {
		p := createPool("10.175.0.0/24", nil)
		claim := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, claim)).To(Succeed()) // 10.175.0.0/32
		c := child(p, 0, "10.175.0.128/26")
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		for _, mutate := range []func(*ipamv1alpha1.IPPoolSpec){
			func(s *ipamv1alpha1.IPPoolSpec) { s.Reserved = []string{"10.175.0.0/30"} },
			func(s *ipamv1alpha1.IPPoolSpec) { s.ExcludeFirst = 1 },
			func(s *ipamv1alpha1.IPPoolSpec) { s.Reserved = []string{"10.175.0.130-10.175.0.131"} },
			func(s *ipamv1alpha1.IPPoolSpec) { s.ExcludeLast = 65 },
		} {
			changed := p.DeepCopy()
			mutate(&changed.Spec)
			Expect(k8sClient.Patch(ctx, changed, client.MergeFrom(p))).To(MatchError(ContainSubstring("would cover 1 allocations")))
		}
		changed := p.DeepCopy()
		changed.Spec.Reserved, changed.Spec.ExcludeLast = []string{"10.175.0.0/25"}, 65
		Expect(k8sClient.Patch(ctx, changed, client.MergeFrom(p))).To(MatchError(ContainSubstring("would cover 2 allocations")))
		changed = p.DeepCopy()
		changed.Spec.Reserved, changed.Spec.ExcludeLast = []string{"10.175.0.64/27"}, 1
		Expect(k8sClient.Patch(ctx, changed, client.MergeFrom(p))).To(Succeed(), "space nothing holds may be reserved")
	})

	It("keeps a parent until its children are gone, and returns a child's prefix after the parent's reuse grace", func() {
		parent := createPool("10.176.0.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.ReuseGracePeriodSeconds = ptr.To[int64](3) })
		c := child(parent, 26, "")
		Expect(k8sClient.Create(ctx, c)).To(Succeed())

		By("a parent being deleted stays Terminating, Draining, while its child serves")
		Expect(k8sClient.Delete(ctx, parent)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(parent), parent)).To(Succeed())
			cond := meta.FindStatusCondition(parent.Status.Conditions, ipamv1alpha1.ConditionReady)
			g.Expect(cond).NotTo(BeNil())
			g.Expect(cond.Reason).To(Equal(ipamv1alpha1.ReasonDraining))
			g.Expect(cond.Message).To(ContainSubstring("0 to claims and 1 to child pools"))
		}).Should(Succeed())
		onChild := newClaim("default", c.Name, nil)
		Expect(k8sClient.Create(ctx, onChild)).To(Succeed())
		Expect(k8sClient.Create(ctx, child(parent, 26, ""))).To(MatchError(ContainSubstring("is being deleted: nothing can be carved from it")))

		By("the child goes once its claim is gone; then the parent")
		Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		Consistently(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c) }).WithTimeout(time.Second).Should(Succeed())
		deleteAndWait(onChild)
		deleteAndWait(c)
		deleteAndWait(parent)
	})

	It("returns a deleted child's prefix to its parent after the parent's reuse grace", func() {
		parent := createPool("10.177.0.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.ReuseGracePeriodSeconds = ptr.To[int64](4) })
		c := child(parent, 0, "10.177.0.0/26")
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		deleteAndWait(c)
		Expect(ledgerOf(parent.Name)).To(BeEmpty())
		var a ipamv1alpha1.IPAllocation
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Name: ipam.AllocationName(parent.Name, netip.MustParsePrefix("10.177.0.0/26"))}, &a))).To(BeTrue(),
			"its IPAllocation went with it")
		again := child(parent, 0, "10.177.0.0/26")
		err := k8sClient.Create(ctx, again)
		Expect(err).To(MatchError(ContainSubstring("was released recently in pool " + parent.Name)))
		Eventually(func() error { return k8sClient.Create(ctx, child(parent, 0, "10.177.0.0/26")) }).Should(Succeed())
	})

	It("holds a deleted pool's prefix while the addresses it released last are held", func() {
		p := createPool("100.103.0.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.ReuseGracePeriodSeconds = ptr.To[int64](4) })
		c := newClaim("default", p.Name, nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		deleteAndWait(c)
		deleteAndWait(p)
		again := func() error { return k8sClient.Create(ctx, pool("100.103.0.0/24", nil)) }
		Expect(again()).To(MatchError(ContainSubstring("was released recently in the cluster's pools")),
			"a pool created again over it could hand out %s within its grace", c.Spec.CIDR)
		Eventually(again).Should(Succeed())
	})

	It("refuses a pool without a name, which its parent's ledger could not record", func() {
		p := pool("100.104.0.0/24", nil)
		p.Name, p.GenerateName = "", "gen-"
		Expect(k8sClient.Create(ctx, p)).To(MatchError(ContainSubstring("metadata.name: Required value: a pool needs a name")))
		Expect(ledgerOf(ipam.SpaceIPv4)).NotTo(ContainElement("100.104.0.0/24"))
	})

	It("gives at most one of 50 concurrent creates of overlapping top-level pools, 20 times over", func() {
		fast := fastClient()
		for round := range 20 {
			base := netip.AddrFrom4([4]byte{100, byte(64 + round), 0, 0})
			var (
				wg  sync.WaitGroup
				mu  sync.Mutex
				won []*ipamv1alpha1.IPPool
			)
			for i := range 50 {
				// All contain base, so any two overlap.
				p := pool(netip.PrefixFrom(base, 16+i%16).String(), nil)
				wg.Go(func() {
					defer GinkgoRecover()
					err := fast.Create(ctx, p)
					if err == nil {
						mu.Lock()
						won = append(won, p)
						mu.Unlock()
						return
					}
					// Any failure is no success; under load some are 429s or
					// webhook timeouts rather than denials.
					if apierrors.IsInvalid(err) {
						Expect(err.Error()).To(ContainSubstring("spec.cidr"))
						Expect(err.Error()).To(MatchRegexp(`overlaps pool pool-\d+ \(100\.%d\.0\.0/\d+\) in the cluster's pools`, 64+round))
					}
				})
			}
			wg.Wait()
			Expect(len(won)).To(BeNumerically("<=", 1), "round %d: %d overlapping pools created", round, len(won))
			var all ipamv1alpha1.IPPoolList
			Expect(k8sClient.List(ctx, &all)).To(Succeed())
			n := 0
			for _, p := range all.Items {
				if q, err := netip.ParsePrefix(p.Spec.CIDR); err == nil && q.Contains(base) {
					n++
				}
			}
			Expect(n).To(BeNumerically("<=", 1), "round %d", round)
		}
	})

	It("gives zero overlaps to 500 concurrent child carves and claims of mixed sizes in one parent", func() {
		// With the default orphan grace, as in production: the suite's 8 s
		// is shorter than a carve can take from its commit to the pool's
		// storing at load average 15 (one did, and the sweep rightly
		// released the entry no stored pool carried yet; the next carve
		// of that prefix was then denied as an overlap of the stored pool).
		stopKipam()
		stopKipam = startKipamWith(controller.DefaultOrphanGrace)
		DeferCleanup(func() {
			stopKipam()
			stopKipam = startKipam()
		})
		parent := createPool("10.178.0.0/16", nil)
		fast := fastClient()
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			held  []string
			pools []string
		)
		for i := range 500 {
			wg.Go(func() {
				defer GinkgoRecover()
				if i%2 == 0 {
					c := child(parent, []int32{24, 26, 28}[rand.IntN(3)], "")
					if err := createAsClientsDo(fast, c); err != nil {
						Expect(apierrors.IsInvalid(err)).To(BeFalse(), "got %v", err)
						return
					}
					mu.Lock()
					held, pools = append(held, c.Spec.CIDR), append(pools, c.Spec.CIDR)
					mu.Unlock()
					return
				}
				c := newClaim("default", parent.Name, func(c *ipamv1alpha1.IPClaim) {
					c.Spec.PrefixLength = ptr.To([]int32{26, 28, 30, 32}[rand.IntN(4)])
				})
				if err := createAsClientsDo(fast, c); err != nil {
					Expect(apierrors.IsInvalid(err) || apierrors.IsForbidden(err)).To(BeFalse(), "got %v", err)
					return
				}
				mu.Lock()
				held = append(held, c.Spec.CIDR)
				mu.Unlock()
			})
		}
		wg.Wait()
		Expect(len(held)).To(BeNumerically(">", 400), "most requests were served")
		expectDisjoint(held)
		// A create that failed with its outcome unknown may have left an
		// entry, which the sweep releases: the ledger holds at least these.
		Expect(ledgerOf(parent.Name)).To(ContainElements(held))
		expectDisjoint(ledgerOf(parent.Name))
		var b netipx.IPSetBuilder
		b.AddPrefix(netip.MustParsePrefix(parent.Spec.CIDR))
		inParent, _ := b.IPSet()
		for _, c := range held {
			Expect(inParent.ContainsPrefix(netip.MustParsePrefix(c))).To(BeTrue(), c)
		}
		Expect(len(pools)).To(BeNumerically(">", 200))
	})

	It("releases the prefix of a pool the API server refused after kipam carved it", func() {
		parent := createPool("10.179.0.0/24", nil)
		rejectPools()
		rejected := func(p *ipamv1alpha1.IPPool) *ipamv1alpha1.IPPool {
			p.Labels = map[string]string{"reject": "yes"}
			return p
		}
		Expect(k8sClient.Create(ctx, rejected(child(parent, 28, "")), client.DryRunAll)).To(MatchError(ContainSubstring("rejected by policy")))
		Expect(ledgerOf(parent.Name)).To(BeEmpty(), "a dry run commits nothing")

		kept := child(parent, 28, "")
		Expect(k8sClient.Create(ctx, kept)).To(Succeed())
		for range 3 {
			Expect(k8sClient.Create(ctx, rejected(child(parent, 28, "")))).To(MatchError(ContainSubstring("rejected by policy")))
		}
		top := rejected(pool("100.100.0.0/24", nil))
		Expect(k8sClient.Create(ctx, top)).To(MatchError(ContainSubstring("rejected by policy")))
		Expect(ledgerOf(parent.Name)).To(HaveLen(4), "the refused pools' prefixes were committed")
		Expect(ledgerOf(ipam.SpaceIPv4)).To(ContainElement("100.100.0.0/24"))

		By("the sweep releases them once the orphan grace has passed, and keeps the pool that exists")
		Eventually(func() []string { return ledgerOf(parent.Name) }).WithTimeout(4 * orphanGrace).Should(ConsistOf(kept.Spec.CIDR))
		Eventually(func() []string { return ledgerOf(ipam.SpaceIPv4) }).WithTimeout(4 * orphanGrace).ShouldNot(ContainElement("100.100.0.0/24"))
		Expect(ledgerOf(ipam.SpaceIPv4)).To(ContainElement(parent.Spec.CIDR))
	})

	It("refuses the address spaces' names for pools", func() {
		err := k8sClient.Create(ctx, &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: ipam.SpaceIPv4},
			Spec: ipamv1alpha1.IPPoolSpec{CIDR: "100.101.0.0/24"}})
		Expect(err).To(MatchError(ContainSubstring("kipam's own address spaces")))
		Expect(ledgerOf(ipam.SpaceIPv4)).NotTo(ContainElement("100.101.0.0/24"))
	})
})

// bypassPoolWebhooks makes the API server store pools labelled bypassLabel
// without calling kipam's pool webhooks, as pools created before kipam
// recorded every pool's prefix were, until the spec ends.
func bypassPoolWebhooks() {
	GinkgoHelper()
	sel := func(on bool) *metav1.LabelSelector {
		if !on {
			return &metav1.LabelSelector{}
		}
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: bypassLabel, Operator: metav1.LabelSelectorOpDoesNotExist}}}
	}
	set := func(on bool) {
		GinkgoHelper()
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var cfg admissionregistrationv1.MutatingWebhookConfiguration
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: "mutating-webhook-configuration"}, &cfg); err != nil {
				return err
			}
			for i := range cfg.Webhooks {
				if cfg.Webhooks[i].Name == "mippool-v1alpha1.kb.io" {
					cfg.Webhooks[i].ObjectSelector = sel(on)
				}
			}
			return k8sClient.Update(ctx, &cfg)
		})).To(Succeed())
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var cfg admissionregistrationv1.ValidatingWebhookConfiguration
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: "validating-webhook-configuration"}, &cfg); err != nil {
				return err
			}
			for i := range cfg.Webhooks {
				if cfg.Webhooks[i].Name == "vippool-v1alpha1.kb.io" {
					cfg.Webhooks[i].ObjectSelector = sel(on)
				}
			}
			return k8sClient.Update(ctx, &cfg)
		})).To(Succeed())
	}
	// probe is the entry annotation a dry run of a labelled pool keeps:
	// kipam's webhook replaces it.
	probe := func() (string, error) {
		p := pool("100.127.255.0/24", nil)
		p.Labels = map[string]string{bypassLabel: "yes"}
		p.Annotations = map[string]string{ipam.EntryAnnotation: "probe"}
		err := k8sClient.Create(ctx, p, client.DryRunAll)
		return p.Annotations[ipam.EntryAnnotation], err
	}
	set(true)
	DeferCleanup(func() {
		set(false)
		Eventually(probe).ShouldNot(Equal("probe"), "kipam's webhook is back for every pool")
	})
	Eventually(probe).Should(Equal("probe"), "the API server skips kipam's pool webhooks for labelled pools")
}

var _ = Describe("Pools created before kipam recorded them", func() {
	It("are adopted at startup; an overlap is reported on both pools instead of carried on silently", func() {
		bypassPoolWebhooks()
		legacy := func(p *ipamv1alpha1.IPPool) *ipamv1alpha1.IPPool {
			GinkgoHelper()
			p.Labels = map[string]string{bypassLabel: "yes"}
			Expect(k8sClient.Create(ctx, p)).To(Succeed())
			return p
		}
		overlapping := func(p *ipamv1alpha1.IPPool) func(Gomega) *metav1.Condition {
			return func(g Gomega) *metav1.Condition {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
				return meta.FindStatusCondition(p.Status.Conditions, ipamv1alpha1.ConditionOverlapping)
			}
		}
		a := legacy(pool("10.168.0.0/16", nil))
		Eventually(overlapping(a)).Should(HaveField("Reason", ipamv1alpha1.ReasonNoOverlap))
		e, ok, err := ipam.LookupEntry(ctx, k8sClient, ipam.SpaceIPv4, netip.MustParsePrefix(a.Spec.CIDR))
		Expect(err).NotTo(HaveOccurred())
		Expect(ok).To(BeTrue())
		Expect(e.Is(ipam.PoolHolder(a.Name), string(a.UID))).To(BeTrue(), "recorded with its uid as the entry ID: %+v", e)

		c := legacy(child(a, 0, "10.168.128.0/24"))
		d := legacy(child(a, 24, ""))
		b := legacy(pool("10.168.1.0/24", nil))
		Eventually(overlapping(c)).Should(HaveField("Reason", ipamv1alpha1.ReasonNoOverlap))
		Expect(ledgerOf(a.Name)).To(ContainElement(c.Spec.CIDR))
		Eventually(func() error {
			var alloc ipamv1alpha1.IPAllocation
			return k8sClient.Get(ctx, client.ObjectKey{Name: ipam.AllocationName(a.Name, netip.MustParsePrefix(c.Spec.CIDR))}, &alloc)
		}).Should(Succeed())

		By("the pool that could not be recorded says what it overlaps, and so does the pool it overlaps")
		Eventually(overlapping(b)).Should(And(HaveField("Status", metav1.ConditionTrue), HaveField("Reason", ipamv1alpha1.ReasonOverlap),
			HaveField("Message", ContainSubstring("overlaps pool "+a.Name+" (10.168.0.0/16)"))))
		Eventually(overlapping(a)).Should(And(HaveField("Status", metav1.ConditionTrue), HaveField("Reason", ipamv1alpha1.ReasonOverlapped),
			HaveField("Message", ContainSubstring(b.Name+" (10.168.1.0/24)"))))
		Eventually(func(g Gomega) {
			var events corev1.EventList
			g.Expect(k8sClient.List(ctx, &events, client.InNamespace("default"))).To(Succeed())
			g.Expect(events.Items).To(ContainElement(And(HaveField("InvolvedObject.Name", b.Name), HaveField("Reason", ipamv1alpha1.ReasonOverlap))))
		}).Should(Succeed())

		By("a child pool that was never carved is not served, and says why")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
			cond := meta.FindStatusCondition(d.Status.Conditions, ipamv1alpha1.ConditionReady)
			g.Expect(cond).NotTo(BeNil())
			g.Expect(cond.Message).To(ContainSubstring("has no cidr"))
		}).Should(Succeed())

		By("once the overlapping pool is deleted, the other reports no overlap")
		deleteAndWait(b)
		Eventually(overlapping(a)).Should(HaveField("Reason", ipamv1alpha1.ReasonNoOverlap))
		Expect(ledgerOf(ipam.SpaceIPv4)).NotTo(ContainElement("10.168.1.0/24"))
	})
})

var _ = Describe("Pools removed or created around kipam", func() {
	// forceDelete deletes p and strips its drain finalizer, as an admin
	// would for a pool stuck Terminating.
	forceDelete := func(p *ipamv1alpha1.IPPool) {
		GinkgoHelper()
		Expect(k8sClient.Delete(ctx, p)).To(Succeed())
		Eventually(func() error {
			var cur ipamv1alpha1.IPPool
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &cur); err != nil {
				return client.IgnoreNotFound(err)
			}
			patch := client.MergeFrom(cur.DeepCopy())
			cur.Finalizers = nil
			return k8sClient.Patch(ctx, &cur, patch)
		}).Should(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &ipamv1alpha1.IPPool{}))
		}).Should(BeTrue())
	}

	It("keeps the prefix of pools gone without draining while a claim at any depth inside it lives", func() {
		top := createPool("10.190.0.0/16", nil)
		x := child(top, 20, "")
		Expect(k8sClient.Create(ctx, x)).To(Succeed())
		y := child(x, 24, "")
		Expect(k8sClient.Create(ctx, y)).To(Succeed())
		c := newClaim("default", y.Name, nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())

		forceDelete(x)
		forceDelete(y)
		Consistently(func() []string { return ledgerOf(top.Name) }).WithTimeout(orphanGrace+4*time.Second).Should(ContainElement(x.Spec.CIDR),
			"x's prefix stays while a claim of its gone child holds an address in it")
		again := newClaim("default", top.Name, func(cl *ipamv1alpha1.IPClaim) { cl.Spec.CIDR = c.Spec.CIDR })
		Expect(k8sClient.Create(ctx, again)).To(MatchError(ContainSubstring("is already allocated in pool " + top.Name)))

		By("once the claim is gone, the sweep releases it")
		deleteAndWait(c)
		Eventually(func() []string { return ledgerOf(top.Name) }).WithTimeout(6 * orphanGrace).ShouldNot(ContainElement(x.Spec.CIDR))
	})

	It("releases a refused create's prefix though a pool of that name lives elsewhere with claims", func() {
		parent := createPool("10.191.0.0/24", nil)
		rejectPools()
		rej := child(parent, 28, "")
		rej.Labels = map[string]string{"reject": "yes"}
		Expect(k8sClient.Create(ctx, rej)).To(MatchError(ContainSubstring("rejected by policy")))
		Expect(ledgerOf(parent.Name)).To(HaveLen(1))
		orphan := ledgerOf(parent.Name)[0]

		ok := child(parent, 28, "")
		ok.Name = rej.Name
		Expect(k8sClient.Create(ctx, ok)).To(Succeed())
		Expect(ok.Spec.CIDR).NotTo(Equal(orphan))
		Expect(k8sClient.Create(ctx, newClaim("default", ok.Name, nil))).To(Succeed())
		Eventually(func() []string { return ledgerOf(parent.Name) }).WithTimeout(6 * orphanGrace).Should(ConsistOf(ok.Spec.CIDR))
	})

	It("adopts an entry only at the prefix asked for", func() {
		parent := createPool("10.194.0.0/24", nil)
		holder, id := ipam.PoolHolder("some-pool"), ipam.NewEntryID()
		_, err := pools.Allocate(ctx, ipam.Request{Pool: parent, CIDR: netip.MustParsePrefix("10.194.0.0/28"), Bits: 28, Holder: holder, ID: id})
		Expect(err).NotTo(HaveOccurred())
		_, err = pools.Allocate(ctx, ipam.Request{Pool: parent, CIDR: netip.MustParsePrefix("10.194.0.128/28"), Bits: 28, Holder: holder, ID: id, Adopt: true})
		Expect(err).To(MatchError(ContainSubstring("10.194.0.128/28 cannot be recorded for IPPool/some-pool")))
	})

	It("gives a create retried after an unstored attempt the entry that attempt committed, and nothing else", func() {
		// A create whose attempt kipam admitted but the API server did not
		// store (its storage write timed out: a 504 with Retry-After that
		// client-go resends, or kubectl create run again) leaves its entry.
		rejectPools()
		retried := func(cidr string, mutate func(*ipamv1alpha1.IPPoolSpec)) (string, string) {
			GinkgoHelper()
			first := pool(cidr, mutate)
			first.Labels = map[string]string{"reject": "yes"}
			Expect(k8sClient.Create(ctx, first)).To(MatchError(ContainSubstring("rejected by policy")))
			e, ok, err := ipam.LookupEntry(ctx, k8sClient, ipam.ParentOf(first), netip.MustParsePrefix(cidr))
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(BeTrue(), "the unstored attempt's entry is recorded")
			Expect(e.Holder).To(Equal(ipam.PoolHolder(first.Name)))
			return first.Name, e.ID
		}

		By("the same pool again: created, with the entry its earlier attempt committed")
		name, id := retried("100.102.0.0/28", nil)
		again := pool("100.102.0.0/28", nil)
		again.Name = name
		Expect(k8sClient.Create(ctx, again)).To(Succeed())
		Expect(again.Annotations).To(HaveKeyWithValue(ipam.EntryAnnotation, id))
		e, ok, err := ipam.LookupEntry(ctx, k8sClient, ipam.SpaceIPv4, netip.MustParsePrefix("100.102.0.0/28"))
		Expect(err).NotTo(HaveOccurred())
		Expect(ok && e.Is(ipam.PoolHolder(name), id)).To(BeTrue(), "one entry, the pool's: %+v", e)
		Consistently(func() []string { return ledgerOf(ipam.SpaceIPv4) }).WithTimeout(orphanGrace+4*time.Second).Should(ContainElement("100.102.0.0/28"),
			"the sweep leaves the entry the stored pool carries")
		Expect(k8sClient.Create(ctx, newClaim("default", name, nil))).To(Succeed(), "the pool serves")

		By("another prefix under the same name: denied, saying what holds it and that a retry later succeeds")
		name, _ = retried("100.102.1.0/28", nil)
		other := pool("100.102.1.0/27", nil)
		other.Name = name
		Expect(k8sClient.Create(ctx, other)).To(MatchError(And(
			ContainSubstring("a pool of this name that is not stored holds 100.102.1.0/28"),
			ContainSubstring("retry"))))

		By("the prefix of a pool of that name that was stored, and went without draining: not adopted while a claim inside it lives")
		top := createPool("10.202.0.0/16", nil)
		x := child(top, 20, "")
		Expect(k8sClient.Create(ctx, x)).To(Succeed())
		Expect(k8sClient.Create(ctx, newClaim("default", x.Name, nil))).To(Succeed())
		forceDelete(x)
		over := child(top, 0, x.Spec.CIDR)
		over.Name = x.Name
		Expect(k8sClient.Create(ctx, over)).To(MatchError(ContainSubstring("the pool " + x.Name + " that was stored before")))
	})

	It("denies a pool over a pool not recorded yet, and claims from a pool that could not be recorded", func() {
		bypassPoolWebhooks()
		for round := range 4 {
			base := netip.AddrFrom4([4]byte{100, byte(84 + round), 0, 0})
			legacy := pool(netip.PrefixFrom(base, 16).String(), nil)
			legacy.Labels = map[string]string{bypassLabel: "yes"}
			Expect(k8sClient.Create(ctx, legacy)).To(Succeed())
			fresh := pool(netip.PrefixFrom(base, 24).String(), nil)
			// Whether kipam adopted the legacy pool yet or not.
			Expect(k8sClient.Create(ctx, fresh)).To(MatchError(MatchRegexp(
				`overlaps pool %s \(%s\)(, which kipam has not recorded yet| in the cluster's pools)`, legacy.Name, legacy.Spec.CIDR)))
		}
		By("a pool that overlaps a recorded one takes no claims")
		recorded := createPool("100.90.0.0/16", nil)
		late := pool("100.90.1.0/24", nil)
		late.Labels = map[string]string{bypassLabel: "yes"}
		Expect(k8sClient.Create(ctx, late)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(late), late)).To(Succeed())
			g.Expect(ipam.Overlaps(late)).To(BeTrue())
			cond := meta.FindStatusCondition(late.Status.Conditions, ipamv1alpha1.ConditionReady)
			g.Expect(cond).NotTo(BeNil())
			g.Expect(cond.Reason).To(Equal(ipamv1alpha1.ReasonOverlap))
		}).Should(Succeed())
		Expect(k8sClient.Create(ctx, newClaim("default", late.Name, nil))).To(MatchError(ContainSubstring(
			"pool " + late.Name + " overlaps another pool that kipam recorded first")))
		Expect(k8sClient.Create(ctx, newClaim("default", recorded.Name, nil))).To(Succeed())
	})

	It("refuses pool names that a space's ledgers could take", func() {
		for _, name := range []string{ipam.SpaceIPv6, ipam.ShardName(ipam.SpaceIPv4, 3), "x.space.kipam.dev.y"} {
			p := pool("100.102.0.0/24", nil)
			p.Name = name
			Expect(k8sClient.Create(ctx, p)).To(MatchError(ContainSubstring("kipam's own address spaces")), name)
		}
	})
})

// rejectPools installs, until the spec ends, a policy that rejects after
// kipam's webhooks every pool labelled reject=yes.
func rejectPools() {
	GinkgoHelper()
	rejectLabelled("ippools", func() error {
		p := pool("100.127.254.0/24", nil)
		p.Labels = map[string]string{"reject": "yes"}
		return k8sClient.Create(ctx, p, client.DryRunAll)
	})
}

// rejectLabelled installs, until the spec ends, a policy that rejects,
// after kipam's webhooks, every create of resource labelled reject=yes:
// what another webhook or rule could do. probe is a dry run of such a
// create, to wait for the policy to take effect.
func rejectLabelled(resource string, probe func() error) {
	GinkgoHelper()
	installPolicy("reject-some-"+resource, resource, []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		"!has(object.metadata.labels) || !('reject' in object.metadata.labels)", "rejected by policy", probe)
}

// installPolicy installs, until the spec ends, a ValidatingAdmissionPolicy
// named name that denies the ops on kipam's resource unless expression
// holds, with message; then waits until probe fails with that message.
func installPolicy(name, resource string, ops []admissionregistrationv1.OperationType, expression, message string, probe func() error) {
	GinkgoHelper()
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: ops,
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"ipam.kipam.dev"}, APIVersions: []string{"v1alpha1"}, Resources: []string{resource}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{Expression: expression, Message: message}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policy.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	Expect(k8sClient.Create(ctx, policy)).To(Succeed())
	Expect(k8sClient.Create(ctx, binding)).To(Succeed())
	DeferCleanup(func() {
		Expect(k8sClient.Delete(ctx, binding)).To(Succeed())
		Expect(k8sClient.Delete(ctx, policy)).To(Succeed())
	})
	Eventually(probe).Should(MatchError(ContainSubstring(message)))
}
