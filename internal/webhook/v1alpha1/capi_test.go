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
	"slices"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/controller"
	"github.com/kipam/kipam/internal/inspect"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/testenv/kipamtest"
)

// addressClaim is a Cluster API IPAddressClaim of a kipam pool.
func addressClaim(ns, pool string, mutate func(*capiv1beta2.IPAddressClaim)) *capiv1beta2.IPAddressClaim {
	c := &capiv1beta2.IPAddressClaim{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("machine-%d", seq.Add(1)), Namespace: ns},
		Spec: capiv1beta2.IPAddressClaimSpec{
			PoolRef: capiv1beta2.IPPoolReference{APIGroup: ipamv1alpha1.GroupVersion.Group, Kind: "IPPool", Name: pool},
		},
	}
	if mutate != nil {
		mutate(c)
	}
	return c
}

// capiNamespace is a fresh namespace for Cluster API claims.
func capiNamespace(labels map[string]string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("capi-%d", seq.Add(1)), Labels: labels}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// expectAddress waits until c is Ready with its addressRef, and returns its
// IPAddress.
func expectAddress(c *capiv1beta2.IPAddressClaim) *capiv1beta2.IPAddress {
	GinkgoHelper()
	var addr capiv1beta2.IPAddress
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(c.Status.Conditions, capiv1beta2.ReadyCondition)).To(BeTrue(), "%+v", c.Status.Conditions)
		g.Expect(c.Status.AddressRef.Name).To(Equal(c.Name))
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: c.Status.AddressRef.Name}, &addr)).To(Succeed())
	}).Should(Succeed())
	return &addr
}

// addressReady is a claim's Ready condition.
func addressReady(c *capiv1beta2.IPAddressClaim) func(Gomega) metav1.Condition {
	return func(g Gomega) metav1.Condition {
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
		cond := meta.FindStatusCondition(c.Status.Conditions, capiv1beta2.ReadyCondition)
		g.Expect(cond).NotTo(BeNil())
		return *cond
	}
}

// hostPrefix is an IPAddress's address as the /32 or /128 the ledger
// records.
func hostPrefix(a *capiv1beta2.IPAddress) netip.Prefix {
	addr := netip.MustParseAddr(a.Spec.Address)
	return netip.PrefixFrom(addr, addr.BitLen())
}

// entryOf is what pool's ledgers record for p, read live.
func entryOf(pool string, p netip.Prefix) (ipam.Entry, bool) {
	GinkgoHelper()
	l, err := ipam.ReadLedger(ctx, k8sClient, pool)
	Expect(err).NotTo(HaveOccurred())
	e, ok := l.Allocations[p]
	return e, ok
}

