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
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/api/meta"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// The wait suite's address space: 10.247.0.0/16 and 2001:db8:e47::/48, one
// /24 per spec. Its pools and namespaces are named e2e-wait-*.
var _ = Describe("Claims that wait, with kubectl", func() {
	It("binds the waiting claim of the namespace within its namespaceLimit, keeps the one at its limit waiting, and shows the pool each waits on", func() {
		const pool, nsA, nsB = "e2e-wait-lim", "e2e-wait-lim-a", "e2e-wait-lim-b"
		createNamespaces(nsA, nsB)
		mustCreateCIDR(poolYAML(pool, "cidr: 10.247.0.0/30, namespaceLimit: {claims: 2}"))
		for i, ns := range []string{nsA, nsA, nsB, nsB} {
			Expect(mustCreateCIDR(claimYAML(ns, fmt.Sprintf("hold-%d", i%2), "pool: "+pool))).To(Equal(fmt.Sprintf("10.247.0.%d/32", i)))
		}

		By("queueing a claim in each namespace, A's first: B's is not held back by it")
		for _, ns := range []string{nsA, nsB} {
			Expect(mustCreateCIDR(claimYAML(ns, "waiter", "pool: "+pool+", whenExhausted: Wait"))).To(BeEmpty())
		}
		for _, ns := range []string{nsA, nsB} {
			eventually(claimState(ns, "waiter")).Should(Equal("|" + pool + "|False/Pending"))
			// The largest free block is the pool's status as the claim's last
			// reconcile found it, which may predate the last holder.
			eventually(readyMessage(ns, "waiter")).Should(MatchRegexp(`^waiting for space in pool %s, first in namespace %s's queue `+
				`\(the pool's largest free block: [^)]+\): pool %[1]s: no free /32 left: no address is free$`, pool, ns))

			By("showing the pool in kubectl get's POOL column, and the Pending event in kubectl describe, for " + ns)
			out, err := k("get", "ipclaims", "-n", ns)
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(MatchRegexp(`(?m)^NAME\s+POOL\s+CIDR\s+SECONDARY\s+READY\s+AGE$`))
			// No CIDR: the Ready column follows the pool's name.
			Expect(out).To(MatchRegexp(`(?m)^waiter\s+%s\s+False\s+\S+$`, pool))
			eventually(func() (string, error) { return k("describe", "ipclaim", "-n", ns, "waiter") }).Should(MatchRegexp(
				`(?m)^\s+Normal\s+Pending\s+.*\bkipam\s+waiting for space in pool %s, first in namespace %s's queue`, pool, ns))
		}
		eventually(func() (string, error) { return k("describe", "ippool", pool) }).Should(MatchRegexp(
			`(?m)^\s+Normal\s+Pending\s+.*\bkipam-webhook\s+a /32 for a claim in namespace %s waits for space: no free /32 left`, nsA))

		By("deleting one of B's holders: B is within its limit again and its claim binds; A, at its limit, keeps waiting")
		out, err := k("delete", "ipclaim", "-n", nsB, "hold-0", "--wait=true", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred(), out)
		eventually(claimState(nsB, "waiter")).Should(Equal("10.247.0.2/32|" + pool + "|True/Allocated"))
		stays(claimState(nsA, "waiter"), "|"+pool+"|False/Pending", "the claim of a namespace at its namespaceLimit was bound")

		By("deleting B's other holder: the pool has room, and A's claim says its namespace's limit holds it back")
		out, err = k("delete", "ipclaim", "-n", nsB, "hold-1", "--wait=true", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred(), out)
		eventually(jsonpathOf("{.status.available}", "ippool", pool)).Should(Equal("1"))
		eventually(readyMessage(nsA, "waiter")).Should(HaveSuffix(fmt.Sprintf(": namespace limit: namespace %s holds 2 claims from pool %s, "+
			"which its spec.namespaceLimit.claims allows at most; a release there makes room", nsA, pool)))
		stays(claimState(nsA, "waiter"), "|"+pool+"|False/Pending", "the claim of a namespace at its namespaceLimit was bound")

		By("deleting one of A's holders: A's claim binds the lowest free address")
		out, err = k("delete", "ipclaim", "-n", nsA, "hold-0", "--wait=true", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred(), out)
		eventually(claimState(nsA, "waiter")).Should(Equal("10.247.0.0/32|" + pool + "|True/Allocated"))
		eventually(allocations(pool)).Should(ConsistOf("IPClaim/waiter 10.247.0.0/32", "IPClaim/hold-1 10.247.0.1/32", "IPClaim/waiter 10.247.0.2/32"))
	})

	It("binds every claim a burst of releases makes room for, in creation order within each namespace", func() {
		const pool, nsA, nsB, holders, label = "e2e-wait-burst", "e2e-wait-burst-a", "e2e-wait-burst-b", "e2e-wait-burst-h", "e2e-wait=burst"
		createNamespaces(nsA, nsB, holders)
		mustCreateCIDR(poolYAML(pool, "cidr: 10.247.1.0/29"))
		var held []string
		for i := range 8 {
			held = append(held, mustCreateCIDR(claimYAML(holders, fmt.Sprintf("hold-%d", i), "pool: "+pool)))
		}
		Expect(held).To(Equal([]string{"10.247.1.0/32", "10.247.1.1/32", "10.247.1.2/32", "10.247.1.3/32",
			"10.247.1.4/32", "10.247.1.5/32", "10.247.1.6/32", "10.247.1.7/32"}))
		watch := watchLines(`{.type} {.object.metadata.namespace}/{.object.metadata.name} {.object.spec.cidr}{"\n"}`,
			"ipclaims", "-A", "-l", label)

		By("queueing three claims in each namespace, created alternately")
		wait := "pool: " + pool + ", whenExhausted: Wait"
		for i := range 3 {
			for _, ns := range []string{nsA, nsB} {
				Expect(mustCreateCIDR(claimYAML(ns, fmt.Sprintf("w%d", i), wait, "labels: {e2e-wait: burst}"))).To(BeEmpty())
			}
		}
		for _, ns := range []string{nsA, nsB} {
			eventually(readyMessage(ns, "w0")).Should(HavePrefix(fmt.Sprintf("waiting for space in pool %s, first in namespace %s's queue", pool, ns)))
			eventually(readyMessage(ns, "w2")).Should(Equal(fmt.Sprintf("waiting for space in pool %s, behind 2 older claims of namespace %s (the first is w0)", pool, ns)))
		}

		By("denying a Deny claim of A behind A's queue, not one asking for an exact cidr, nor one of another namespace")
		Expect(denied(claimYAML(nsA, "now", "pool: "+pool))).To(ContainSubstring(fmt.Sprintf(
			"3 older claims of namespace %s wait for space in the same pools (the first is w0): a new claim would take it before them", nsA)))
		Expect(denied(claimYAML(nsA, "now", "pool: "+pool+", cidr: 10.247.1.7/32"))).To(ContainSubstring(
			`spec.cidr: Invalid value: "10.247.1.7/32": is already allocated in pool ` + pool))
		Expect(denied(claimYAML(holders, "now", "pool: "+pool))).To(ContainSubstring("pool " + pool + " is exhausted: no free /32 left"))

		By("queueing a fourth Wait claim of A behind the three")
		Expect(mustCreateCIDR(claimYAML(nsA, "w3", wait, "labels: {e2e-wait: burst}"))).To(BeEmpty())
		eventually(readyMessage(nsA, "w3")).Should(Equal(fmt.Sprintf("waiting for space in pool %s, behind 3 older claims of namespace %s (the first is w0)", pool, nsA)))
		waiters := []string{nsA + "/w0", nsA + "/w1", nsA + "/w2", nsA + "/w3", nsB + "/w0", nsB + "/w1", nsB + "/w2"}
		eventually(watch).Should(ContainElements(prefixed("ADDED ", waiters)))

		By("deleting seven holders with one kubectl delete")
		out, err := k("delete", "ipclaim", "-n", holders, "hold-0", "hold-1", "hold-2", "hold-3", "hold-4", "hold-5", "hold-6", "--wait=false")
		Expect(err).NotTo(HaveOccurred(), out)
		bound := func() (map[string]string, error) {
			got := map[string]string{}
			out, err := lines(`{range .items[*]}{.metadata.namespace}/{.metadata.name} {.spec.cidr}|{.status.pool}|`+readyOf+`{"\n"}{end}`,
				"ipclaims", "-A", "-l", label)()
			for _, l := range out {
				name, state, _ := strings.Cut(l, " ")
				if cidr, ok := strings.CutSuffix(state, "|"+pool+"|True/Allocated"); ok {
					got[name] = cidr
				}
			}
			return got, err
		}
		eventually(bound).Should(HaveLen(len(waiters)), "not every waiting claim was bound")
		got, err := bound()
		Expect(err).NotTo(HaveOccurred())
		Expect(slices.Collect(maps.Values(got))).To(ConsistOf(held[:7]), "the waiting claims were not bound to the released addresses")

		By("having bound them in creation order within each namespace, as the watch saw the binds")
		seen, err := watch()
		Expect(err).NotTo(HaveOccurred())
		order, cidrs := bindOrder(seen)
		for name, cidr := range got {
			Expect(cidrs[name]).To(Equal([]string{cidr}), "the watch saw %s carry other cidrs", name)
		}
		inNamespace := func(ns string) []string {
			return slices.DeleteFunc(slices.Clone(order), func(n string) bool { return !strings.HasPrefix(n, ns+"/") })
		}
		Expect(inNamespace(nsA)).To(Equal(waiters[:4]), "the binds as the watch saw them: %v", order)
		Expect(inNamespace(nsB)).To(Equal(waiters[4:]), "the binds as the watch saw them: %v", order)
		eventually(jsonpathOf(counts, "ippool", pool)).Should(Equal("children= claims=8 allocated=8"))
	})

	It("binds a waiting claim to the released address once the pool's reuse grace ends, with nothing else changing", func() {
		const pool, ns = "e2e-wait-grace", "e2e-wait-grace"
		createNamespaces(ns)
		mustCreateCIDR(poolYAML(pool, "cidr: 10.247.2.0/31, reuseGracePeriodSeconds: 3"))
		Expect(mustCreateCIDR(claimYAML(ns, "hold-0", "pool: "+pool))).To(Equal("10.247.2.0/32"))
		Expect(mustCreateCIDR(claimYAML(ns, "hold-1", "pool: "+pool))).To(Equal("10.247.2.1/32"))
		Expect(mustCreateCIDR(claimYAML(ns, "waiter", "pool: "+pool+", whenExhausted: Wait"))).To(BeEmpty())
		state := claimState(ns, "waiter")
		eventually(state).Should(Equal("|" + pool + "|False/Pending"))

		By("deleting a holder: its address is held for the grace, in the pool's ledger")
		out, err := k("delete", "ipclaim", "-n", ns, "hold-1", "--wait=true", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred(), out)
		var until time.Time
		eventually(func() (string, error) {
			holds, err := jsonpathOf("{.spec.holds}", "ipledger", pool)()
			if m := regexp.MustCompile(`^10\.247\.2\.1/32 (\d+)$`).FindStringSubmatch(strings.TrimSpace(holds)); m != nil {
				s, _ := strconv.ParseInt(m[1], 10, 64)
				until = time.Unix(s, 0)
			}
			return holds, err
		}).Should(MatchRegexp(`^10\.247\.2\.1/32 \d+\n?$`))
		// Stored in whole seconds, rounded up: at most a second past the grace.
		Expect(time.Until(until)).To(BeNumerically("<=", 4*time.Second), "held until %s, longer than the grace", until)
		if d := time.Until(until) - 300*time.Millisecond; d > 0 {
			Consistently(state).WithTimeout(d).WithPolling(250*time.Millisecond).Should(Equal("|"+pool+"|False/Pending"),
				"the claim was bound to an address held for the pool's reuse grace (until %s)", until)
		}

		By("binding it, once the grace is over, to the released address")
		eventually(state).Should(Equal("10.247.2.1/32|" + pool + "|True/Allocated"))
		eventually(allocations(pool)).Should(ConsistOf("IPClaim/hold-0 10.247.2.0/32", "IPClaim/waiter 10.247.2.1/32"))
		created, err := jsonpathOf(`{.items[?(@.spec.claimRef.name=="waiter")].metadata.creationTimestamp}`,
			"ipallocations", "-l", "ipam.kipam.dev/pool="+pool)()
		Expect(err).NotTo(HaveOccurred())
		at, err := time.Parse(time.RFC3339, created)
		Expect(err).NotTo(HaveOccurred(), "IPAllocation created at %q", created)
		Expect(at).NotTo(BeTemporally("<", until), "bound before the grace ended")
		eventually(jsonpathOf("{.spec.holds}", "ipledger", pool)).Should(BeEmpty())
	})

	It("binds a claim waiting on its poolSelector when a matching pool is created, not for a pool that does not match", func() {
		const ns = "e2e-wait-sel"
		createNamespaces(ns)
		bySelector := "poolSelector: {matchLabels: {e2e-wait: sel}}, ipFamily: IPv4"
		mustCreateCIDR(poolYAML("e2e-wait-sel-a", "cidr: 10.247.3.0/32", "labels: {e2e-wait: sel}"))
		Expect(mustCreateCIDR(claimYAML(ns, "hold", bySelector))).To(Equal("10.247.3.0/32"))
		Expect(mustCreateCIDR(claimYAML(ns, "waiter", bySelector+", whenExhausted: Wait"))).To(BeEmpty())
		state := claimState(ns, "waiter")
		eventually(state).Should(Equal("|e2e-wait-sel-a|False/Pending"))

		By("creating pools the selector and family do not match: the claim keeps waiting")
		mustCreateCIDR(poolYAML("e2e-wait-sel-other", "cidr: 10.247.3.16/28", "labels: {e2e-wait: other}"))
		mustCreateCIDR(poolYAML("e2e-wait-sel-v6", "cidr: 2001:db8:e47::/64", "labels: {e2e-wait: sel}"))
		stays(state, "|e2e-wait-sel-a|False/Pending", "bound from a pool its selector or family does not match")

		By("creating a matching pool with kubectl: the claim binds from it")
		mustCreateCIDR(poolYAML("e2e-wait-sel-b", "cidr: 10.247.3.8/29", "labels: {e2e-wait: sel}"))
		eventually(state).Should(Equal("10.247.3.8/32|e2e-wait-sel-b|True/Allocated"))
		eventually(allocations("e2e-wait-sel-b")).Should(ConsistOf("IPClaim/waiter 10.247.3.8/32"))
		for _, p := range []string{"e2e-wait-sel-other", "e2e-wait-sel-v6"} {
			Expect(allocations(p)()).To(BeEmpty())
		}
	})

	It("deletes a waiting claim whose ttlSeconds runs out, unbound, with an Expired event and nothing left in its pool", func() {
		const pool, ns = "e2e-wait-ttl", "e2e-wait-ttl"
		createNamespaces(ns)
		mustCreateCIDR(poolYAML(pool, "cidr: 10.247.4.0/32"))
		Expect(mustCreateCIDR(claimYAML(ns, "hold", "pool: "+pool))).To(Equal("10.247.4.0/32"))
		watch := watchLines(`{.type} {.object.metadata.name} {.object.spec.cidr}|{.object.status.cidr}{"\n"}`, "ipclaims", "-n", ns, "-l", "e2e-wait=ttl")

		out, err := kIn(claimYAML(ns, "waiter", "pool: "+pool+", ttlSeconds: 3, whenExhausted: Wait", "labels: {e2e-wait: ttl}"),
			"create", "-f", "-", "-o", `jsonpath={.metadata.uid} {.metadata.creationTimestamp} {.spec.cidr}`)
		Expect(err).NotTo(HaveOccurred(), out)
		fields := strings.Fields(out)
		Expect(fields).To(HaveLen(2), "kubectl create printed %q: a cidr, or no uid", out)
		uid := fields[0]
		created, err := time.Parse(time.RFC3339, fields[1])
		Expect(err).NotTo(HaveOccurred())
		expiry := created.Add(3 * time.Second).UTC().Format(time.RFC3339)

		By("deleting it, unbound, when the lifetime counted from its creation runs out")
		waitGone("ipclaim", "-n", ns, "waiter")
		eventually(watch).Should(ContainElement(HavePrefix("DELETED waiter ")))
		seen, err := watch()
		Expect(err).NotTo(HaveOccurred())
		Expect(seen).To(ContainElement("ADDED waiter |"))
		for _, l := range seen {
			Expect(l).To(MatchRegexp(`^\w+ waiter \|$`), "the watch saw the claim with a cidr: %v", seen)
		}
		eventually(func() (string, error) {
			return k("get", "events", "-n", ns, "--field-selector", "involvedObject.name=waiter,reason=Expired", "-o", "jsonpath={.items[*].message}")
		}).Should(Equal("ttlSeconds ran out at " + expiry + ": it was still waiting and is deleted unbound"))
		out, err = k("get", "events", "-n", ns, "--field-selector", "involvedObject.name=waiter,reason=Pending", "-o", "jsonpath={.items[*].type}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(HavePrefix("Normal"), "no Pending event: the claim never waited")

		By("finding nothing of it in the pool's ledger, allocations or release counts")
		ledger, err := jsonpathOf("{.spec.allocations}|{.spec.holds}", "ipledger", pool)()
		Expect(err).NotTo(HaveOccurred())
		Expect(ledger).To(MatchRegexp(`^10\.247\.4\.0/32 IPClaim/%s \d+ \S+\n?\|$`, ns))
		Expect(ledger).NotTo(ContainSubstring(uid))
		Expect(allocations(pool)()).To(ConsistOf("IPClaim/hold 10.247.4.0/32"))
		Expect(claimState(ns, "hold")()).To(Equal("10.247.4.0/32|" + pool + "|True/Allocated"))
		fams, err := scrapeMetrics()
		Expect(err).NotTo(HaveOccurred())
		Expect(fams.ofPool("kipam_prefixes_released_total", pool)).To(BeEmpty(), "a release counted for a claim that held nothing")
	})

	It("counts Pending creates as queued, not denied, on /metrics, and serves pool gauges that match the claims and the pools' status", func() {
		const full, limited, nsA, nsB = "e2e-wait-m-full", "e2e-wait-m-limited", "e2e-wait-m-a", "e2e-wait-m-b"
		createNamespaces(nsA, nsB)
		mustCreateCIDR(poolYAML(full, "cidr: 10.247.5.0/30"))
		mustCreateCIDR(poolYAML(limited, "cidr: 10.247.5.8/29, namespaceLimit: {claims: 1}"))
		for i := range 4 {
			mustCreateCIDR(claimYAML(nsA, fmt.Sprintf("full-%d", i), "pool: "+full))
		}
		Expect(mustCreateCIDR(claimYAML(nsA, "limited-0", "pool: "+limited))).To(Equal("10.247.5.8/32"))

		By("denying a Deny claim on each pool, and creating a Wait claim Pending on each, first in its namespace's queue")
		Expect(denied(claimYAML(nsA, "denied", "pool: "+full))).To(ContainSubstring("pool " + full + " is exhausted"))
		Expect(denied(claimYAML(nsA, "denied", "pool: "+limited))).To(ContainSubstring("namespace " + nsA + " holds 1 claims from pool " + limited))
		Expect(mustCreateCIDR(claimYAML(nsA, "waits-full", "pool: "+full+", whenExhausted: Wait"))).To(BeEmpty())
		Expect(mustCreateCIDR(claimYAML(nsB, "waits-full", "pool: "+full+", whenExhausted: Wait"))).To(BeEmpty())
		Expect(mustCreateCIDR(claimYAML(nsA, "waits-limited", "pool: "+limited+", whenExhausted: Wait"))).To(BeEmpty())
		for _, c := range [][2]string{{nsA, "waits-full"}, {nsB, "waits-full"}, {nsA, "waits-limited"}} {
			eventually(claimState(c[0], c[1])).Should(MatchRegexp(`^\|e2e-wait-m-\w+\|False/Pending$`))
			eventually(readyMessage(c[0], c[1])).Should(ContainSubstring("first in namespace %s's queue", c[0]))
		}
		counters := func() (map[string]map[string]float64, error) {
			fams, err := scrapeMetrics()
			out := map[string]map[string]float64{}
			for _, name := range []string{"kipam_claims_queued_total", "kipam_claims_denied_total", "kipam_prefixes_released_total"} {
				out[name] = map[string]float64{}
				for _, p := range []string{full, limited} {
					for labels, v := range fams.ofPool(name, p) {
						out[name][labels] = v
					}
				}
			}
			return out, err
		}
		want := map[string]map[string]float64{
			"kipam_claims_queued_total":     {"pool=" + full + ",reason=Exhausted": 2, "pool=" + limited + ",reason=NamespaceLimit": 1},
			"kipam_claims_denied_total":     {"pool=" + full + ",reason=Exhausted": 1, "pool=" + limited + ",reason=NamespaceLimit": 1},
			"kipam_prefixes_released_total": {},
		}
		Expect(counters()).To(Equal(want))
		eventually(poolGauges).Should(Succeed())

		By("releasing: the waiting claims bind, the gauges follow, and binds count as neither queued nor denied")
		out, err := k("delete", "ipclaim", "-n", nsA, "full-0", "full-1", "limited-0", "--wait=true", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred(), out)
		eventually(claimState(nsA, "waits-limited")).Should(Equal("10.247.5.8/32|" + limited + "|True/Allocated"))
		for _, ns := range []string{nsA, nsB} {
			eventually(claimState(ns, "waits-full")).Should(MatchRegexp(`^10\.247\.5\.[01]/32\|%s\|True/Allocated$`, full))
		}
		want["kipam_prefixes_released_total"] = map[string]float64{"cause=Deleted,pool=" + full: 2, "cause=Deleted,pool=" + limited: 1}
		Expect(counters()).To(Equal(want))
		eventually(poolGauges).Should(Succeed())
	})
})

// createNamespaces creates namespaces with kubectl, one at a time as
// kubectl create namespace takes them.
func createNamespaces(names ...string) {
	GinkgoHelper()
	for _, n := range names {
		out, err := k("create", "namespace", n)
		Expect(err).NotTo(HaveOccurred(), out)
	}
}

// claimState returns a func, for Eventually, that reads a claim as
// "spec.cidr|status.pool|Ready status/reason".
func claimState(ns, name string) func() (string, error) {
	return jsonpathOf("{.spec.cidr}|{.status.pool}|"+readyOf, "ipclaim", "-n", ns, name)
}

// readyMessage returns a func, for Eventually, that reads the message of a
// claim's Ready condition.
func readyMessage(ns, name string) func() (string, error) {
	return jsonpathOf(`{.status.conditions[?(@.type=="Ready")].message}`, "ipclaim", "-n", ns, name)
}

// stays expects f to return want for three seconds.
func stays(f func() (string, error), want, why string) {
	GinkgoHelper()
	Consistently(f).WithTimeout(3*time.Second).WithPolling(500*time.Millisecond).Should(Equal(want), why)
}

// watchLines runs kubectl get args --watch with jsonpath, from now until
// the spec ends, and returns a func, for Eventually, that lists the
// complete lines it printed, trimmed. One line per event: jsonpath reads
// .type and .object.
func watchLines(jsonpath string, args ...string) func() ([]string, error) {
	GinkgoHelper()
	file := filepath.Join(GinkgoT().TempDir(), "watch")
	f, err := os.Create(file)
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command(kubectl, append(append([]string{"get"}, args...), "--watch", "--output-watch-events", "-o", "jsonpath="+jsonpath)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(demoDir, "cluster", "kubeconfig"))
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = f.Close()
	})
	return func() ([]string, error) {
		data, err := os.ReadFile(file)
		var out []string
		for l := range strings.Lines(string(data)) {
			if strings.HasSuffix(l, "\n") { // not a line kubectl is still writing
				out = append(out, strings.TrimSpace(l))
			}
		}
		return out, err
	}
}

