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

package main

import (
	"encoding/json"
	"fmt"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"regexp"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/inspect"
)

// The cluster of `make demo` (config/samples) without its pool machines and
// its claim blue-dual, and a pool that is full.
func buildCluster() {
	GinkgoHelper()
	shared := map[string]string{"ipam.kipam.dev/tier": "shared"}
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "blue", Labels: map[string]string{"team": "blue"}}})).To(Succeed())
	for _, p := range []*ipamv1alpha1.IPPool{
		{ObjectMeta: metav1.ObjectMeta{Name: "tenant-a", Labels: shared}, Spec: ipamv1alpha1.IPPoolSpec{
			CIDR: "10.10.0.0/16", ExcludeFirst: 1, ExcludeLast: 1, Reserved: []string{"10.10.0.1-10.10.0.9"}, ReuseGracePeriodSeconds: ptr.To[int64](30),
			RetainReleased: &metav1.Duration{Duration: time.Hour}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "tenant-a-lb"}, Spec: ipamv1alpha1.IPPoolSpec{
			ParentPool: "tenant-a", PrefixLength: ptr.To[int32](24), DefaultPrefixLength: ptr.To[int32](28)}},
		{ObjectMeta: metav1.ObjectMeta{Name: "blue-v6", Labels: shared}, Spec: ipamv1alpha1.IPPoolSpec{
			CIDR: "2001:db8:100::/48", DefaultPrefixLength: ptr.To[int32](64),
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "tiny"}, Spec: ipamv1alpha1.IPPoolSpec{CIDR: "192.168.7.0/30"}},
	} {
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
	}
	for _, c := range []*ipamv1alpha1.IPClaim{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: ipamv1alpha1.IPClaimSpec{Pool: "tenant-a"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "lb-range"}, Spec: ipamv1alpha1.IPClaimSpec{Pool: "tenant-a", PrefixLength: ptr.To[int32](28)}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ingress-vips"}, Spec: ipamv1alpha1.IPClaimSpec{Pool: "tenant-a-lb"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "any-shared"}, Spec: ipamv1alpha1.IPClaimSpec{
			PoolSelector: &metav1.LabelSelector{MatchLabels: shared}, IPFamily: ipamv1alpha1.IPv4}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "blue", Name: "blue-subnet"}, Spec: ipamv1alpha1.IPClaimSpec{Pool: "blue-v6"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "tiny-all"}, Spec: ipamv1alpha1.IPClaimSpec{Pool: "tiny", PrefixLength: ptr.To[int32](30)}},
	} {
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
	}
	// Every claim Ready, and the full pool's status says so.
	Eventually(func(g Gomega) {
		var claims ipamv1alpha1.IPClaimList
		g.Expect(k8sClient.List(ctx, &claims)).To(Succeed())
		g.Expect(claims.Items).To(HaveLen(6))
		for _, c := range claims.Items {
			g.Expect(meta.IsStatusConditionTrue(c.Status.Conditions, ipamv1alpha1.ConditionReady)).To(BeTrue(), "claim %s/%s", c.Namespace, c.Name)
		}
		var tiny ipamv1alpha1.IPPool
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "tiny"}, &tiny)).To(Succeed())
		g.Expect(meta.IsStatusConditionTrue(tiny.Status.Conditions, ipamv1alpha1.ConditionExhausted)).To(BeTrue())
	}).Should(Succeed())
}