var _ = Describe("Cluster API's IPAM contract", func() {
	It("answers a claim with an IPAddress, committed in the pool's ledger and recorded by an IPAllocation", func() {
		p := createPool("172.21.0.0/24", func(s *ipamv1alpha1.IPPoolSpec) { s.ExcludeFirst = 1 })
		ns := capiNamespace(nil)
		other := addressClaim(ns, "in-cluster", func(c *capiv1beta2.IPAddressClaim) {
			c.Spec.PoolRef = capiv1beta2.IPPoolReference{APIGroup: "ipam.cluster.x-k8s.io", Kind: "InClusterIPPool", Name: p.Name}
		})
		Expect(k8sClient.Create(ctx, other)).To(Succeed())
		Expect(other.Finalizers).To(BeEmpty(), "another provider's claim is left alone by kipam's webhook")
		claim := addressClaim(ns, p.Name, func(c *capiv1beta2.IPAddressClaim) {
			c.Spec.ClusterName = "workload-1"
			c.Finalizers = []string{"example.com/keep"}
		})
		Expect(k8sClient.Create(ctx, claim)).To(Succeed())
		Expect(claim.Finalizers).To(ConsistOf("example.com/keep", ipamv1alpha1.ClaimFinalizer),
			"kipam's webhook adds its release finalizer in the create, beside the claim's own")

		addr := expectAddress(claim)
		Expect(addr.Spec.Address).To(Equal("172.21.0.1"), "the pool's first address after excludeFirst")
		Expect(addr.Spec.Prefix).To(Equal(ptr.To[int32](24)), "the pool's own length")
		Expect(addr.Spec.ClaimRef.Name).To(Equal(claim.Name))
		Expect(addr.Spec.PoolRef).To(Equal(claim.Spec.PoolRef))
		Expect(addr.Labels).To(HaveKeyWithValue(ipamv1alpha1.ClusterNameLabel, "workload-1"))
		Expect(addr.Finalizers).To(ContainElement(ipamv1alpha1.AddressFinalizer))
		Expect(metav1.GetControllerOf(addr)).To(PointTo(MatchFields(IgnoreExtras, Fields{
			"Kind": Equal("IPAddressClaim"), "Name": Equal(claim.Name), "UID": Equal(claim.UID), "BlockOwnerDeletion": Equal(ptr.To(true)),
		})))
		Expect(addr.OwnerReferences).To(ContainElement(MatchFields(IgnoreExtras, Fields{
			"Kind": Equal("IPPool"), "Name": Equal(p.Name), "UID": Equal(p.UID), "Controller": BeNil(),
		})))
		Expect(claim.Finalizers).To(ContainElement(ipamv1alpha1.ClaimFinalizer))

		By("the pool's ledger records the address as the claim's entry: its namespace, its uid")
		e, ok := entryOf(p.Name, hostPrefix(addr))
		Expect(ok).To(BeTrue())
		Expect(e.Holder).To(Equal("IPAddressClaim/" + ns))
		Expect(e.ID).To(Equal(string(claim.UID)))

		By("an IPAllocation records it, and cannot be deleted from under the claim")
		var a ipamv1alpha1.IPAllocation
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ipam.AllocationName(p.Name, hostPrefix(addr))}, &a)).To(Succeed())
		Expect(a.Spec.ClaimRef).To(Equal(ipamv1alpha1.ClaimRef{Kind: "IPAddressClaim", Namespace: ns, Name: claim.Name, UID: claim.UID}))
		Expect(a.Spec.Entry).To(Equal(string(claim.UID)))
		err := k8sClient.Delete(ctx, &a)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(err.Error()).To(ContainSubstring("IPAddressClaim " + ns + "/" + claim.Name))

		By("the pool's status counts it")
		Eventually(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			g.Expect(p.Status.Claims).To(Equal(int32(1)))
		}).Should(Succeed())

		By("a claim of another provider's pool is left alone")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(other), other)).To(Succeed())
		Expect(other.Finalizers).To(BeEmpty())
		Expect(other.Status.Conditions).To(BeEmpty())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(other), &capiv1beta2.IPAddress{}))).To(BeTrue())

		By("the IPAddress stays while the claim lives, whoever deletes it")
		Expect(k8sClient.Delete(ctx, addr)).To(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(addr), addr)).To(Succeed())
		}).WithTimeout(2 * time.Second).Should(Succeed())
	})

	It("reports the pool's gateway and address prefix length with each address, and never hands out the gateway", func() {
		p := createPool("172.21.7.0/26", func(s *ipamv1alpha1.IPPoolSpec) {
			s.Gateway, s.AddressPrefixLength, s.ExcludeFirst = "172.21.7.1", ptr.To[int32](22), 1
		})
		ns := capiNamespace(nil)
		var got []string
		for range 2 {
			c := addressClaim(ns, p.Name, nil)
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			addr := expectAddress(c)
			Expect(addr.Spec.Gateway).To(Equal("172.21.7.1"))
			Expect(addr.Spec.Prefix).To(Equal(ptr.To[int32](22)))
			got = append(got, addr.Spec.Address)
		}
		Expect(got).To(Equal([]string{"172.21.7.2", "172.21.7.3"}), "excludeFirst and the gateway are skipped")
	})

	It("releases exactly the claim's entry when it is deleted, held for the pool's reuse grace", func() {
		p := createPool("172.21.1.0/29", func(s *ipamv1alpha1.IPPoolSpec) { s.ReuseGracePeriodSeconds = ptr.To[int64](3600) })
		ns := capiNamespace(nil)
		claim := addressClaim(ns, p.Name, nil)
		Expect(k8sClient.Create(ctx, claim)).To(Succeed())
		addr := expectAddress(claim)
		other := addressClaim(ns, p.Name, nil)
		Expect(k8sClient.Create(ctx, other)).To(Succeed())
		otherAddr := expectAddress(other)
		allocation := ipam.AllocationName(p.Name, hostPrefix(addr))

		deleteAndWait(claim)
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(addr), &capiv1beta2.IPAddress{}))).To(BeTrue())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Name: allocation}, &ipamv1alpha1.IPAllocation{}))).To(BeTrue())
		l, err := ipam.ReadLedger(ctx, k8sClient, p.Name)
		Expect(err).NotTo(HaveOccurred())
		Expect(l.Allocations).NotTo(HaveKey(hostPrefix(addr)))
		Expect(l.Holds).To(HaveKey(hostPrefix(addr)), "held for the reuse grace")
		Expect(l.Allocations).To(HaveKeyWithValue(hostPrefix(otherAddr), HaveField("ID", string(other.UID))))

		By("a new claim does not get the released address within the grace")
		next := addressClaim(ns, p.Name, nil)
		Expect(k8sClient.Create(ctx, next)).To(Succeed())
		Expect(expectAddress(next).Spec.Address).NotTo(Equal(addr.Spec.Address))
	})

	It("waits with PoolExhausted, and binds when a release frees space, woken by the ledger's watch", func() {
		p := createPool("172.21.2.0/30", nil) // four addresses, no grace
		ns := capiNamespace(nil)
		var held []*capiv1beta2.IPAddressClaim
		for range 4 {
			c := addressClaim(ns, p.Name, nil)
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			expectAddress(c)
			held = append(held, c)
		}
		waiting := addressClaim(ns, p.Name, nil)
		Expect(k8sClient.Create(ctx, waiting)).To(Succeed())
		Eventually(addressReady(waiting)).Should(And(
			HaveField("Status", metav1.ConditionFalse),
			HaveField("Reason", capiv1beta2.ReasonPoolExhausted),
			HaveField("Message", And(ContainSubstring("pool "+p.Name+" has no free address"), ContainSubstring("waits")))))
		Expect(waiting.Status.AddressRef.Name).To(BeEmpty())
		Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(waiting), &capiv1beta2.IPAddress{}))).To(BeTrue())

		var freed capiv1beta2.IPAddress
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(held[2]), &freed)).To(Succeed())
		deleteAndWait(held[2])
		Expect(expectAddress(waiting).Spec.Address).To(Equal(freed.Spec.Address))
	})

	It("serves a claim from a pool at depth three", func() {
		top := createPool("172.21.16.0/20", nil)
		mid := child(top, 22, "")
		Expect(k8sClient.Create(ctx, mid)).To(Succeed())
		leaf := child(mid, 26, "")
		Expect(k8sClient.Create(ctx, leaf)).To(Succeed())
		leafPrefix := netip.MustParsePrefix(leaf.Spec.CIDR)
		ns := capiNamespace(nil)
		claim := addressClaim(ns, leaf.Name, nil)
		Expect(k8sClient.Create(ctx, claim)).To(Succeed())
		addr := expectAddress(claim)
		Expect(leafPrefix.Contains(netip.MustParseAddr(addr.Spec.Address))).To(BeTrue(), "%s in %s", addr.Spec.Address, leafPrefix)
		Expect(addr.Spec.Prefix).To(Equal(ptr.To[int32](26)))
		_, ok := entryOf(leaf.Name, hostPrefix(addr))
		Expect(ok).To(BeTrue())
		for _, parent := range []string{top.Name, mid.Name} {
			_, ok := entryOf(parent, hostPrefix(addr))
			Expect(ok).To(BeFalse(), "recorded in its own pool only, not in %s", parent)
		}
	})

	It("applies the pool's namespaceSelector, and serves the claim once its namespace is admitted", func() {
		p := createPool("172.21.3.0/28", func(s *ipamv1alpha1.IPPoolSpec) {
			s.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tenant": "capi-a"}}
		})
		ns := capiNamespace(map[string]string{"tenant": "capi-b"})
		claim := addressClaim(ns, p.Name, nil)
		Expect(k8sClient.Create(ctx, claim)).To(Succeed())
		Eventually(addressReady(claim)).Should(And(
			HaveField("Status", metav1.ConditionFalse),
			HaveField("Reason", capiv1beta2.ReasonPoolNotReady),
			HaveField("Message", ContainSubstring("no such pool is open to namespace "+ns))))
		Expect(ledgerOf(p.Name)).To(BeEmpty())

		var n corev1.Namespace
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: ns}, &n)).To(Succeed())
		n.Labels["tenant"] = "capi-a"
		Expect(k8sClient.Update(ctx, &n)).To(Succeed())
		expectAddress(claim)
	})

	It("gives a claim whose address was committed before its IPAddress was created that same address", func() {
		p := createPool("172.21.4.0/24", nil)
		ns := capiNamespace(nil)
		// Paused by its own annotation, so kipam leaves it while the
		// address is committed as a crashed reconcile would have: after it
		// stored the claim's finalizer, as every pass does before it commits.
		claim := addressClaim(ns, p.Name, func(c *capiv1beta2.IPAddressClaim) {
			c.Annotations = map[string]string{ipamv1alpha1.PausedAnnotation: ""}
			c.Finalizers = []string{ipamv1alpha1.ClaimFinalizer}
		})
		Expect(k8sClient.Create(ctx, claim)).To(Succeed())
		committed := netip.MustParsePrefix("172.21.4.77/32")
		got, err := pools.Allocate(ctx, ipam.Request{Pool: p, CIDR: committed, Bits: 32, Holder: ipam.AddressClaimHolder(ns), ID: string(claim.UID)})
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(committed))
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(claim), claim)).To(Succeed())
			g.Expect(claim.Status.Conditions).To(BeEmpty())
		}).WithTimeout(time.Second).Should(Succeed())

		patch := client.MergeFrom(claim.DeepCopy())
		delete(claim.Annotations, ipamv1alpha1.PausedAnnotation)
		Expect(k8sClient.Patch(ctx, claim, patch)).To(Succeed())
		Expect(expectAddress(claim).Spec.Address).To(Equal("172.21.4.77"))
		Expect(ledgerOf(p.Name)).To(Equal([]string{"172.21.4.77/32"}), "one entry, not two")
	})

	It("lets the records of a claim deleted without kipam's finalizer go: its IPAddress, and its entry after the orphan grace", func() {
		p := createPool("172.21.8.0/30", nil)
		ns := capiNamespace(nil)
		claim := addressClaim(ns, p.Name, nil)
		Expect(k8sClient.Create(ctx, claim)).To(Succeed())
		addr := expectAddress(claim)
		allocation := ipam.AllocationName(p.Name, hostPrefix(addr))

		By("deleting the claim while it is paused, and removing kipam's finalizer by hand")
		patch := client.MergeFrom(claim.DeepCopy())
		claim.Annotations = map[string]string{ipamv1alpha1.PausedAnnotation: ""}
		Expect(k8sClient.Patch(ctx, claim, patch)).To(Succeed())
		Expect(k8sClient.Delete(ctx, claim)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(claim), claim)).To(Succeed())
		Expect(claim.Finalizers).To(ConsistOf(ipamv1alpha1.ClaimFinalizer), "paused: kipam left it")
		patch = client.MergeFrom(claim.DeepCopy())
		claim.Finalizers = nil
		Expect(k8sClient.Patch(ctx, claim, patch)).To(Succeed())

		By("its IPAddress goes, its IPAllocation and its entry after the grace")
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(addr), addr))
		}).WithTimeout(30 * time.Second).Should(BeTrue())
		Eventually(func() []string { return ledgerOf(p.Name) }).WithTimeout(4 * orphanGrace).Should(BeEmpty())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKey{Name: allocation}, &ipamv1alpha1.IPAllocation{}))
		}).WithTimeout(4 * orphanGrace).Should(BeTrue())

		By("a claim of the same name is answered again")
		again := addressClaim(ns, p.Name, func(c *capiv1beta2.IPAddressClaim) { c.Name = claim.Name })
		Expect(k8sClient.Create(ctx, again)).To(Succeed())
		Expect(metav1.IsControlledBy(expectAddress(again), again)).To(BeTrue())
	})

	It("serves IPv6 pools: one /128, with the pool's gateway and prefix", func() {
		p := createPool("fd00:21::/120", func(s *ipamv1alpha1.IPPoolSpec) {
			s.Gateway, s.AddressPrefixLength, s.ExcludeFirst = "fd00:21::1", ptr.To[int32](64), 1
		})
		ns := capiNamespace(nil)
		claim := addressClaim(ns, p.Name, nil)
		Expect(k8sClient.Create(ctx, claim)).To(Succeed())
		addr := expectAddress(claim)
		Expect(addr.Spec.Address).To(Equal("fd00:21::2"))
		Expect(addr.Spec.Gateway).To(Equal("fd00:21::1"))
		Expect(addr.Spec.Prefix).To(Equal(ptr.To[int32](64)))
		Expect(ledgerOf(p.Name)).To(Equal([]string{"fd00:21::2/128"}))
	})

	It("the orphan sweep releases an entry no IPAddressClaim carries, and keeps one a live claim carries", func() {
		p := createPool("172.21.5.0/24", nil)
		ns := capiNamespace(nil)
		live := addressClaim(ns, p.Name, func(c *capiv1beta2.IPAddressClaim) {
			c.Annotations = map[string]string{ipamv1alpha1.PausedAnnotation: ""}
		})
		Expect(k8sClient.Create(ctx, live)).To(Succeed())
		kept, err := pools.Allocate(ctx, ipam.Request{Pool: p, Bits: 32, Holder: ipam.AddressClaimHolder(ns), ID: string(live.UID)})
		Expect(err).NotTo(HaveOccurred())
		gone, err := pools.Allocate(ctx, ipam.Request{Pool: p, Bits: 32, Holder: ipam.AddressClaimHolder(ns), ID: "4f6c5f2e-0000-4000-8000-000000000000"})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() []string { return ledgerOf(p.Name) }).WithTimeout(3 * orphanGrace).Should(Equal([]string{kept.String()}))
		_, stillGone := entryOf(p.Name, gone)
		Expect(stillGone).To(BeFalse())
	})
})