// bindOrder reads watch lines "TYPE namespace/name cidr" and returns the
// claims in the order they were first seen with a cidr, and every cidr
// each was seen with.
func bindOrder(lines []string) (order []string, cidrs map[string][]string) {
	cidrs = map[string][]string{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 {
			continue
		}
		name, cidr := f[1], f[2]
		if len(cidrs[name]) == 0 {
			order = append(order, name)
		}
		if !slices.Contains(cidrs[name], cidr) {
			cidrs[name] = append(cidrs[name], cidr)
		}
	}
	return order, cidrs
}

// prefixed returns each of names with prefix before it.
func prefixed(prefix string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = prefix + n
	}
	return out
}

// samples is a scrape of /metrics: each metric family's samples, keyed by
// their labels as "name=value,..." in name order.
type samples map[string]map[string]float64

// scrapeMetrics reads and parses the demo kipam's /metrics.
func scrapeMetrics() (samples, error) {
	text, err := scraper()()
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	out := samples{}
	for name, fam := range fams {
		out[name] = map[string]float64{}
		for _, m := range fam.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			slices.Sort(labels)
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[name][strings.Join(labels, ",")] = v
		}
	}
	return out, nil
}

// ofPool returns the samples of metric whose pool label is pool.
func (s samples) ofPool(metric, pool string) map[string]float64 {
	out := map[string]float64{}
	for labels, v := range s[metric] {
		if slices.Contains(strings.Split(labels, ","), "pool="+pool) {
			out[labels] = v
		}
	}
	return out
}

