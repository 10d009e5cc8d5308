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

package controller

import (
	"net/netip"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// queueAdds is how many requests the work queue of the controller called
// name has been given, by every manager of the process so far.
func queueAdds(name string) float64 {
	GinkgoHelper()
	families, err := ctrlmetrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	for _, f := range families {
		if f.GetName() != "workqueue_adds_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "name" && l.GetValue() == name {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

var _ = Describe("A restart", func() {
	It("queues the claims of its initial list that need work, and not those settled", func() {
		By("starting kipam's controllers and binding claims")
		stop := startKipam(Options{OrphanGrace: time.Hour}, nil)
		pool := fencePool("10.208.0.0/24")
		ns := fenceNamespace()
		tm := ipam.NewManager(ipam.ClientStore{Reader: k8sClient, Writer: k8sClient}, nil)
		const n = 40
		claims := make([]*ipamv1alpha1.IPClaim, n)
		for i := range claims {
			cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 208, 0, byte(i + 1)}), 32)
			id := ipam.NewEntryID()
			_, err := tm.Allocate(ctx, ipam.Request{Pool: pool, CIDR: cidr, Bits: cidr.Bits(), Holder: ipam.ClaimHolder(ns), ID: id})
			Expect(err).NotTo(HaveOccurred())
			claims[i] = storedClaim(ns, pool, cidr, id)
		}
		ready := func(g Gomega, c *ipamv1alpha1.IPClaim) {
			var now ipamv1alpha1.IPClaim
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), &now)).To(Succeed())
			g.Expect(meta.IsStatusConditionTrue(now.Status.Conditions, ipamv1alpha1.ConditionReady)).To(BeTrue(), "%s is Ready", c.Name)
		}
		Eventually(func(g Gomega) {
			for _, c := range claims {
				ready(g, c)
			}
		}).WithTimeout(time.Minute).Should(Succeed())
		stop()

		By("while kipam is down, losing one claim's status and another's IPAllocation")
		var lost ipamv1alpha1.IPClaim
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(claims[0]), &lost)).To(Succeed())
		before := lost.DeepCopy()
		lost.Status = ipamv1alpha1.IPClaimStatus{}
		Expect(k8sClient.Status().Patch(ctx, &lost, client.MergeFrom(before))).To(Succeed())
		var gone ipamv1alpha1.IPAllocation
		name := ipam.AllocationName(pool.Name, netip.MustParsePrefix(claims[1].Spec.CIDR))
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &gone)).To(Succeed())
		patch := client.MergeFrom(gone.DeepCopy())
		controllerutil.RemoveFinalizer(&gone, ipamv1alpha1.AllocationFinalizer)
		Expect(k8sClient.Patch(ctx, &gone, patch)).To(Succeed())
		Expect(k8sClient.Delete(ctx, &gone)).To(Succeed())

		By("restarting kipam")
		adds := queueAdds("ipclaim")
		startKipam(Options{OrphanGrace: time.Hour}, nil)
		Eventually(func(g Gomega) {
			ready(g, claims[0])
			var a ipamv1alpha1.IPAllocation
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &a)).To(Succeed())
			g.Expect(a.UID).NotTo(Equal(gone.UID))
			g.Expect(a.Spec.ClaimRef.Name).To(Equal(claims[1].Name))
		}).WithTimeout(time.Minute).Should(Succeed(), "the two claims that needed work got it")
		// The two, and the events their repair caused; the 38 settled
		// claims of the initial list were not queued.
		Expect(queueAdds("ipclaim")-adds).To(BeNumerically("<", n/2), "the claim controller queued the settled claims of its initial list")
	})
})
