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
	"net/netip"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Helpers shared by the hierarchy, overlap, host address and exhaustion
// suites. Manifests are written as YAML flow mappings: meta and spec are
// their contents, e.g. "cidr: 10.0.0.0/24, excludeFirst: 1".

// poolYAML is the manifest of an IPPool; meta follows the name, e.g.
// "labels: {e2e: restore}".
func poolYAML(name, spec string, meta ...string) string {
	return fmt.Sprintf("apiVersion: ipam.kipam.dev/v1alpha1\nkind: IPPool\nmetadata: {name: %s}\nspec: {%s}\n",
		strings.Join(append([]string{name}, meta...), ", "), spec)
}

// claimYAML is the manifest of an IPClaim in namespace ns; meta as for
// poolYAML.
func claimYAML(ns, name, spec string, meta ...string) string {
	return fmt.Sprintf("apiVersion: ipam.kipam.dev/v1alpha1\nkind: IPClaim\nmetadata: {name: %s, namespace: %s}\nspec: {%s}\n",
		strings.Join(append([]string{name}, meta...), ", "), ns, spec)
}

// createCIDR creates manifest with kubectl and returns what kubectl
// printed: the created object's spec.cidr, or the error.
func createCIDR(manifest string) (string, error) {
	return kIn(manifest, "create", "-f", "-", "-o", "jsonpath={.spec.cidr}")
}

// mustCreateCIDR is createCIDR that fails the spec on an error.
func mustCreateCIDR(manifest string) string {
	GinkgoHelper()
	out, err := createCIDR(manifest)
	Expect(err).NotTo(HaveOccurred(), out)
	return out
}

// denied creates manifest with kubectl, expects the API server to refuse
// it and returns kubectl's output.
func denied(manifest string) string {
	GinkgoHelper()
	out, err := createCIDR(manifest)
	Expect(err).To(HaveOccurred(), "kubectl create succeeded: %s\n%s", out, manifest)
	return out
}

// jsonpathOf returns a func, for Eventually, that reads jsonpath from the
// object kubectl get args names.
func jsonpathOf(jsonpath string, args ...string) func() (string, error) {
	return func() (string, error) {
		out, err := k(append([]string{"get", "-o", "jsonpath=" + jsonpath}, args...)...)
		if err != nil {
			return "", fmt.Errorf("kubectl get %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return out, nil
	}
}

// lines is jsonpathOf for a jsonpath that prints one line per item: it
// returns the lines, none when kubectl printed nothing.
func lines(jsonpath string, args ...string) func() ([]string, error) {
	return func() ([]string, error) {
		out, err := jsonpathOf(jsonpath, args...)()
		if out == "" {
			return nil, err
		}
		return strings.Split(strings.TrimSuffix(out, "\n"), "\n"), err
	}
}

// readyOf is the jsonpath of an object's Ready condition as
// "status/reason".
const readyOf = `{.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="Ready")].reason}`

// eventually polls f for up to two minutes, at a pace that leaves the two
// cores to the cluster: every poll starts a kubectl.
func eventually(f any) AsyncAssertion {
	return Eventually(f).WithTimeout(2 * time.Minute).WithPolling(500 * time.Millisecond)
}

// waitGone waits until kubectl get args finds nothing, the objects deleted.
func waitGone(args ...string) {
	GinkgoHelper()
	eventually(func() (string, error) {
		return k(append([]string{"get", "-o", "name", "--ignore-not-found"}, args...)...)
	}).Should(BeEmpty(), "kubectl get %s", strings.Join(args, " "))
}

// parseCIDR parses s, a CIDR that kipam returned, and expects it canonical.
func parseCIDR(s string) netip.Prefix {
	GinkgoHelper()
	p, err := netip.ParsePrefix(s)
	Expect(err).NotTo(HaveOccurred(), "kipam returned %q", s)
	Expect(p.Masked()).To(Equal(p), "kipam returned a non-canonical %s", s)
	return p
}

// within reports whether child lies inside parent.
func within(child, parent netip.Prefix) bool {
	return child.Bits() >= parent.Bits() && parent.Contains(child.Addr())
}
