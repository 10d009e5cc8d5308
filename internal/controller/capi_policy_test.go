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
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// config/policy keeps spec.poolRef of an IPAddressClaim of a kipam pool as
// it was created: the suite installs it as an install does (BeforeSuite).
// Without it, a claim answered from one pool and moved to another would
// keep its IPAddress while the sweep released the entry it no longer names.
var _ = Describe("The IPAddressClaim poolRef policy", func() {
	kipamPool := func(name string) capiv1beta2.IPPoolReference {
		return capiv1beta2.IPPoolReference{APIGroup: ipamv1alpha1.GroupVersion.Group, Kind: "IPPool", Name: name}
	}
	otherPool := func(name string) capiv1beta2.IPPoolReference {
		return capiv1beta2.IPPoolReference{APIGroup: "ipam.cluster.x-k8s.io", Kind: "InClusterIPPool", Name: name}
	}
	create := func(ref capiv1beta2.IPPoolReference) *capiv1beta2.IPAddressClaim {
		GinkgoHelper()
		c := &capiv1beta2.IPAddressClaim{
			ObjectMeta: metav1.ObjectMeta{Name: uniqueName("policy"), Namespace: "default"},
			Spec:       capiv1beta2.IPAddressClaimSpec{PoolRef: ref},
		}
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, c))).To(Succeed()) })
		return c
	}
	// update applies change to the claim as stored, retrying a conflict
	// (nothing else here writes the claim, but a policy's binding takes
	// effect a moment after it is created, so the refusals are polled too).
	update := func(c *capiv1beta2.IPAddressClaim, change func(*capiv1beta2.IPAddressClaim)) error {
		var stored capiv1beta2.IPAddressClaim
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(c), &stored); err != nil {
			return err
		}
		change(&stored)
		return k8sClient.Update(ctx, &stored)
	}
	refused := func(c *capiv1beta2.IPAddressClaim, change func(*capiv1beta2.IPAddressClaim)) {
		GinkgoHelper()
		Eventually(func(g Gomega) {
			err := update(c, change)
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring("spec.poolRef: Forbidden: an IPAddressClaim of a kipam IPPool cannot change its pool"))
		}).WithTimeout(30 * time.Second).Should(Succeed())
	}
	allowed := func(c *capiv1beta2.IPAddressClaim, change func(*capiv1beta2.IPAddressClaim)) {
		GinkgoHelper()
		Eventually(func() error { return update(c, change) }).WithTimeout(30 * time.Second).Should(Succeed())
	}

	It("refuses moving a claim of a kipam pool to another pool, of kipam or another provider", func() {
		c := create(kipamPool(uniqueName("pool")))
		refused(c, func(s *capiv1beta2.IPAddressClaim) { s.Spec.PoolRef.Name = "elsewhere" })
		refused(c, func(s *capiv1beta2.IPAddressClaim) { s.Spec.PoolRef = otherPool("elsewhere") })
		refused(c, func(s *capiv1beta2.IPAddressClaim) { s.Spec.PoolRef.Kind = "GlobalInClusterIPPool" })

		By("anything else about it may change")
		allowed(c, func(s *capiv1beta2.IPAddressClaim) { s.Labels = map[string]string{"team": "blue"} })
		allowed(c, func(s *capiv1beta2.IPAddressClaim) { s.Spec.ClusterName = "workload-2" })
	})

	It("refuses moving another provider's claim into a kipam pool, and leaves its other moves to that provider", func() {
		c := create(otherPool(uniqueName("in-cluster")))
		refused(c, func(s *capiv1beta2.IPAddressClaim) { s.Spec.PoolRef = kipamPool("tenant-a") })
		// Cluster API's own webhook, not installed here, refuses this one;
		// kipam's policy leaves other providers' claims alone.
		allowed(c, func(s *capiv1beta2.IPAddressClaim) { s.Spec.PoolRef.Name = "another" })
	})
})
