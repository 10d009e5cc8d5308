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
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

var _ = Describe("Pool status", func() {
	// exhausted reads the pool's Exhausted condition and available count.
	exhausted := func(p *ipamv1alpha1.IPPool) func(Gomega) string {
		return func(g Gomega) string {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
			// Absent until the pool controller first writes the status.
			cond := meta.FindStatusCondition(p.Status.Conditions, ipamv1alpha1.ConditionExhausted)
			g.Expect(cond).NotTo(BeNil())
			return string(cond.Status) + " " + p.Status.Available
		}
	}

	DescribeTable("follows the end of what a release holds back, with no other change to wake it",
		func(cidr string, mutate func(*ipamv1alpha1.IPPoolSpec)) {
			p := createPool(cidr, mutate)
			c := newClaim("default", p.Name, func(c *ipamv1alpha1.IPClaim) { c.Name, c.Spec.PrefixLength = "whole-"+p.Name, ptr.To[int32](30) })
			Expect(k8sClient.Create(ctx, c)).To(Succeed())
			Eventually(exhausted(p)).Should(Equal("True 0"))
			deleteAndWait(c)
			// Held (reuse grace) or retained for c: still nothing free.
			Consistently(exhausted(p)).WithTimeout(time.Second).Should(Equal("True 0"))
			Eventually(exhausted(p)).WithTimeout(20 * time.Second).Should(Equal("False 4"))
		},
		Entry("a reuse grace", "10.198.0.0/30", func(s *ipamv1alpha1.IPPoolSpec) { s.ReuseGracePeriodSeconds = ptr.To[int64](3) }),
		Entry("a retention window", "10.198.0.4/30", func(s *ipamv1alpha1.IPPoolSpec) {
			s.RetainReleased = &metav1.Duration{Duration: 3 * time.Second}
		}),
	)
})
