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
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/yaml"
)

// The hierarchy suite's address space: 10.230.0.0/16 to 10.233.0.0/16,
// 2001:db8:e2e::/48 and 2001:db8:e2f::/48, one range per spec.
var _ = Describe("Pool hierarchy with kubectl", func() {
	DescribeTable("carves four levels, each inside its parent, with the cidr in kubectl create's answer",
		// Each level is carved second in its parent, after a sibling of
		// the same size, so that a prefix carved from the wrong pool
		// shows. want is the carved level's first-fit cidr.
		func(name, top string, bits []int, want []string) {
			createPool(name, top)
			parent, parentCIDR := name, parseCIDR(top)
			for i, b := range bits {
				pad, level := fmt.Sprintf("%s-pad%d", name, i+1), fmt.Sprintf("%s-l%d", name, i+1)
				padCIDR := parseCIDR(mustCreateCIDR(poolYAML(pad, fmt.Sprintf("parentPool: %s, prefixLength: %d", parent, b))))
				out := mustCreateCIDR(poolYAML(level, fmt.Sprintf("parentPool: %s, prefixLength: %d", parent, b)))
				got := parseCIDR(out)
				Expect(got.Bits()).To(Equal(b), "kubectl create printed %s for a /%d", out, b)
				Expect(within(got, parentCIDR)).To(BeTrue(), "%s (%s) lies outside its parent %s (%s)", level, got, parent, parentCIDR)
				Expect(got.Overlaps(padCIDR)).To(BeFalse(), "%s (%s) overlaps its sibling %s (%s)", level, got, pad, padCIDR)
				Expect(out).To(Equal(want[i]), "not the first fit")
				Expect(jsonpathOf("{.spec.cidr}", "ippool", level)()).To(Equal(out), "the stored pool differs from kubectl create's answer")

				By(fmt.Sprintf("counting %s and %s in %s, each with an IPAllocation", pad, level, parent))
				size := new(big.Int).Lsh(big.NewInt(1), uint(got.Addr().BitLen()-b))
				eventually(jsonpathOf(counts, "ippool", parent)).
					Should(Equal(fmt.Sprintf("children=2 claims= allocated=%s", new(big.Int).Mul(size, big.NewInt(2)))))
				eventually(allocations(parent)).Should(ConsistOf("IPPool/"+pad+" "+padCIDR.String(), "IPPool/"+level+" "+out))
				eventually(jsonpathOf(readyOf, "ippool", level)).Should(Equal("True/PoolReady"))
				parent, parentCIDR = level, got
			}

			By("handing a claim on the deepest level an address inside it")
			out := mustCreateCIDR(claimYAML("default", name+"-host", "pool: "+parent))
			host := parseCIDR(out)
			Expect(host.Bits()).To(Equal(host.Addr().BitLen()))
			Expect(within(host, parentCIDR)).To(BeTrue(), "claim %s lies outside its pool %s (%s)", host, parent, parentCIDR)
			eventually(jsonpathOf(counts, "ippool", parent)).Should(Equal("children= claims=1 allocated=1"))
		},
		Entry("IPv4 /16 → /20 → /24 → /28", "e2e-tree4", "10.230.0.0/16", []int{20, 24, 28},
			[]string{"10.230.16.0/20", "10.230.17.0/24", "10.230.17.16/28"}),
		Entry("IPv6 /48 → /56 → /64 → /80", "e2e-tree6", "2001:db8:e2e::/48", []int{56, 64, 80},
			[]string{"2001:db8:e2e:100::/56", "2001:db8:e2e:101::/64", "2001:db8:e2e:101:1::/80"}),
	)

	It("takes an explicit child cidr that is free, and denies one naming what is in the way", func() {
		createPool("e2e-hx", "10.231.0.0/16")
		Expect(mustCreateCIDR(poolYAML("e2e-hx-a", "parentPool: e2e-hx, cidr: 10.231.4.0/24"))).To(Equal("10.231.4.0/24"))
		Expect(mustCreateCIDR(claimYAML("default", "e2e-hx-claim", "pool: e2e-hx, cidr: 10.231.9.0/24"))).To(Equal("10.231.9.0/24"))
		Expect(mustCreateCIDR(poolYAML("e2e-hx-a1", "parentPool: e2e-hx-a, cidr: 10.231.4.128/25"))).To(Equal("10.231.4.128/25"))

		By("denying children over a claim, over a sibling, outside the parent, of a missing parent or of a size the parent cannot hold")
		for manifest, want := range map[string]string{
			poolYAML("e2e-hx-b", "parentPool: e2e-hx, cidr: 10.231.8.0/22"):       `spec.cidr: Invalid value: "10.231.8.0/22": overlaps a claim in namespace default (10.231.9.0/24) in pool e2e-hx`,
			poolYAML("e2e-hx-b", "parentPool: e2e-hx, cidr: 10.231.4.0/25"):       `spec.cidr: Invalid value: "10.231.4.0/25": overlaps pool e2e-hx-a (10.231.4.0/24) in pool e2e-hx`,
			poolYAML("e2e-hx-b", "parentPool: e2e-hx-a, cidr: 10.231.4.192/26"):   `spec.cidr: Invalid value: "10.231.4.192/26": overlaps pool e2e-hx-a1 (10.231.4.128/25) in pool e2e-hx-a`,
			poolYAML("e2e-hx-b", "parentPool: e2e-hx-a, cidr: 10.231.5.0/26"):     `spec.cidr: Invalid value: "10.231.5.0/26": lies outside its parent pool e2e-hx-a (10.231.4.0/24)`,
			poolYAML("e2e-hx-b", "parentPool: e2e-hx-nosuch, prefixLength: 24"):   `spec.parentPool: Invalid value: "e2e-hx-nosuch": no IPPool of that name exists: create the parent first`,
			poolYAML("e2e-hx-b", "parentPool: e2e-hx, prefixLength: 12"):          `spec.prefixLength: Invalid value: 12: a /12 cannot be carved from pool e2e-hx (10.231.0.0/16): it must lie between /16 and /32`,
			claimYAML("default", "e2e-hx-b", "pool: e2e-hx, cidr: 10.231.4.7/32"): `spec.cidr: Invalid value: "10.231.4.7/32": is already allocated in pool e2e-hx`,
		} {
			Expect(denied(manifest)).To(ContainSubstring(want))
		}
		out, err := k("get", "ippool,ipclaim", "e2e-hx-b", "-n", "default", "--ignore-not-found", "-o", "name")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(BeEmpty(), "a denied create was stored")

		By("having committed nothing for the denied: the space around the claim is still free")
		Expect(mustCreateCIDR(poolYAML("e2e-hx-b", "parentPool: e2e-hx, cidr: 10.231.8.0/24"))).To(Equal("10.231.8.0/24"))
		Expect(mustCreateCIDR(poolYAML("e2e-hx-c", "parentPool: e2e-hx, cidr: 10.231.10.0/23"))).To(Equal("10.231.10.0/23"))
		eventually(jsonpathOf(counts, "ippool", "e2e-hx")).Should(Equal("children=3 claims=1 allocated=1280"))
		eventually(allocations("e2e-hx")).Should(ConsistOf("IPPool/e2e-hx-a 10.231.4.0/24", "IPPool/e2e-hx-b 10.231.8.0/24",
			"IPPool/e2e-hx-c 10.231.10.0/23", "IPClaim/e2e-hx-claim 10.231.9.0/24"))
	})

	It("keeps a parent Terminating and Draining while its child lives and serves, and deletes it after the child", func() {
		const parent, child = "e2e-hd", "e2e-hd-child"
		mustCreateCIDR(poolYAML(parent, "cidr: 10.232.0.0/16", "labels: {e2e: drain}"))
		Expect(mustCreateCIDR(poolYAML(child, "parentPool: e2e-hd, prefixLength: 24", "labels: {e2e: drain}"))).To(Equal("10.232.0.0/24"))
		Expect(mustCreateCIDR(claimYAML("default", "e2e-hd-c0", "pool: "+child))).To(Equal("10.232.0.0/32"))
		deleted := watchDeletions("ippools", "e2e=drain", parent, child)

		out, err := k("delete", "ippool", parent, "--wait=false")
		Expect(err).NotTo(HaveOccurred(), out)
		eventually(jsonpathOf(readyOf, "ippool", parent)).Should(Equal("False/Draining"))
		Expect(jsonpathOf("{.metadata.deletionTimestamp}", "ippool", parent)()).NotTo(BeEmpty())
		Expect(jsonpathOf(`{.status.conditions[?(@.type=="Ready")].message}`, "ippool", parent)()).
			To(ContainSubstring("1 prefixes are still allocated from it, 0 to claims and 1 to child pools"))

		By("serving claims from the child meanwhile")
		Expect(mustCreateCIDR(claimYAML("default", "e2e-hd-c1", "pool: "+child))).To(Equal("10.232.0.1/32"))
		eventually(jsonpathOf(readyOf, "ipclaim", "-n", "default", "e2e-hd-c1")).Should(Equal("True/Allocated"))
		Expect(jsonpathOf(readyOf, "ippool", child)()).To(Equal("True/PoolReady"))

		By("carving and claiming nothing more from the parent")
		Expect(denied(poolYAML("e2e-hd-late", "parentPool: e2e-hd, prefixLength: 24"))).
			To(ContainSubstring("spec.parentPool: Forbidden: pool e2e-hd is being deleted: nothing can be carved from it"))
		Expect(denied(claimYAML("default", "e2e-hd-late", "pool: e2e-hd"))).
			To(ContainSubstring("pool e2e-hd is being deleted: it takes no new claims"))

		By("deleting the child: it drains its claims, and the parent waits for it")
		out, err = k("delete", "ippool", child, "--wait=false")
		Expect(err).NotTo(HaveOccurred(), out)
		eventually(jsonpathOf(readyOf, "ippool", child)).Should(Equal("False/Draining"))
		Expect(jsonpathOf(`{.status.conditions[?(@.type=="Ready")].message}`, "ippool", child)()).
			To(ContainSubstring("2 prefixes are still allocated from it, 2 to claims and 0 to child pools"))
		Expect(jsonpathOf(readyOf, "ippool", parent)()).To(Equal("False/Draining"))
		out, err = k("delete", "ipclaim", "-n", "default", "e2e-hd-c0", "e2e-hd-c1", "--wait=true", "--timeout=120s")
		Expect(err).NotTo(HaveOccurred(), out)
		waitGone("ippool", "-l", "e2e=drain")
		eventually(deleted).Should(Equal([]string{child, parent}), "the order the watch saw the pools deleted in")
	})

	It("comes back from kubectl get -o yaml, stripped of what the server set, applied until nothing fails: the same hierarchy, the same CIDRs", func() {
		// Names sort children before their parents, as kubectl lists
		// them, so a single kubectl apply cannot restore the tree. The
		// pools have no reuseGracePeriodSeconds: a deleted claim's prefix
		// would be held that long, and its restore refused.
		const ns, label = "e2e-restore", "e2e=restore"
		out, err := k("create", "namespace", ns)
		Expect(err).NotTo(HaveOccurred(), out)
		meta := "labels: {e2e: restore}"
		for _, p := range [][2]string{
			{"e2e-rs-top", "cidr: 10.233.0.0/16"},
			{"e2e-rs-mid", "parentPool: e2e-rs-top, prefixLength: 20"},
			{"e2e-rs-leaf", "parentPool: e2e-rs-mid, prefixLength: 24"},
			{"e2e-rs-edge", "parentPool: e2e-rs-top, cidr: 10.233.128.0/20"},
			{"e2e-rs6-top", "cidr: 2001:db8:e2f::/48"},
			{"e2e-rs6-a", "parentPool: e2e-rs6-top, prefixLength: 64"},
		} {
			mustCreateCIDR(poolYAML(p[0], p[1], meta))
		}
		for _, c := range [][2]string{
			{"leaf-0", "pool: e2e-rs-leaf"},
			{"leaf-1", "pool: e2e-rs-leaf"},
			{"mid-net", "pool: e2e-rs-mid, prefixLength: 26"},
			{"top-fixed", "pool: e2e-rs-top, cidr: 10.233.200.0/24"},
			{"v6-host", "pool: e2e-rs6-a"},
			{"v6-net", "pool: e2e-rs6-top, prefixLength: 120"},
		} {
			mustCreateCIDR(claimYAML(ns, c[0], c[1], meta))
		}
		// What the restore must bring back: each pool's place and what it
		// holds, each claim's prefix, and the IPAllocations recording them.
		wantPools := []string{
			"e2e-rs-edge cidr=10.233.128.0/20 parent=e2e-rs-top children= claims=",
			"e2e-rs-leaf cidr=10.233.0.0/24 parent=e2e-rs-mid children= claims=2",
			"e2e-rs-mid cidr=10.233.0.0/20 parent=e2e-rs-top children=1 claims=1",
			"e2e-rs-top cidr=10.233.0.0/16 parent= children=2 claims=1",
			"e2e-rs6-a cidr=2001:db8:e2f::/64 parent=e2e-rs6-top children= claims=1",
			"e2e-rs6-top cidr=2001:db8:e2f::/48 parent= children=1 claims=1",
		}
		pools := lines(`{range .items[*]}{.metadata.name} cidr={.spec.cidr} parent={.spec.parentPool} children={.status.childPools} claims={.status.claims}{"\n"}{end}`,
			"ippools", "-l", label)
		claims := lines(`{range .items[*]}{.metadata.name} {.spec.pool} {.spec.cidr} {.spec.prefixLength}{"\n"}{end}`, "ipclaims", "-n", ns)
		ready := lines(`{range .items[*]}{.metadata.name} `+readyOf+`{"\n"}{end}`, "ipclaims", "-n", ns)
		allReady := []string{"leaf-0 True/Allocated", "leaf-1 True/Allocated", "mid-net True/Allocated",
			"top-fixed True/Allocated", "v6-host True/Allocated", "v6-net True/Allocated"}
		treeAllocations := func() ([]string, error) {
			var all []string
			for _, p := range []string{"e2e-rs-top", "e2e-rs-mid", "e2e-rs-leaf", "e2e-rs-edge", "e2e-rs6-top", "e2e-rs6-a"} {
				a, err := allocations(p)()
				if err != nil {
					return nil, err
				}
				all = append(all, a...)
			}
			return all, nil
		}
		eventually(ready).Should(Equal(allReady))
		eventually(pools).Should(Equal(wantPools))
		wantClaims, err := claims()
		Expect(err).NotTo(HaveOccurred())
		Expect(wantClaims).To(ContainElements("mid-net e2e-rs-mid 10.233.1.0/26 26", "v6-net e2e-rs6-top 2001:db8:e2f:1::/120 120"))
		var wantAllocations []string
		eventually(func() ([]string, error) {
			var err error
			wantAllocations, err = treeAllocations()
			return wantAllocations, err
		}).Should(HaveLen(10))

		By("exporting the pools and the claims with kubectl")
		backup, err := k("get", "ippools,ipclaims", "-n", ns, "-l", label, "-o", "yaml")
		Expect(err).NotTo(HaveOccurred(), backup)
		restore := stripServerFields(backup)
		Expect(restore).NotTo(ContainSubstring("uid:"))
		Expect(restore).NotTo(ContainSubstring("ipam.kipam.dev/entry"))
		Expect(restore).To(ContainSubstring("cidr: 10.233.0.0/24"), "the leaf lost its cidr")

		By("deleting them all and waiting until they are gone")
		out, err = k("delete", "ippools,ipclaims", "-n", ns, "-l", label, "--wait=true", "--timeout=180s")
		Expect(err).NotTo(HaveOccurred(), out)
		waitGone("ippools", "-l", label)
		waitGone("ipclaims", "-n", ns, "-l", label)

		By("applying the backup again while a pass creates something, as docs/operations.md says")
		passes := 0
		for {
			passes++
			out, err := kIn(restore, "apply", "-f", "-")
			if passes == 1 {
				Expect(out).To(ContainSubstring("no IPPool of that name exists: create the parent first"),
					"the first pass met no child before its parent: the spec restores nothing in the wrong order")
			}
			if err == nil {
				break
			}
			Expect(out).To(MatchRegexp(`(?m) created$`), "pass %d created nothing, so what failed fails again:\n%s", passes, out)
			Expect(passes).To(BeNumerically("<", 3), "a tree three levels deep takes three passes:\n%s", out)
		}
		Expect(passes).To(Equal(3))

		By("finding the same hierarchy, the same CIDRs and the same allocations")
		eventually(ready).Should(Equal(allReady))
		eventually(pools).Should(Equal(wantPools))
		Expect(claims()).To(Equal(wantClaims))
		eventually(treeAllocations).Should(ConsistOf(wantAllocations))

		By("carving and claiming around what came back")
		Expect(mustCreateCIDR(poolYAML("e2e-rs-mid2", "parentPool: e2e-rs-mid, prefixLength: 24", meta))).To(Equal("10.233.2.0/24"))
		Expect(mustCreateCIDR(claimYAML(ns, "leaf-2", "pool: e2e-rs-leaf", meta))).To(Equal("10.233.0.2/32"))
	})
})