// poolGauges checks, for every pool named e2e-wait-*, that the per-pool
// gauges on /metrics equal the pool's status, and that the status's claims
// and allocated addresses equal a recount of the Ready claims whose
// status.pool is the pool (the suite's pools have no child pools); for a
// pool with a namespaceLimit, that kipam_pool_namespace_claims equals the
// recount per namespace.
func poolGauges(g Gomega) {
	var pools ipamv1alpha1.IPPoolList
	out, err := k("get", "ippools", "-o", "json")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(json.Unmarshal([]byte(out), &pools)).To(Succeed())
	var claims ipamv1alpha1.IPClaimList
	out, err = k("get", "ipclaims", "-A", "-o", "json")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(json.Unmarshal([]byte(out), &claims)).To(Succeed())
	fams, err := scrapeMetrics()
	g.Expect(err).NotTo(HaveOccurred())

	type held struct{ claims, addresses float64 }
	recount := map[string]*held{}
	byNamespace := map[string]map[string]float64{}
	for _, c := range claims.Items {
		pool := c.Status.Pool
		if !strings.HasPrefix(pool, "e2e-wait-") || !meta.IsStatusConditionTrue(c.Status.Conditions, ipamv1alpha1.ConditionReady) {
			continue
		}
		p, err := netip.ParsePrefix(c.Status.CIDR)
		g.Expect(err).NotTo(HaveOccurred(), "claim %s/%s is Ready with status.cidr %q", c.Namespace, c.Name, c.Status.CIDR)
		if recount[pool] == nil {
			recount[pool], byNamespace[pool] = &held{}, map[string]float64{}
		}
		recount[pool].claims++
		recount[pool].addresses += math.Ldexp(1, p.Addr().BitLen()-p.Bits())
		byNamespace[pool]["namespace="+c.Namespace+",pool="+pool]++
	}
	number := func(s string) float64 {
		f, err := strconv.ParseFloat(s, 64)
		g.Expect(err).NotTo(HaveOccurred(), "a pool status count %q", s)
		return f
	}
	checked := 0
	for _, p := range pools.Items {
		if !strings.HasPrefix(p.Name, "e2e-wait-") {
			continue
		}
		checked++
		s, rc := p.Status, recount[p.Name]
		if rc == nil {
			rc = &held{}
		}
		g.Expect(s.ChildPools).To(BeZero(), "pool %s has child pools: the recount does not count them", p.Name)
		g.Expect(float64(s.Claims)).To(Equal(rc.claims), "pool %s: status.claims against the Ready claims recounted", p.Name)
		g.Expect(number(s.Allocated)).To(Equal(rc.addresses), "pool %s: status.allocated against the Ready claims recounted", p.Name)
		only := "pool=" + p.Name
		for metric, want := range map[string]float64{
			"kipam_pool_claims":              float64(s.Claims),
			"kipam_pool_allocated_addresses": number(s.Allocated),
			"kipam_pool_available_addresses": number(s.Available),
			"kipam_pool_capacity_addresses":  number(s.Capacity),
			"kipam_pool_child_pools":         float64(s.ChildPools),
		} {
			g.Expect(fams.ofPool(metric, p.Name)).To(Equal(map[string]float64{only: want}), "%s of pool %s", metric, p.Name)
		}
		if p.Spec.NamespaceLimit != nil {
			want := byNamespace[p.Name]
			if want == nil {
				want = map[string]float64{}
			}
			g.Expect(fams.ofPool("kipam_pool_namespace_claims", p.Name)).To(Equal(want), "kipam_pool_namespace_claims of pool %s", p.Name)
		}
	}
	g.Expect(checked).NotTo(BeZero(), "no e2e-wait-* pool to check")
}