var _ = Describe("A storm of IPAddressClaims, IPClaims and child pools on one parent", func() {
	It("gives zero overlaps across the three, by the ledgers, the objects and kubectl kipam check", func() {
		// kipam as it runs in production, with the default orphan grace:
		// the suite's 8 s is shorter than a create can take from its
		// commit to its storing on a loaded machine, and the sweep then
		// rightly releases an entry it sees no pool or claim carry (which
		// would read here as an overlap the fence did not make).
		stopKipam()
		stopKipam = startKipamWith(controller.DefaultOrphanGrace)
		DeferCleanup(func() {
			stopKipam()
			stopKipam = startKipam()
		})
		parent := createPool("172.24.0.0/18", nil)
		ns := capiNamespace(nil)
		fast := fastClient()
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			children []*ipamv1alpha1.IPPool
			claims   []*ipamv1alpha1.IPClaim
			machines []*capiv1beta2.IPAddressClaim
		)
		for i := range 150 {
			wg.Go(func() {
				defer GinkgoRecover()
				switch i % 3 {
				case 0:
					c := child(parent, []int32{26, 27, 28}[rand.IntN(3)], "")
					Expect(fast.Create(ctx, c)).To(Succeed())
					mu.Lock()
					children = append(children, c)
					mu.Unlock()
				case 1:
					c := newClaim(ns, parent.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To([]int32{28, 30, 32}[rand.IntN(3)]) })
					Expect(fast.Create(ctx, c)).To(Succeed())
					mu.Lock()
					claims = append(claims, c)
					mu.Unlock()
				default:
					c := addressClaim(ns, parent.Name, nil)
					Expect(fast.Create(ctx, c)).To(Succeed())
					mu.Lock()
					machines = append(machines, c)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		var held []string
		for _, c := range children {
			held = append(held, c.Spec.CIDR)
		}
		for _, c := range claims {
			held = append(held, c.Spec.CIDR)
		}
		Eventually(func(g Gomega) {
			var list capiv1beta2.IPAddressList
			g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			g.Expect(list.Items).To(HaveLen(len(machines)))
		}).WithTimeout(2 * time.Minute).Should(Succeed())
		for _, m := range machines {
			held = append(held, hostPrefix(expectAddress(m)).String())
		}
		Expect(held).To(HaveLen(150))
		expectDisjoint(held)
		Expect(ledgerOf(parent.Name)).To(ConsistOf(held), "the parent's ledger records exactly these")

		By("kubectl kipam check finds nothing wrong with any of them")
		ours := map[string]bool{"IPPool " + parent.Name: true, "IPLedger " + parent.Name: true}
		for _, c := range children {
			ours["IPPool "+c.Name], ours["IPLedger "+c.Name] = true, true
		}
		Eventually(func(g Gomega) {
			cluster, err := inspect.Load(ctx, k8sClient)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(len(cluster.AddressClaims)).To(BeNumerically(">=", len(machines)))
			var problems []inspect.Problem
			for _, p := range cluster.Check(time.Now(), 0) {
				if ours[p.Object] || slices.Contains(p.Namespaces, ns) {
					problems = append(problems, p)
				}
			}
			g.Expect(problems).To(BeEmpty())
		}).WithTimeout(time.Minute).Should(Succeed())
	})
})

// startKipamWith starts kipam as startKipam does, with another orphan
// grace, and returns what stops it.
func startKipamWith(grace time.Duration) (stop func()) {
	GinkgoHelper()
	k, err := kipamtest.Start(ctx, testEnv, cfg, scheme, SetupWithManager, controller.Options{OrphanGrace: grace, Now: suiteNow})
	Expect(err).NotTo(HaveOccurred())
	pools = k.Manager
	return func() {
		GinkgoHelper()
		Expect(k.Stop()).To(Succeed())
	}
}

// clusterCRD is a stand-in for Cluster API's Cluster CRD: the fields kipam
// reads (spec.paused, the paused annotation), the rest preserved.
func clusterCRD() *apiextensionsv1.CustomResourceDefinition {
	return &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "clusters.cluster.x-k8s.io"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "cluster.x-k8s.io",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "clusters", Singular: "cluster", Kind: "Cluster", ListKind: "ClusterList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1beta2", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: ptr.To(true),
				}},
			}},
		},
	}
}