// counts is the jsonpath of what a pool holds. A count of 0 is omitted
// from the status, so it reads as nothing.
const counts = "children={.status.childPools} claims={.status.claims} allocated={.status.allocated}"

// allocations returns a func, for Eventually, that lists the IPAllocations
// of pool as "Kind/name cidr" of their holders.
func allocations(pool string) func() ([]string, error) {
	return func() ([]string, error) {
		return lines(`{range .items[*]}{.spec.claimRef.kind}/{.spec.claimRef.name} {.spec.cidr}{"\n"}{end}`,
			"ipallocations", "-l", "ipam.kipam.dev/pool="+pool)()
	}
}

// stripServerFields removes from a kubectl get -o yaml list what the API
// server and kipam set, so that kubectl apply can create its objects
// again: each keeps its name, labels, annotations and spec (a claim's and
// a carved pool's spec.cidr included).
func stripServerFields(list string) string {
	GinkgoHelper()
	var l struct {
		APIVersion string           `json:"apiVersion"`
		Kind       string           `json:"kind"`
		Items      []map[string]any `json:"items"`
	}
	Expect(yaml.Unmarshal([]byte(list), &l)).To(Succeed())
	Expect(l.Items).NotTo(BeEmpty())
	for _, obj := range l.Items {
		delete(obj, "status")
		meta, ok := obj["metadata"].(map[string]any)
		Expect(ok).To(BeTrue(), "an item without metadata: %v", obj)
		for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "finalizers"} {
			delete(meta, f)
		}
		if a, ok := meta["annotations"].(map[string]any); ok {
			delete(a, "ipam.kipam.dev/entry")
			if len(a) == 0 {
				delete(meta, "annotations")
			}
		}
	}
	out, err := yaml.Marshal(l)
	Expect(err).NotTo(HaveOccurred())
	return string(out)
}

// watchDeletions watches resource (those with label) from now until the
// spec ends, and returns a func, for Eventually, listing the names it saw
// deleted, in order. It returns once the watch has listed the objects
// named in present, so that no deletion after it is missed.
func watchDeletions(resource, label string, present ...string) func() ([]string, error) {
	GinkgoHelper()
	file := filepath.Join(GinkgoT().TempDir(), "watch")
	f, err := os.Create(file)
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command(kubectl, "get", resource, "-l", label, "--watch", "--output-watch-events",
		"-o", `jsonpath={.type} {.object.metadata.name}{"\n"}`)
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
	events := func(kind string) ([]string, error) {
		data, err := os.ReadFile(file)
		var names []string
		for l := range strings.Lines(string(data)) {
			if name, ok := strings.CutPrefix(strings.TrimSpace(l), kind+" "); ok {
				names = append(names, name)
			}
		}
		return names, err
	}
	eventually(func() ([]string, error) { return events("ADDED") }).Should(ContainElements(present))
	return func() ([]string, error) { return events("DELETED") }
}