var _ = Describe("kubectl kipam", Ordered, func() {
	BeforeAll(buildCluster)

	It("finds nothing to report in the cluster kipam built, even with no grace", func() {
		// kipam's pool statuses and IPAllocations follow the claims by a
		// moment: check agrees once they have.
		Eventually(func() int { return kipam("check", "--grace", "0s").code }).Should(Equal(0))
		r := kipam("check")
		Expect(r.code).To(Equal(0))
		Expect(r.out).To(Equal("no problems found\n"))
		Expect(kipam("check", "-o", "json").out).To(Equal("[]\n"))
	})

	It("draws the pool tree", func() {
		r := kipam("tree")
		Expect(r.code).To(Equal(0), r.err)
		expectGolden("tree", r.out)
		r = kipam("tree", "tenant-a")
		Expect(r.code).To(Equal(0), r.err)
		expectGolden("tree-tenant-a", r.out)

		var nodes []inspect.Node
		Expect(json.Unmarshal([]byte(kipam("tree", "-o", "json").out), &nodes)).To(Succeed())
		Expect(nodes).To(HaveLen(2))
		Expect(nodes[0].Children).To(HaveLen(2)) // tenant-a and tiny
		Expect(nodes[0].Children[0].Children[0].Name).To(Equal("tenant-a-lb"))
		Expect(nodes[0].Children[1].Warnings).To(ConsistOf("Exhausted"))
		var fromYAML []inspect.Node
		Expect(yaml.Unmarshal([]byte(kipam("tree", "-o", "yaml").out), &fromYAML)).To(Succeed())
		Expect(fromYAML).To(Equal(nodes))

		r = kipam("tree", "nope")
		Expect(r.code).To(Equal(1))
		Expect(r.err).To(Equal("error: no pool nope\n"))
	})

	It("lists free space", func() {
		r := kipam("free", "tenant-a", "--limit", "5")
		Expect(r.code).To(Equal(0), r.err)
		expectGolden("free-tenant-a", r.out)
		r = kipam("free", "tenant-a", "--prefix-length", "24", "--limit", "3")
		Expect(r.code).To(Equal(0), r.err)
		expectGolden("free-tenant-a-24", r.out)
		r = kipam("free", "tiny")
		Expect(r.code).To(Equal(0), r.err)
		Expect(r.out).To(Equal("pool tiny has 0 free addresses\n"))

		var f freeSpace
		Expect(json.Unmarshal([]byte(kipam("free", "tenant-a-lb", "--prefix-length", "28", "-o", "json").out), &f)).To(Succeed())
		Expect(f.Fit).To(Equal("15"))
		Expect(f.First).To(HaveLen(10))
		Expect(f.First[0].String()).To(Equal("10.10.1.16/28"))

		r = kipam("free", "tenant-a", "--prefix-length", "8")
		Expect(r.code).To(Equal(1))
		Expect(r.err).To(ContainSubstring("pool tenant-a (10.10.0.0/16) holds prefixes from /16 to /32, not /8"))
	})

	It("says who holds an address, a child pool's prefix, and what nobody holds", func() {
		r := kipam("who", "10.10.0.10")
		Expect(r.code).To(Equal(0), r.err)
		expectGolden("who-address", r.out)
		r = kipam("who", "10.10.1.0/24")
		Expect(r.code).To(Equal(0), r.err)
		expectGolden("who-child-pool", r.out)
		r = kipam("who", "10.10.0.99")
		Expect(r.code).To(Equal(0), r.err)
		expectGolden("who-free", r.out)
		Expect(kipam("who", "10.10.0.5").out).To(HaveSuffix("10.10.0.5/32 reserved in pool tenant-a\n"))

		var ans inspect.Answer
		Expect(json.Unmarshal([]byte(kipam("who", "2001:db8:100::1", "-o", "json").out), &ans)).To(Succeed())
		Expect(ans.HeldBy).To(HaveLen(2))
		Expect(ans.HeldBy[1].Namespace + "/" + ans.HeldBy[1].Name).To(Equal("blue/blue-subnet"))
		Expect(ans.HeldBy[1].Since).NotTo(BeNil())

		r = kipam("who", "10.10.0.300")
		Expect(r.code).To(Equal(1))
		Expect(r.err).To(ContainSubstring(`"10.10.0.300" is neither an address nor a CIDR`))
	})

	It("says who held a released address while its pool retains it, and gives it back to the same claim", func() {
		// Far from the first free addresses, which later specs overlap on
		// purpose; created again below asking for any /32, it gets this one.
		db := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db-0"}, Spec: ipamv1alpha1.IPClaimSpec{Pool: "tenant-a", CIDR: "10.10.128.1/32"}}
		Expect(k8sClient.Create(ctx, db)).To(Succeed())
		cidr := db.Spec.CIDR
		Expect(k8sClient.Delete(ctx, db)).To(Succeed())
		Eventually(func() bool { return apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(db), db)) }).Should(BeTrue())

		r := kipam("who", cidr)
		Expect(r.code).To(Equal(0), r.err)
		Expect(r.out).To(ContainSubstring("HELD BEFORE"))
		Expect(r.out).To(MatchRegexp(`tenant-a +` + regexp.QuoteMeta(cidr) + ` +default/db-0 +`))
		Expect(r.out).To(ContainSubstring(cidr + " retained in pool tenant-a for default/db-0, which released it, until "))
		var ans inspect.Answer
		Expect(json.Unmarshal([]byte(kipam("who", cidr, "-o", "json").out), &ans)).To(Succeed())
		Expect(ans.Before).To(HaveLen(1))
		Expect(ans.Before[0].ClaimUID).To(Equal(string(db.UID)))
		Expect(ans.Before[0].KeptUntil).NotTo(BeNil())

		again := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db-0"}, Spec: ipamv1alpha1.IPClaimSpec{Pool: "tenant-a"}}
		Expect(k8sClient.Create(ctx, again)).To(Succeed())
		Expect(again.Spec.CIDR).To(Equal(cidr))
		ans = inspect.Answer{} // json.Unmarshal would keep fields the new answer leaves out
		Expect(json.Unmarshal([]byte(kipam("who", cidr, "-o", "json").out), &ans)).To(Succeed())
		Expect(ans.HeldBy[len(ans.HeldBy)-1].Name).To(Equal("db-0"))
		Expect(ans.Before).To(HaveLen(1))
		Expect(ans.Before[0].KeptUntil).To(BeNil(), "held again: no longer kept")
		Eventually(func() int { return kipam("check", "--grace", "0s").code }).Should(Equal(0))
	})

	It("says who holds each prefix of a dual-stack claim, and finds nothing wrong with it", func() {
		// A /20, far from the addresses the specs below overlap on purpose.
		dual := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "blue", Name: "blue-dual"}, Spec: ipamv1alpha1.IPClaimSpec{
			IPFamilyPolicy: ipamv1alpha1.RequireDualStack, IPFamilies: []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv6, ipamv1alpha1.IPv4},
			Pools: []string{"blue-v6", "tenant-a"}, PrefixLengths: []int32{64, 20}}}
		Expect(k8sClient.Create(ctx, dual)).To(Succeed())
		Expect(dual.Spec.CIDRs).To(HaveLen(2))
		for i, pool := range []string{"blue-v6", "tenant-a"} {
			var ans inspect.Answer
			Expect(json.Unmarshal([]byte(kipam("who", dual.Spec.CIDRs[i], "-o", "json").out), &ans)).To(Succeed())
			last := ans.HeldBy[len(ans.HeldBy)-1]
			Expect(last.Pool).To(Equal(pool))
			Expect(last.Namespace+"/"+last.Name).To(Equal("blue/blue-dual"), "who %s", dual.Spec.CIDRs[i])
			Expect(last.Allocation).NotTo(BeEmpty())
		}
		Eventually(func() string { return kipam("check", "--grace", "0s").out }).Should(Equal("no problems found\n"))
	})

	When("kipam is down and its objects are changed behind its back", func() {
		BeforeAll(func() {
			stopKipam()
			stopKipam = nil
			// Without kipam's webhooks, nothing stops what follows.
			for _, obj := range []client.Object{
				&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "mutating-webhook-configuration"}},
				&admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "validating-webhook-configuration"}},
			} {
				Expect(k8sClient.Delete(ctx, obj)).To(Succeed())
			}

			// A claim created with its cidr over web's, around the webhook.
			Expect(k8sClient.Create(ctx, &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "rogue"},
				Spec: ipamv1alpha1.IPClaimSpec{Pool: "tenant-a", CIDR: "10.10.0.8/29"}})).To(Succeed())
			// web's IPAllocation deleted, finalizer and all.
			var web ipamv1alpha1.IPAllocation
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "tenant-a.10-10-0-10-32"}, &web)).To(Succeed())
			forceDelete(&web)
			// lb-range deleted without its finalizer: its IPAllocation and
			// ledger entry stay.
			var lbRange ipamv1alpha1.IPClaim
			Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: "lb-range"}, &lbRange)).To(Succeed())
			forceDelete(&lbRange)
			// An entry written into tenant-a's root ledger an hour ago
			// for a claim that never was.
			var root ipamv1alpha1.IPLedger
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "tenant-a"}, &root)).To(Succeed())
			root.Spec.Allocations += fmt.Sprintf("10.10.200.0/24 IPClaim/default %d ghost\n", time.Now().Add(-time.Hour).Unix())
			Expect(k8sClient.Update(ctx, &root)).To(Succeed())
			// tenant-a-lb's status claiming more than its ledgers hold.
			var lb ipamv1alpha1.IPPool
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "tenant-a-lb"}, &lb)).To(Succeed())
			lb.Status.Claims = 7
			Expect(k8sClient.Status().Update(ctx, &lb)).To(Succeed())
		})

		It("reports each inconsistency and exits 1", func() {
			r := kipam("check", "--grace", "0s")
			Expect(r.code).To(Equal(1))
			Expect(r.err).To(Equal("10 problems found\n"))
			expectGolden("check", r.out)

			var problems []inspect.Problem
			Expect(json.Unmarshal([]byte(kipam("check", "--grace", "0s", "-o", "json").out), &problems)).To(Succeed())
			var kinds []inspect.Kind
			for _, p := range problems {
				kinds = append(kinds, p.Kind)
			}
			// rogue overlaps web and any-shared.
			Expect(kinds).To(ConsistOf(inspect.MissingAllocation, inspect.MissingAllocation, inspect.OrphanedAllocation, inspect.Overlap, inspect.Overlap,
				inspect.StatusDrift, inspect.StatusDrift, inspect.UnheldEntry, inspect.UnheldEntry, inspect.UnrecordedClaim))
		})

		It("reports only what was changed more than --grace ago", func() {
			// The ghost entry is an hour old; lb-range's entry and the
			// claims without IPAllocations, moments. What kipam would not
			// repair on its own is reported at once.
			r := kipam("check", "--grace", "30m")
			Expect(r.code).To(Equal(1))
			Expect(r.err).To(Equal("7 problems found\n"))
			Expect(r.out).To(ContainSubstring("10.10.200.0/24 for IPClaim/default"))
			Expect(r.out).NotTo(ContainSubstring("MissingAllocation"))
		})

		It("shows a namespace only its own problems", func() {
			r := kipam("check", "--grace", "0s", "-n", "blue")
			Expect(r.code).To(Equal(0))
			Expect(r.out).To(Equal("no problems found\n"))
			r = kipam("check", "--grace", "0s", "-n", "default")
			Expect(r.code).To(Equal(1))
			Expect(r.err).To(Equal("8 problems found\n"))
			r = kipam("check", "-n", "default", "-A")
			Expect(r.code).To(Equal(2))
			Expect(r.err).To(Equal("error: -n and -A exclude each other\n"))
		})
	})

	It("exits 2 when it cannot look", func() {
		r := kipam("check", "--kubeconfig", "/nonexistent")
		Expect(r.code).To(Equal(2))
		Expect(r.err).To(HavePrefix("error: loading the kubeconfig: "))
		r = kipam("tree", "-o", "wide")
		Expect(r.code).To(Equal(1))
		Expect(r.err).To(Equal("error: --output must be table, json or yaml, not \"wide\"\n"))
	})
})

// forceDelete deletes obj without waiting for its finalizers, as a user
// removing them by hand does.
func forceDelete(obj client.Object) {
	GinkgoHelper()
	patch := client.MergeFrom(obj.DeepCopyObject().(client.Object))
	obj.SetFinalizers(nil)
	Expect(k8sClient.Patch(ctx, obj, patch)).To(Succeed())
	Expect(k8sClient.Delete(ctx, obj)).To(Succeed())
}