func cluster(ns, name string, paused bool) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("cluster.x-k8s.io/v1beta2")
	u.SetKind("Cluster")
	u.SetNamespace(ns)
	u.SetName(name)
	Expect(unstructured.SetNestedField(u.Object, paused, "spec", "paused")).To(Succeed())
	return u
}

var _ = Describe("Cluster API's paused Clusters", Ordered, func() {
	var p *ipamv1alpha1.IPPool
	var ns string
	BeforeAll(func() {
		p = createPool("172.21.6.0/24", nil)
		ns = capiNamespace(nil)
	})

	It("serves claims naming a Cluster where Cluster API's Cluster kind is not served", func() {
		claim := addressClaim(ns, p.Name, func(c *capiv1beta2.IPAddressClaim) { c.Spec.ClusterName = "no-such-kind" })
		Expect(k8sClient.Create(ctx, claim)).To(Succeed())
		expectAddress(claim)
	})

	It("leaves a paused Cluster's claims alone, allocation and release, and serves them once it is unpaused", func() {
		By("installing Cluster API's Cluster kind and starting kipam again, which now reads it")
		_, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{CRDs: []*apiextensionsv1.CustomResourceDefinition{clusterCRD()}})
		Expect(err).NotTo(HaveOccurred())
		stopKipam()
		stopKipam = startKipam()

		byField := cluster(ns, "paused-by-field", true)
		Expect(k8sClient.Create(ctx, byField)).To(Succeed())
		byAnnotation := cluster(ns, "paused-by-annotation", false)
		byAnnotation.SetAnnotations(map[string]string{ipamv1alpha1.PausedAnnotation: ""})
		Expect(k8sClient.Create(ctx, byAnnotation)).To(Succeed())
		running := cluster(ns, "running", false)
		Expect(k8sClient.Create(ctx, running)).To(Succeed())

		a := addressClaim(ns, p.Name, func(c *capiv1beta2.IPAddressClaim) { c.Spec.ClusterName = byField.GetName() })
		b := addressClaim(ns, p.Name, func(c *capiv1beta2.IPAddressClaim) { c.Spec.ClusterName = byAnnotation.GetName() })
		r := addressClaim(ns, p.Name, func(c *capiv1beta2.IPAddressClaim) { c.Spec.ClusterName = running.GetName() })
		for _, c := range []*capiv1beta2.IPAddressClaim{a, b, r} {
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
		}
		expectAddress(r)
		// Their release finalizer is part of their create (kipam's
		// webhook), not of a reconcile: nothing else is done for them.
		Consistently(func(g Gomega) {
			for _, c := range []*capiv1beta2.IPAddressClaim{a, b} {
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
				g.Expect(c.Finalizers).To(ConsistOf(ipamv1alpha1.ClaimFinalizer))
				g.Expect(c.Status.AddressRef.Name).To(BeEmpty())
				g.Expect(c.Status.Conditions).To(BeEmpty())
				g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), &capiv1beta2.IPAddress{})).To(Satisfy(apierrors.IsNotFound))
			}
		}).WithTimeout(2 * time.Second).Should(Succeed())

		By("unpausing: spec.paused false, the annotation removed")
		Expect(unstructured.SetNestedField(byField.Object, false, "spec", "paused")).To(Succeed())
		Expect(k8sClient.Update(ctx, byField)).To(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(byAnnotation), byAnnotation)).To(Succeed())
		byAnnotation.SetAnnotations(nil)
		Expect(k8sClient.Update(ctx, byAnnotation)).To(Succeed())
		addrA := expectAddress(a)
		expectAddress(b)

		By("a claim deleted while its Cluster is paused keeps its address until the Cluster is unpaused")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(byField), byField)).To(Succeed())
		Expect(unstructured.SetNestedField(byField.Object, true, "spec", "paused")).To(Succeed())
		Expect(k8sClient.Update(ctx, byField)).To(Succeed())
		// The pause reaches kipam's reconcile through the API server: a
		// paused claim touched must stay as it is.
		Eventually(func(g Gomega) {
			var c unstructured.Unstructured
			c.SetGroupVersionKind(byField.GroupVersionKind())
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(byField), &c)).To(Succeed())
			paused, _, _ := unstructured.NestedBool(c.Object, "spec", "paused")
			g.Expect(paused).To(BeTrue())
		}).Should(Succeed())
		Expect(k8sClient.Delete(ctx, a)).To(Succeed())
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(a), a)).To(Succeed())
			_, ok := entryOf(p.Name, hostPrefix(addrA))
			g.Expect(ok).To(BeTrue())
		}).WithTimeout(2 * time.Second).Should(Succeed())
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(byField), byField)).To(Succeed())
		Expect(unstructured.SetNestedField(byField.Object, false, "spec", "paused")).To(Succeed())
		Expect(k8sClient.Update(ctx, byField)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(a), a))
		}).Should(BeTrue())
		_, ok := entryOf(p.Name, hostPrefix(addrA))
		Expect(ok).To(BeFalse())
	})
})
