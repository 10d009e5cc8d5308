//go:build e2e

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

package e2e

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// The exhaustion suite's address space: 10.236.0.0/16.
var _ = Describe("Exhaustion across the hierarchy with kubectl", func() {
	It("leaves no room in a parent its child fills: claims and carves there are denied as exhausted, the child serves", func() {
		createPool("e2e-exf", "10.236.0.0/24")
		Expect(mustCreateCIDR(poolYAML("e2e-exf-child", "parentPool: e2e-exf, prefixLength: 24"))).To(Equal("10.236.0.0/24"))
		eventually(jsonpathOf("{.status.childPools} {.status.allocated} {.status.available}", "ippool", "e2e-exf")).Should(Equal("1 256 0"))
		eventually(jsonpathOf(`{.status.conditions[?(@.type=="Exhausted")].status}`, "ippool", "e2e-exf")).Should(Equal("True"))

		Expect(denied(claimYAML("default", "e2e-exf-c", "pool: e2e-exf"))).
			To(ContainSubstring("pool e2e-exf is exhausted: no free /32 left"))
		Expect(denied(poolYAML("e2e-exf-more", "parentPool: e2e-exf, prefixLength: 28"))).
			To(ContainSubstring("spec.prefixLength: Forbidden: pool e2e-exf is exhausted: no free /28 left"))
		Expect(denied(poolYAML("e2e-exf-more", "parentPool: e2e-exf, cidr: 10.236.0.16/28"))).
			To(ContainSubstring(`spec.cidr: Invalid value: "10.236.0.16/28": overlaps pool e2e-exf-child (10.236.0.0/24) in pool e2e-exf`))

		By("serving claims and children from the child")
		Expect(mustCreateCIDR(claimYAML("default", "e2e-exf-c", "pool: e2e-exf-child"))).To(Equal("10.236.0.0/32"))
		Expect(mustCreateCIDR(poolYAML("e2e-exf-more", "parentPool: e2e-exf-child, prefixLength: 28"))).To(Equal("10.236.0.16/28"))
	})

	It("denies a claim and a carve on a full child while its parent has room: exhaustion does not spill over", func() {
		createPool("e2e-exc", "10.236.1.0/24")
		Expect(mustCreateCIDR(poolYAML("e2e-exc-child", "parentPool: e2e-exc, prefixLength: 30"))).To(Equal("10.236.1.0/30"))
		for i := range 4 {
			Expect(mustCreateCIDR(claimYAML("default", fmt.Sprintf("e2e-exc-%d", i), "pool: e2e-exc-child"))).
				To(Equal(fmt.Sprintf("10.236.1.%d/32", i)))
		}
		Expect(denied(claimYAML("default", "e2e-exc-more", "pool: e2e-exc-child"))).
			To(ContainSubstring("pool e2e-exc-child is exhausted: no free /32 left"))
		Expect(denied(poolYAML("e2e-exc-grandchild", "parentPool: e2e-exc-child, prefixLength: 31"))).
			To(ContainSubstring("spec.prefixLength: Forbidden: pool e2e-exc-child is exhausted: no free /31 left"))
		Expect(mustCreateCIDR(claimYAML("default", "e2e-exc-more", "pool: e2e-exc"))).To(Equal("10.236.1.4/32"))
	})

	It("keeps a waiting claim on a full parent Pending, and binds it once a sibling claim is deleted", func() {
		createPool("e2e-exw", "10.236.2.0/24")
		Expect(mustCreateCIDR(poolYAML("e2e-exw-child", "parentPool: e2e-exw, prefixLength: 25"))).To(Equal("10.236.2.0/25"))
		Expect(mustCreateCIDR(claimYAML("default", "e2e-exw-sibling", "pool: e2e-exw, prefixLength: 25"))).To(Equal("10.236.2.128/25"))
		Expect(denied(claimYAML("default", "e2e-exw-host", "pool: e2e-exw"))).
			To(ContainSubstring("pool e2e-exw is exhausted: no free /32 left"))
		Expect(denied(poolYAML("e2e-exw-more", "parentPool: e2e-exw, prefixLength: 26"))).
			To(ContainSubstring("spec.prefixLength: Forbidden: pool e2e-exw is exhausted: no free /26 left"))

		By("creating a claim that waits for a /26")
		Expect(mustCreateCIDR(claimYAML("default", "e2e-exw-wait", "pool: e2e-exw, prefixLength: 26, whenExhausted: Wait"))).To(BeEmpty())
		waiting := jsonpathOf("{.spec.cidr}|{.status.cidr}|"+readyOf, "ipclaim", "-n", "default", "e2e-exw-wait")
		eventually(waiting).Should(Equal("||False/Pending"))
		Consistently(waiting).WithTimeout(5*time.Second).WithPolling(time.Second).Should(Equal("||False/Pending"),
			"a waiting claim was bound while its pool was full")

		By("deleting the sibling claim: the waiting claim takes the lowest /26 of the space it freed")
		out, err := k("delete", "ipclaim", "-n", "default", "e2e-exw-sibling", "--wait=true", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred(), out)
		eventually(waiting).Should(Equal("10.236.2.128/26|10.236.2.128/26|True/Allocated"))
		eventually(allocations("e2e-exw")).Should(ConsistOf("IPPool/e2e-exw-child 10.236.2.0/25", "IPClaim/e2e-exw-wait 10.236.2.128/26"))
		Expect(mustCreateCIDR(poolYAML("e2e-exw-more", "parentPool: e2e-exw, prefixLength: 26"))).To(Equal("10.236.2.192/26"))
	})
})
