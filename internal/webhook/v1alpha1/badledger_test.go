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
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// editLedger rewrites the allocation lines of pool's root ledger behind
// kipam's back, as a person with kubectl edit would.
func editLedger(pool string, edit func(allocations string) string) {
	GinkgoHelper()
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var l ipamv1alpha1.IPLedger
		if err := k8sClient.Get(ctx, client.ObjectKey{Name: pool}, &l); err != nil {
			return err
		}
		l.Spec.Allocations = edit(l.Spec.Allocations)
		return k8sClient.Update(ctx, &l)
	})).To(Succeed())
}

func poolReady(p *ipamv1alpha1.IPPool) func(Gomega) metav1.Condition {
	return func(g Gomega) metav1.Condition {
		var got ipamv1alpha1.IPPool
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &got)).To(Succeed())
		c := meta.FindStatusCondition(got.Status.Conditions, ipamv1alpha1.ConditionReady)
		g.Expect(c).NotTo(BeNil())
		return *c
	}
}

var _ = Describe("A ledger kipam cannot read", func() {
	It("stops its pool, says which line in the pool's status and in every denial, and serves again once the line is repaired", func() {
		p := createPool("10.173.0.0/28", nil)
		ns := waitNamespace()
		held := newClaim(ns, p.Name, nil)
		Expect(k8sClient.Create(ctx, held)).To(Succeed())
		var good, bad string
		editLedger(p.Name, func(s string) string {
			for line := range strings.Lines(s) {
				if strings.HasPrefix(line, held.Spec.CIDR+" ") {
					f := strings.Fields(line)
					f[2] = "yesterday"
					good, bad = strings.TrimSpace(line), strings.Join(f, " ")
				}
			}
			Expect(bad).NotTo(BeEmpty(), "the ledger records %s", held.Spec.CIDR)
			return strings.Replace(s, good, bad, 1)
		})

		By("a claim is denied, naming the ledger, the line and what to do, and not as a failure to retry")
		err := k8sClient.Create(ctx, newClaim(ns, p.Name, nil))
		Expect(err).To(MatchError(And(
			ContainSubstring(`ledger %s holds a bad allocation line %q`, p.Name, bad),
			ContainSubstring("repair"))))
		Expect(apierrors.IsInternalError(err)).To(BeFalse(), "a bad line does not go away by retrying: %v", err)
		Expect(apierrors.IsTooManyRequests(err)).To(BeFalse(), "a bad line does not go away by retrying: %v", err)

		By("so is a carve, and a release waits")
		err = k8sClient.Create(ctx, child(p, 30, ""))
		Expect(err).To(MatchError(ContainSubstring(`ledger %s holds a bad allocation line %q`, p.Name, bad)))
		Expect(apierrors.IsServiceUnavailable(err)).To(BeTrue(), "%v", err)
		Expect(k8sClient.Delete(ctx, held)).To(Succeed())
		Consistently(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(held), held) }, "2s").Should(Succeed(),
			"the claim went before its prefix was released")

		By("the pool says so")
		Eventually(poolReady(p)).Should(And(
			HaveField("Status", metav1.ConditionFalse),
			HaveField("Reason", ipamv1alpha1.ReasonBadLedger),
			HaveField("Message", ContainSubstring(bad))))

		By("repaired, it serves again and the waiting release goes through")
		editLedger(p.Name, func(s string) string { return strings.Replace(s, bad, good, 1) })
		Eventually(poolReady(p)).Should(HaveField("Reason", ipamv1alpha1.ReasonPoolReady))
		Eventually(func() error { return k8sClient.Get(ctx, client.ObjectKeyFromObject(held), held) }).Should(Satisfy(apierrors.IsNotFound))
		Expect(ledgerOf(p.Name)).NotTo(ContainElement(held.Spec.CIDR))
		Expect(k8sClient.Create(ctx, newClaim(ns, p.Name, nil))).To(Succeed())
	})
})
