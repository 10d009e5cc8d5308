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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/tools/clientcmd"
)

// The examples suite's address space: 10.238.0.0/16, one /24 per pool. Its
// pools and namespaces are named e2e-ex-*.

// exampleUser is who the example runs as: the ServiceAccount its
// rbac.yaml grants, so that the spec proves those grants enough.
const exampleUser = "system:serviceaccount:default:namespace-subnets"

// The label and annotations of examples/namespace-subnets, as a user
// reads them with kubectl.
const (
	subnetLabel   = "kipam.dev/subnet"
	cidrOf        = `{.metadata.annotations.kipam\.dev/subnet-cidr}`
	reasonOf      = `{.metadata.annotations.kipam\.dev/subnet-reason}`
	messageOf     = `{.metadata.annotations.kipam\.dev/subnet-message}`
	subnetStateOf = cidrOf + "|" + reasonOf
)

var _ = Describe("The namespace-subnets example", Ordered, func() {
	var binary, kubeconfig string

	BeforeAll(func() {
		dir, err := os.MkdirTemp("", "e2e-example-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, dir)
		binary = filepath.Join(dir, "namespace-subnets")
		out, err := run("go", "build", "-o", binary, "./examples/namespace-subnets")
		Expect(err).NotTo(HaveOccurred(), out)

		By("granting the example's ServiceAccount what its rbac.yaml says, and running it as that account")
		out, err = k("apply", "-f", "examples/namespace-subnets/rbac.yaml")
		Expect(err).NotTo(HaveOccurred(), out)
		cfg, err := clientcmd.LoadFromFile(filepath.Join(demoDir, "cluster", "kubeconfig"))
		Expect(err).NotTo(HaveOccurred())
		for _, user := range cfg.AuthInfos {
			user.Impersonate = exampleUser
		}
		kubeconfig = filepath.Join(dir, "kubeconfig")
		Expect(clientcmd.WriteToFile(*cfg, kubeconfig)).To(Succeed())
		// The authorizer sees new bindings a moment after they are made.
		eventually(func() (string, error) {
			out, _ := k("auth", "can-i", "create", "ipclaims.ipam.kipam.dev", "-n", "default", "--as", exampleUser) // exits 1 for "no"
			return strings.TrimSpace(out), nil
		}).Should(Equal("yes"))
	})

	// startExample runs the example with flags until the spec ends, as
	// its ServiceAccount, electing itself leader in namespace default.
	// Denials are retried at most 4 s apart.
	startExample := func(flags ...string) {
		GinkgoHelper()
		logFile := filepath.Join(filepath.Dir(binary), fmt.Sprintf("example-%d.log", time.Now().UnixNano()))
		out, err := os.Create(logFile)
		Expect(err).NotTo(HaveOccurred())
		cmd := exec.Command(binary, append([]string{"--kubeconfig", kubeconfig, "-leader-elect", "-leader-election-namespace", "default",
			"-retry-base", "500ms", "-retry-max", "4s"}, flags...)...)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() {
			// SIGTERM, so that it gives up its Lease for the next spec's.
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
			_ = out.Close()
			if CurrentSpecReport().Failed() {
				log, _ := os.ReadFile(logFile)
				AddReportEntry("the example's log", tail(string(log), 8000))
			}
		})
	}

	// subnetEvents returns a func, for Eventually, that lists the
	// messages of the events of reason on namespace ns.
	subnetEvents := func(ns, reason string) func() ([]string, error) {
		return lines(`{range .items[*]}{.message}{"\n"}{end}`, "events", "-A",
			"--field-selector", "involvedObject.kind=Namespace,involvedObject.name="+ns+",reason="+reason)
	}

	It("gives a labelled namespace an IPClaim it owns and records the CIDR on it; deleting the namespace releases it", func() {
		const pool, ns = "e2e-ex-open", "e2e-ex-a"
		mustCreateCIDR(poolYAML(pool, "cidr: 10.238.0.0/24, reuseGracePeriodSeconds: 0"))
		startExample()
		createNamespaces(ns)
		uid, err := jsonpathOf("{.metadata.uid}", "namespace", ns)()
		Expect(err).NotTo(HaveOccurred())
		out, err := k("label", "namespace", ns, subnetLabel+"="+pool)
		Expect(err).NotTo(HaveOccurred(), out)

		eventually(jsonpathOf(subnetStateOf, "namespace", ns)).Should(Equal("10.238.0.0/28|Allocated"))
		Expect(jsonpathOf(messageOf, "namespace", ns)()).To(Equal("IPClaim subnet holds 10.238.0.0/28 from pool " + pool))
		Expect(jsonpathOf("{.spec.pool} {.spec.prefixLength} {.spec.cidr} {.metadata.labels.app\\.kubernetes\\.io/managed-by}",
			"ipclaim", "-n", ns, "subnet")()).To(Equal(pool + " 28 10.238.0.0/28 namespace-subnets"))
		Expect(jsonpathOf(`{range .metadata.ownerReferences[*]}{.apiVersion} {.kind} {.name} {.uid} {.controller}{"\n"}{end}`,
			"ipclaim", "-n", ns, "subnet")()).To(Equal(fmt.Sprintf("v1 Namespace %s %s true\n", ns, uid)))
		eventually(claimState(ns, "subnet")).Should(Equal("10.238.0.0/28|" + pool + "|True/Allocated"))
		eventually(subnetEvents(ns, "Allocated")).Should(ConsistOf("IPClaim subnet holds 10.238.0.0/28 from pool " + pool))

		By("deleting the namespace: Kubernetes deletes the claim, kipam releases its prefix, the example does nothing")
		out, err = k("delete", "namespace", ns, "--wait=true", "--timeout=120s")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(mustCreateCIDR(claimYAML("default", "e2e-ex-after", "pool: "+pool+", cidr: 10.238.0.0/28"))).To(Equal("10.238.0.0/28"))
	})

	It("reports kipam's denials on the namespace, and retries until the pool has room or admits it", func() {
		const full, closed, nsFull, nsClosed = "e2e-ex-full", "e2e-ex-closed", "e2e-ex-b", "e2e-ex-c"
		mustCreateCIDR(poolYAML(full, "cidr: 10.238.1.0/28, reuseGracePeriodSeconds: 0"))
		mustCreateCIDR(poolYAML(closed, "cidr: 10.238.2.0/28, namespaceSelector: {matchLabels: {e2e-ex: admitted}}"))
		Expect(mustCreateCIDR(claimYAML("default", "e2e-ex-holder", "pool: "+full+", prefixLength: 28"))).To(Equal("10.238.1.0/28"))
		startExample()
		createNamespaces(nsFull, nsClosed)
		for ns, pool := range map[string]string{nsFull: full, nsClosed: closed} {
			out, err := k("label", "namespace", ns, subnetLabel+"="+pool)
			Expect(err).NotTo(HaveOccurred(), out)
		}

		By("recording an exhausted pool's 403 in kipam's words, with a Warning event, and creating no claim")
		eventually(jsonpathOf(subnetStateOf, "namespace", nsFull)).Should(Equal("|PoolExhausted"))
		Expect(jsonpathOf(messageOf, "namespace", nsFull)()).To(HavePrefix("pool " + full + " is exhausted: no free /28 left"))
		eventually(subnetEvents(nsFull, "PoolExhausted")).Should(ContainElement(HavePrefix("pool " + full + " is exhausted: no free /28 left")))
		Expect(k("get", "ipclaims", "-n", nsFull, "-o", "name")).To(BeEmpty())

		By("recording a pool closed to the namespace as kipam reports it: like one that does not exist")
		eventually(jsonpathOf(subnetStateOf, "namespace", nsClosed)).Should(Equal("|PoolNotOpen"))
		Expect(jsonpathOf(messageOf, "namespace", nsClosed)()).To(ContainSubstring(
			`spec.pool: Not found: "%s (no such pool is open to namespace %s)"`, closed, nsClosed))
		eventually(subnetEvents(nsClosed, "PoolNotOpen")).ShouldNot(BeEmpty())

		By("labelling the namespace as the pool admits: it gets its subnet")
		out, err := k("label", "namespace", nsClosed, "e2e-ex=admitted")
		Expect(err).NotTo(HaveOccurred(), out)
		eventually(jsonpathOf(subnetStateOf, "namespace", nsClosed)).Should(Equal("10.238.2.0/28|Allocated"))

		By("deleting the claim that fills the pool: a retry gets the namespace the space it freed")
		Expect(jsonpathOf(subnetStateOf, "namespace", nsFull)()).To(Equal("|PoolExhausted"))
		out, err = k("delete", "ipclaim", "-n", "default", "e2e-ex-holder", "--wait=true", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred(), out)
		eventually(jsonpathOf(subnetStateOf, "namespace", nsFull)).Should(Equal("10.238.1.0/28|Allocated"))
		Expect(jsonpathOf("{.spec.cidr}", "ipclaim", "-n", nsFull, "subnet")()).To(Equal("10.238.1.0/28"))
		eventually(subnetEvents(nsFull, "Allocated")).Should(ConsistOf("IPClaim subnet holds 10.238.1.0/28 from pool " + full))
	})

	It("with -wait, creates the claim waiting on a full pool and records the CIDR kipam binds when space frees", func() {
		const pool, ns = "e2e-ex-wait", "e2e-ex-w"
		mustCreateCIDR(poolYAML(pool, "cidr: 10.238.3.0/28, reuseGracePeriodSeconds: 0"))
		Expect(mustCreateCIDR(claimYAML("default", "e2e-ex-wait-holder", "pool: "+pool+", prefixLength: 28"))).To(Equal("10.238.3.0/28"))
		startExample("-wait")
		createNamespaces(ns)
		out, err := k("label", "namespace", ns, subnetLabel+"="+pool)
		Expect(err).NotTo(HaveOccurred(), out)

		eventually(claimState(ns, "subnet")).Should(Equal("|" + pool + "|False/Pending"))
		Expect(jsonpathOf("{.spec.whenExhausted}", "ipclaim", "-n", ns, "subnet")()).To(Equal("Wait"))
		eventually(jsonpathOf(subnetStateOf, "namespace", ns)).Should(Equal("|Pending"))
		eventually(jsonpathOf(messageOf, "namespace", ns)).Should(HavePrefix("IPClaim subnet: waiting for space in pool " + pool))

		By("deleting the claim that fills the pool: kipam binds the waiting claim, the example records its CIDR")
		out, err = k("delete", "ipclaim", "-n", "default", "e2e-ex-wait-holder", "--wait=true", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred(), out)
		eventually(jsonpathOf(subnetStateOf, "namespace", ns)).Should(Equal("10.238.3.0/28|Allocated"))
		Expect(claimState(ns, "subnet")()).To(HavePrefix("10.238.3.0/28|" + pool + "|"))
		eventually(subnetEvents(ns, "Allocated")).Should(ConsistOf("IPClaim subnet holds 10.238.3.0/28 from pool " + pool))
	})
})
