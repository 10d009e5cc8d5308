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
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("kipam's persona roles, asked with kubectl --as", func() {
	It("lets each persona do its part only, and a tenant claim only from pools open to its namespace", func() {
		const (
			tenant   = "e2e-tenant"
			viewer   = "e2e-viewer"
			platform = "e2e-platform"
			home     = "e2e-tenant-home"
			away     = "e2e-tenant-away"
		)
		By("installing the persona roles as the chart renders them")
		personas, err := run(helmBin(), "template", "kipam", "dist/chart", "--namespace", "kipam-system", "--show-only", "templates/personas.yaml")
		Expect(err).NotTo(HaveOccurred(), personas)
		out, err := kIn(personas, "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), out)
		DeferCleanup(func() {
			out, err := kIn(personas, "delete", "-f", "-")
			Expect(err).NotTo(HaveOccurred(), out)
		})
		out, err = kIn(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n---\n"+
			"apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {e2e-tenancy: away}}\n", home, away), "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), out)
		DeferCleanup(func() {
			out, err := k("delete", "namespace", home, away, "--wait=false")
			Expect(err).NotTo(HaveOccurred(), out)
		})
		createPool("e2e-open", "192.168.92.0/29")
		out, err = kIn("apiVersion: ipam.kipam.dev/v1alpha1\nkind: IPPool\nmetadata: {name: e2e-closed}\n"+
			"spec: {cidr: 192.168.93.0/29, namespaceSelector: {matchLabels: {e2e-tenancy: away}}}\n", "create", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), out)

		By("binding the tenant in its namespace, the viewer and the platform admin cluster-wide")
		out, err = k("create", "rolebinding", tenant, "--clusterrole=kipam-ipclaim-editor-role", "--user="+tenant, "-n", home)
		Expect(err).NotTo(HaveOccurred(), out)
		for user, role := range map[string]string{viewer: "kipam-viewer-role", platform: "kipam-ippool-admin-role"} {
			out, err = k("create", "clusterrolebinding", user, "--clusterrole="+role, "--user="+user)
			Expect(err).NotTo(HaveOccurred(), out)
			DeferCleanup(func() {
				out, err := k("delete", "clusterrolebinding", user)
				Expect(err).NotTo(HaveOccurred(), out)
			})
		}

		// where is -n NAMESPACE, -A, or nothing for a cluster-scoped
		// resource; status asks about the status subresource.
		type ask struct {
			user, verb, resource string
			where                []string
			status               bool
			want                 string
		}
		in := func(ns string) []string { return []string{"-n", ns} }
		everywhere := []string{"-A"}
		asks := []ask{
			{tenant, "create", "ipclaims", in(home), false, "yes"},
			{tenant, "list", "ipclaims", in(home), false, "yes"},
			{tenant, "update", "ipclaims", in(home), false, "yes"},
			{tenant, "delete", "ipclaims", in(home), false, "yes"},
			{tenant, "get", "ipclaims", in(home), true, "yes"},
			{tenant, "update", "ipclaims", in(home), true, "no"},
			{tenant, "patch", "ipclaims", in(home), true, "no"},
			{tenant, "create", "ipclaims", in(away), false, "no"},
			{tenant, "list", "ipclaims", everywhere, false, "no"},
			{tenant, "get", "ippools", nil, false, "no"},
			{tenant, "create", "ippools", nil, false, "no"},
			{tenant, "get", "ipallocations", nil, false, "no"},
			{tenant, "create", "ipallocations", nil, false, "no"},
			{tenant, "delete", "ipallocations", nil, false, "no"},
			{tenant, "update", "ipledgers", nil, false, "no"},

			{viewer, "list", "ippools", nil, false, "yes"},
			{viewer, "get", "ippools", nil, true, "yes"},
			{viewer, "list", "ipclaims", everywhere, false, "yes"},
			{viewer, "list", "ipallocations", nil, false, "yes"},
			{viewer, "list", "ipledgers", nil, false, "yes"},
			{viewer, "create", "ipclaims", in(home), false, "no"},
			{viewer, "update", "ipclaims", in(home), true, "no"},
			{viewer, "update", "ippools", nil, false, "no"},
			{viewer, "delete", "ipallocations", nil, false, "no"},
			{viewer, "update", "ipledgers", nil, false, "no"},

			{platform, "create", "ippools", nil, false, "yes"},
			{platform, "patch", "ippools", nil, false, "yes"},
			{platform, "delete", "ippools", nil, false, "yes"},
			{platform, "list", "ipclaims", everywhere, false, "yes"},
			{platform, "get", "ipledgers", nil, false, "yes"},
			{platform, "update", "ippools", nil, true, "no"},
			{platform, "create", "ipclaims", in(home), false, "no"},
			{platform, "create", "ipallocations", nil, false, "no"},
			{platform, "delete", "ipallocations", nil, false, "no"},
			{platform, "update", "ipallocations", nil, true, "no"},
			{platform, "update", "ipledgers", nil, false, "no"},

			// kubectl reads ipclaims/status as the claim named status,
			// which the tenant may update: the subresource is asked
			// with --subresource, as above.
			{tenant, "update", "ipclaims/status", in(home), false, "yes"},
		}
		// The authorizer sees new bindings a moment after they are made.
		Eventually(func(g Gomega) {
			for _, a := range asks {
				args := append([]string{"auth", "can-i", a.verb, a.resource, "--as", a.user}, a.where...)
				if a.status {
					args = append(args, "--subresource=status")
				}
				out, _ := k(args...) // exits 1 for "no"
				lines := strings.Split(strings.TrimSpace(out), "\n")
				g.Expect(lines[len(lines)-1]).To(Equal(a.want), "kubectl %s: %s", strings.Join(args, " "), out)
			}
		}).WithTimeout(30 * time.Second).Should(Succeed())

		By("creating, reading and deleting a claim as the tenant")
		claim := func(ns, name, pool string) string {
			return fmt.Sprintf("apiVersion: ipam.kipam.dev/v1alpha1\nkind: IPClaim\nmetadata: {name: %s, namespace: %s}\nspec: {pool: %s}\n", name, ns, pool)
		}
		out, err = kIn(claim(home, "e2e-mine", "e2e-open"), "create", "-f", "-", "--as", tenant, "-o", "jsonpath={.spec.cidr}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(Equal("192.168.92.0/32"))
		out, err = k("get", "ipclaim", "e2e-mine", "-n", home, "--as", tenant, "-o", "jsonpath={.spec.cidr}")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(Equal("192.168.92.0/32"))

		By("denying the tenant a pool closed to its namespace, as if it did not exist")
		out, err = kIn(claim(home, "e2e-theirs", "e2e-closed"), "create", "-f", "-", "--as", tenant)
		Expect(err).To(HaveOccurred(), out)
		Expect(out).To(ContainSubstring(`spec.pool: Not found: "e2e-closed (no such pool is open to namespace %s)"`, home))
		Expect(out).NotTo(ContainSubstring("192.168.93."))

		By("denying the tenant another namespace")
		out, err = kIn(claim(away, "e2e-elsewhere", "e2e-closed"), "create", "-f", "-", "--as", tenant)
		Expect(err).To(HaveOccurred(), out)
		Expect(out).To(ContainSubstring(`User "%s" cannot create resource "ipclaims" in API group "ipam.kipam.dev" in the namespace "%s"`, tenant, away))

		out, err = k("delete", "ipclaim", "e2e-mine", "-n", home, "--as", tenant, "--wait=true", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred(), out)
	})
})
