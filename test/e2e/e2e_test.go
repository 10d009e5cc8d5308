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

// Package e2e drives kipam the way a user does: kubectl against a local
// cluster that runs kipam as a process with its webhooks (hack/demo.sh).
package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var (
	root    string
	demoDir string
	kubectl string
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "kipam e2e suite")
}

// run runs a command in the repository and returns its combined output.
func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KIPAM_DEMO_DIR="+demoDir, "KUBECONFIG="+filepath.Join(demoDir, "cluster", "kubeconfig"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func k(args ...string) (string, error) { return run(kubectl, args...) }

// kIn runs kubectl with manifest on its standard input.
func kIn(manifest string, args ...string) (string, error) {
	cmd := exec.Command(kubectl, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(demoDir, "cluster", "kubeconfig"))
	cmd.Stdin = strings.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// createPool creates an IPPool of the given CIDR with kubectl.
func createPool(name, cidr string) {
	GinkgoHelper()
	out, err := kIn(fmt.Sprintf("apiVersion: ipam.kipam.dev/v1alpha1\nkind: IPPool\nmetadata: {name: %s}\nspec: {cidr: %s}\n", name, cidr), "create", "-f", "-")
	Expect(err).NotTo(HaveOccurred(), out)
}

var _ = BeforeSuite(func() {
	wd, err := os.Getwd()
	Expect(err).NotTo(HaveOccurred())
	root = filepath.Join(wd, "..", "..")
	demoDir = filepath.Join(root, ".local", "e2e")
	kubectl = filepath.Join(root, "bin", "k8s", "kubectl")
	// Registered first, so that a failing start leaves nothing running.
	DeferCleanup(func() {
		out, err := run("hack/demo.sh", "down")
		Expect(err).NotTo(HaveOccurred(), out)
	})
	out, err := run("hack/demo.sh", "up")
	Expect(err).NotTo(HaveOccurred(), out)
})

var _ = Describe("kipam with kubectl", func() {
	It("lists the samples in the kipam category", func() {
		out, err := k("get", "kipam", "-A")
		Expect(err).NotTo(HaveOccurred(), out)
		for _, want := range []string{"ippool.ipam.kipam.dev/tenant-a", "ipclaim.ipam.kipam.dev/web", "10.10.0.10/32", "ipallocation.ipam.kipam.dev/tenant-a.10-10-0-10-32"} {
			Expect(out).To(ContainSubstring(want))
		}
	})

	It("caps a namespace's share of a pool, as kubectl shows it", func() {
		out, err := kIn("apiVersion: ipam.kipam.dev/v1alpha1\nkind: IPPool\nmetadata: {name: e2e-shared}\n"+
			"spec: {cidr: 192.168.81.0/24, namespaceLimit: {claims: 2, addressSpace: 29}}\n", "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), out)
		out, err = k("explain", "ippool.spec.namespaceLimit")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(MatchRegexp(`(?m)^\s+addressSpace\s+<integer>`))
		claim := func(name, extra string) (string, error) {
			return kIn(fmt.Sprintf("apiVersion: ipam.kipam.dev/v1alpha1\nkind: IPClaim\nmetadata: {name: %s, namespace: default}\nspec: {pool: e2e-shared%s}\n", name, extra),
				"create", "-f", "-", "-o", "jsonpath={.spec.cidr}")
		}
		out, err = claim("e2e-share-a", ", prefixLength: 30")
		Expect(err).NotTo(HaveOccurred(), out)
		out, err = claim("e2e-share-b", ", prefixLength: 29")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("namespace default holds 4 addresses from pool e2e-shared and a /29 is 8 more, past its spec.namespaceLimit.addressSpace of a /29 (8)"))
		out, err = claim("e2e-share-c", "")
		Expect(err).NotTo(HaveOccurred(), out)
		out, err = claim("e2e-share-d", "")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("namespace default holds 2 claims from pool e2e-shared"))

		By("showing what the namespace holds on /metrics")
		Eventually(scraper()).WithTimeout(30 * time.Second).Should(SatisfyAll(
			ContainSubstring(`kipam_pool_namespace_claims{namespace="default",pool="e2e-shared"} 2`),
			ContainSubstring(`kipam_pool_namespace_addresses{namespace="default",pool="e2e-shared"} 5`),
			ContainSubstring(`kipam_pool_namespace_limit_addresses{pool="e2e-shared"} 8`),
		))
	})

	It("documents every claim field in kubectl explain", func() {
		out, err := k("explain", "ipclaim.spec")
		Expect(err).NotTo(HaveOccurred(), out)
		for _, f := range []string{"cidr", "ipFamily", "pool", "poolSelector", "prefixLength", "ttlSeconds", "whenExhausted"} {
			Expect(out).To(MatchRegexp(`(?m)^\s+%s\s+<`, f))
		}
	})

	It("returns the CIDR from kubectl create, refuses bad input and releases on delete", func() {
		createPool("e2e-small", "192.168.77.0/29")
		claim := func(name, extra string) string {
			return fmt.Sprintf("apiVersion: ipam.kipam.dev/v1alpha1\nkind: IPClaim\nmetadata: {name: %s, namespace: default}\nspec: {pool: e2e-small%s}\n", name, extra)
		}
		out, err := kIn(claim("e2e-a", ", prefixLength: 30"), "create", "-f", "-", "-o", "jsonpath={.spec.cidr}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(Equal("192.168.77.0/30"))

		out, err = kIn(claim("e2e-dry", ""), "create", "-f", "-", "--dry-run=server", "-o", "jsonpath={.spec.cidr}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(Equal("192.168.77.4/32"))

		out, err = kIn(claim("e2e-b", ", cidr: 192.168.77.2/31"), "create", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring(`spec.cidr: Invalid value: "192.168.77.2/31": is already allocated in pool e2e-small`))

		out, err = kIn(claim("e2e-c", ", prefixLength: 29"), "create", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("pool e2e-small is exhausted: no free /29 left (largest free prefix /30)"))

		By("creating from many kubectl processes at once: no overlaps")
		var wg sync.WaitGroup
		results := make([]string, 6)
		for i := range results {
			wg.Go(func() {
				out, err := kIn(claim(fmt.Sprintf("e2e-p%d", i), ""), "create", "-f", "-", "-o", "jsonpath={.spec.cidr}")
				if err == nil {
					results[i] = out
				}
			})
		}
		wg.Wait()
		var got []string
		for _, r := range results {
			if r != "" {
				got = append(got, r)
			}
		}
		Expect(got).To(ConsistOf("192.168.77.4/32", "192.168.77.5/32", "192.168.77.6/32", "192.168.77.7/32"))

		out, err = k("delete", "ipclaim", "e2e-a", "--wait=true", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred(), out)
		out, err = kIn(claim("e2e-d", ", prefixLength: 30"), "create", "-f", "-", "-o", "jsonpath={.spec.cidr}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(Equal("192.168.77.0/30"))
	})

	It("releases a namespace's claims when kubectl deletes the namespace", func() {
		createPool("e2e-ns", "192.168.78.0/31")
		claim := func(ns, name string) string {
			return fmt.Sprintf("apiVersion: ipam.kipam.dev/v1alpha1\nkind: IPClaim\nmetadata: {name: %s, namespace: %s}\nspec: {pool: e2e-ns}\n", name, ns)
		}
		out, err := k("create", "namespace", "e2e-doomed")
		Expect(err).NotTo(HaveOccurred(), out)
		var held []string
		for _, name := range []string{"e2e-n0", "e2e-n1"} {
			out, err = kIn(claim("e2e-doomed", name), "create", "-f", "-", "-o", "jsonpath={.spec.cidr}")
			Expect(err).NotTo(HaveOccurred(), out)
			held = append(held, out)
		}
		Expect(held).To(ConsistOf("192.168.78.0/32", "192.168.78.1/32"))
		out, err = kIn(claim("default", "e2e-n2"), "create", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("pool e2e-ns is exhausted"))

		By("deleting the namespace: kube-controller-manager deletes the claims, kipam releases them")
		out, err = k("delete", "namespace", "e2e-doomed", "--wait=true", "--timeout=120s")
		Expect(err).NotTo(HaveOccurred(), out)
		var again []string
		for _, name := range []string{"e2e-n2", "e2e-n3"} {
			out, err = kIn(claim("default", name), "create", "-f", "-", "-o", "jsonpath={.spec.cidr}")
			Expect(err).NotTo(HaveOccurred(), out)
			again = append(again, out)
		}
		Expect(again).To(ConsistOf(held))
	})

	It("keeps a Cluster API claim in its pool: kubectl cannot move it", func() {
		// The demo's machine claim, answered from pool machines; the
		// ValidatingAdmissionPolicy of config/policy, installed as an
		// install does, refuses the move.
		Eventually(func(g Gomega) {
			out, err := k("patch", "ipaddressclaim", "demo-control-plane-0", "--type", "merge", "-p", `{"spec":{"poolRef":{"name":"tenant-a"}}}`)
			g.Expect(err).To(HaveOccurred(), out)
			g.Expect(out).To(ContainSubstring("spec.poolRef: Forbidden: an IPAddressClaim of a kipam IPPool cannot change its pool"))
		}).WithTimeout(30 * time.Second).Should(Succeed())
		out, err := k("get", "ipaddressclaim", "demo-control-plane-0", "-o", "jsonpath={.spec.poolRef.name} {.status.addressRef.name}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(Equal("machines demo-control-plane-0"))
	})

	It("serves each pool's usage on /metrics", func() {
		createPool("e2e-metrics", "192.168.79.0/30")
		for i := range 4 {
			out, err := kIn(fmt.Sprintf("apiVersion: ipam.kipam.dev/v1alpha1\nkind: IPClaim\nmetadata: {name: e2e-m%d, namespace: default}\nspec: {pool: e2e-metrics}\n", i), "create", "-f", "-")
			Expect(err).NotTo(HaveOccurred(), out)
		}
		scrape := scraper()
		Eventually(scrape).WithTimeout(30 * time.Second).Should(SatisfyAll(
			ContainSubstring(`kipam_pool_info{cidr="192.168.79.0/30",parent="",pool="e2e-metrics"} 1`),
			ContainSubstring(`kipam_pool_capacity_addresses{pool="e2e-metrics"} 4`),
			ContainSubstring(`kipam_pool_allocated_addresses{pool="e2e-metrics"} 4`),
			ContainSubstring(`kipam_pool_available_addresses{pool="e2e-metrics"} 0`),
			ContainSubstring(`kipam_pool_claims{pool="e2e-metrics"} 4`),
			ContainSubstring(`kipam_pool_exhausted{pool="e2e-metrics"} 1`),
			Not(ContainSubstring(`kipam_pool_largest_free_prefix_length{pool="e2e-metrics"}`)),
		))

		By("releasing one: the next scrape shows it free again")
		out, err := k("delete", "ipclaim", "e2e-m3", "-n", "default", "--wait=true")
		Expect(err).NotTo(HaveOccurred(), out)
		Eventually(scrape).WithTimeout(30 * time.Second).Should(SatisfyAll(
			ContainSubstring(`kipam_pool_allocated_addresses{pool="e2e-metrics"} 3`),
			ContainSubstring(`kipam_pool_largest_free_prefix_length{pool="e2e-metrics"} 32`),
			ContainSubstring(`kipam_pool_exhausted{pool="e2e-metrics"} 0`),
		))
	})

	It("renders a Helm chart whose every object the API server accepts", func() {
		helm := helmBin()
		// render renders the chart as release kipam with the given flags.
		render := func(flags ...string) string {
			GinkgoHelper()
			out, err := run(helm, append([]string{"template", "kipam", "dist/chart", "--namespace", "kipam-system"}, flags...)...)
			Expect(err).NotTo(HaveOccurred(), out)
			return out
		}
		out := render("--include-crds")
		for _, kind := range []string{"kind: Deployment", "kind: MutatingWebhookConfiguration", "kind: ValidatingWebhookConfiguration",
			"kind: ClusterRole", "kind: CustomResourceDefinition", "caBundle: "} {
			Expect(out).To(ContainSubstring(kind))
		}
		ns, err := k("create", "namespace", "kipam-system")
		Expect(err).NotTo(HaveOccurred(), ns)
		applied, err := kIn(out, "apply", "--dry-run=server", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), applied)
		Expect(applied).To(ContainSubstring("deployment.apps/kipam created (server dry run)"))
		Expect(applied).To(ContainSubstring("mutatingwebhookconfiguration.admissionregistration.k8s.io/kipam-mutating created (server dry run)"))
		// /metrics is behind a TokenReview and a SubjectAccessReview: the
		// manager must be allowed to make them, and scrapers to read it.
		Expect(applied).To(ContainSubstring("clusterrolebinding.rbac.authorization.k8s.io/kipam-metrics-auth created (server dry run)"))
		Expect(applied).To(ContainSubstring("clusterrole.rbac.authorization.k8s.io/kipam-metrics-reader created (server dry run)"))
		Expect(applied).To(ContainSubstring("service/kipam-metrics created (server dry run)"))
		Expect(applied).To(ContainSubstring("poddisruptionbudget.policy/kipam created (server dry run)"))
		Expect(applied).To(ContainSubstring("validatingadmissionpolicy.admissionregistration.k8s.io/kipam-ipaddressclaim-poolref created (server dry run)"))
		Expect(applied).To(ContainSubstring("validatingadmissionpolicybinding.admissionregistration.k8s.io/kipam-ipaddressclaim-poolref created (server dry run)"))
		Expect(out).To(ContainSubstring("topologyKey: kubernetes.io/hostname"))
		Expect(applied).NotTo(ContainSubstring("servicemonitor"), "a ServiceMonitor by default")

		Expect(out).NotTo(ContainSubstring("--kube-api-"), "a client-side rate limit by default")

		By("passing client-side rate limits when asked")
		out = render("--set", "kubeAPIQPS=2.5")
		Expect(out).To(ContainSubstring("- --kube-api-qps=2.5\n"))
		Expect(out).NotTo(ContainSubstring("--kube-api-burst"))
		out = render("--set", "kubeAPIQPS=50", "--set", "kubeAPIBurst=100")
		Expect(out).To(ContainSubstring("- --kube-api-qps=50\n        - --kube-api-burst=100\n"))

		By("rendering the ServiceMonitor when asked")
		out = render("--set", "metrics.serviceMonitor.enabled=true")
		Expect(out).To(ContainSubstring("kind: ServiceMonitor"))
		Expect(out).To(ContainSubstring("app.kubernetes.io/component: metrics"))

		By("leaving the certificate to cert-manager when asked")
		out = render("--set", "webhook.certManager.enabled=true")
		Expect(out).To(ContainSubstring("kind: Certificate"))
		Expect(out).To(ContainSubstring("secretName: kipam-webhook-cert"))
		Expect(out).To(ContainSubstring("cert-manager.io/inject-ca-from: kipam-system/kipam-webhook"))
		Expect(out).NotTo(ContainSubstring("caBundle:"))
		Expect(out).NotTo(ContainSubstring("kind: Secret"))

		By("refusing values the schema does not allow, naming them")
		for set, want := range map[string]string{
			"replicas=3":                "additional properties 'replicas' not allowed",
			"webhook.timeoutSeconds=60": "/webhook/timeoutSeconds': maximum: got 60, want 30",
			"replicaCount=0":            "/replicaCount': minimum: got 0, want 1",
			"metrics.prometheusRule.poolUsagePercent=101": "/metrics/prometheusRule/poolUsagePercent': maximum: got 101, want 100",
			"kubeAPIQPS=-1":   "/kubeAPIQPS': minimum: got -1, want 0",
			"kubeAPIQPS=fast": "/kubeAPIQPS': 'fast' does not match pattern",
			"kubeAPIBurst=10": "kubeAPIBurst limits nothing without kubeAPIQPS",
		} {
			out, err := run(helm, "template", "kipam", "dist/chart", "--set", set)
			Expect(err).To(HaveOccurred(), set)
			Expect(out).To(ContainSubstring(want))
		}
		out = render("--set", "podLabels.team=net", "--set", "priorityClassName=system-cluster-critical")
		applied, err = kIn(out, "apply", "--dry-run=server", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), applied)
		Expect(out).To(ContainSubstring("team: net"))
		Expect(out).To(ContainSubstring("priorityClassName: system-cluster-critical"))
	})

	DescribeTable("renders an orphanGrace only above the webhook timeout plus the request timeout",
		// mustExceed is the bound the refusal names, empty when grace is accepted.
		func(grace string, webhookTimeout int, mustExceed string) {
			out, err := run(helmBin(), "template", "kipam", "dist/chart", "--set", "orphanGrace="+grace,
				"--set", fmt.Sprintf("webhook.timeoutSeconds=%d", webhookTimeout))
			if mustExceed == "" {
				Expect(err).NotTo(HaveOccurred(), out)
				Expect(out).To(ContainSubstring("- --orphan-grace=" + grace + "\n"))
				return
			}
			Expect(err).To(HaveOccurred(), out)
			Expect(out).To(ContainSubstring(fmt.Sprintf("orphanGrace %s is too short: it must exceed the webhook timeout (%ds) plus the API server's request timeout (60s), %s in all",
				grace, webhookTimeout, mustExceed)))
		},
		Entry("76s", "76s", 15, ""),
		Entry("2m", "2m", 15, ""),
		Entry("1m30s", "1m30s", 15, ""),
		Entry("0.5h", "0.5h", 15, ""),
		Entry("75001ms", "75001ms", 15, ""),
		Entry("75s, exactly the bound", "75s", 15, "75s"),
		Entry("75000ms, the bound in other units", "75000ms", 15, "75s"),
		Entry("1m15s, the bound in two terms", "1m15s", 15, "75s"),
		Entry("74999ms", "74999ms", 15, "75s"),
		Entry("60s", "60s", 15, "75s"),
		Entry("1m", "1m", 15, "75s"),
		Entry("80s with a 30s webhook timeout", "80s", 30, "90s"),
		Entry("91s with a 30s webhook timeout", "91s", 30, ""),
	)

	It("keeps its webhook certificate across helm upgrades", func() {
		// A real release on the local cluster (its pods never run: there is
		// no kubelet). While it is installed its webhooks, which have no
		// endpoints, would refuse claims, so it goes before the spec ends.
		helm := helmBin()
		const release = "kipam-upgrade"
		upgrade := func() {
			GinkgoHelper()
			out, err := run(helm, "upgrade", "--install", release, "dist/chart", "--namespace", release,
				"--create-namespace", "--skip-crds", "--set", "replicaCount=1")
			Expect(err).NotTo(HaveOccurred(), out)
		}
		DeferCleanup(func() {
			out, err := run(helm, "uninstall", release, "--namespace", release)
			Expect(err).NotTo(HaveOccurred(), out)
		})
		// The CA in the Secret the manager serves from, which the webhooks
		// must trust.
		ca := func() string {
			GinkgoHelper()
			secretCA, err := k("get", "secret", "-n", release, release+"-webhook-cert", "-o", `jsonpath={.data.ca\.crt}`)
			Expect(err).NotTo(HaveOccurred(), secretCA)
			for _, kind := range []string{"mutatingwebhookconfiguration", "validatingwebhookconfiguration"} {
				bundles, err := k("get", kind, release+"-"+strings.TrimSuffix(kind, "webhookconfiguration"), "-o", "jsonpath={.webhooks[*].clientConfig.caBundle}")
				Expect(err).NotTo(HaveOccurred(), bundles)
				for _, b := range strings.Fields(bundles) {
					Expect(b).To(Equal(secretCA), "%s trusts another CA than the one the manager serves with", kind)
				}
			}
			Expect(secretCA).NotTo(BeEmpty())
			return secretCA
		}

		upgrade()
		first := ca()

		By("granting its service account Leases in its own namespace only")
		sa := "system:serviceaccount:" + release + ":" + release
		for _, c := range []struct{ verb, resource, ns, want string }{
			{"update", "leases.coordination.k8s.io", release, "yes"},
			{"create", "leases.coordination.k8s.io", release, "yes"},
			{"update", "leases.coordination.k8s.io", "kube-system", "no"},
			{"patch", "ipclaims.ipam.kipam.dev", "default", "yes"},
			{"update", "ipclaims.ipam.kipam.dev", "default", "no"},
			{"create", "ipledgers.ipam.kipam.dev", "", "yes"},
		} {
			args := []string{"auth", "can-i", c.verb, c.resource, "--as", sa}
			if c.ns != "" {
				args = append(args, "-n", c.ns)
			}
			out, _ := k(args...) // exits 1 for "no"; a cluster-scoped resource comes with a warning first
			lines := strings.Split(strings.TrimSpace(out), "\n")
			Expect(lines[len(lines)-1]).To(Equal(c.want), "%s %s in %q: %s", c.verb, c.resource, c.ns, out)
		}
		By("upgrading the way docs/operations.md says: CRDs first")
		out, err := k("apply", "--server-side", "--force-conflicts", "-f", "dist/chart/crds")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("customresourcedefinition.apiextensions.k8s.io/ipclaims.ipam.kipam.dev serverside-applied"))
		upgrade()
		Expect(ca()).To(Equal(first), "an upgrade made a new CA: running pods would serve a certificate the webhooks no longer trust")

		By("making a new pair once the Secret is deleted")
		out, err = k("delete", "secret", "-n", release, release+"-webhook-cert")
		Expect(err).NotTo(HaveOccurred(), out)
		upgrade()
		Expect(ca()).NotTo(Equal(first))
	})
})

// scraper returns a func that reads the demo kipam's /metrics.
func scraper() func() (string, error) {
	GinkgoHelper()
	addr := clusterEnv()["METRICS_ADDR"]
	Expect(addr).NotTo(BeEmpty(), "no METRICS_ADDR in the demo's env")
	return func() (string, error) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return "", err
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		return string(body), err
	}
}

// helmBin returns the helm binary the Makefile built, or $HELM.
func helmBin() string {
	if helm := os.Getenv("HELM"); helm != "" {
		return helm
	}
	return filepath.Join(root, "bin", "helm")
}
