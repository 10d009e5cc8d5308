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
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/yaml"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/testenv"
)

// The persona roles' files in config/rbac. The specs load them from there,
// so that they check what ships; hack/chart.sh copies the same files into
// the Helm chart.
const (
	adminRoleFile       = "ippool_admin_role.yaml"
	tenantRoleFile      = "ipclaim_editor_role.yaml"
	viewerRoleFile      = "viewer_role.yaml"
	claimViewerRoleFile = "ipclaim_viewer_role.yaml"
	allocationRoleFile  = "ipallocation_viewer_role.yaml"
)

// clusterWide is the namespace of a request for a cluster-scoped resource,
// or across all namespaces.
const clusterWide = ""

var kipamGroup = ipamv1alpha1.GroupVersion.Group

// request is one thing a user may ask of the API server: verb on a kipam
// resource (with its subresource after a slash) in namespace, or
// cluster-wide: a cluster-scoped resource, or all namespaces.
type request struct{ verb, resource, namespace string }

func (r request) String() string {
	if r.namespace == clusterWide {
		return fmt.Sprintf("%s %s cluster-wide", r.verb, r.resource)
	}
	return fmt.Sprintf("%s %s in %s", r.verb, r.resource, r.namespace)
}

var (
	readVerbs = []string{"get", "list", "watch"}
	// everyVerb is every verb the API server authorizes on a kipam
	// resource.
	everyVerb = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
	// Every kipam resource and subresource, by scope. IPLedgers have no
	// status subresource: asking about one still tells whether a role
	// names it.
	clusterResources = []string{
		"ippools", "ippools/status", "ippools/finalizers",
		"ipallocations", "ipallocations/status", "ipallocations/finalizers",
		"ipledgers", "ipledgers/status", "ipledgers/finalizers",
	}
	namespacedResources = []string{"ipclaims", "ipclaims/status", "ipclaims/finalizers"}
)

// grants is every verb on every resource in every namespace given.
func grants(verbs, resources []string, namespaces ...string) []request {
	var out []request
	for _, ns := range namespaces {
		for _, res := range resources {
			for _, verb := range verbs {
				out = append(out, request{verb, res, ns})
			}
		}
	}
	return out
}

// everyRequest is the matrix a persona is held to: every verb on every
// kipam resource and subresource, the namespaced ones in each namespace
// given and across all of them.
func everyRequest(namespaces ...string) []request {
	return append(grants(everyVerb, clusterResources, clusterWide),
		grants(everyVerb, namespacedResources, append(slices.Clone(namespaces), clusterWide)...)...)
}

// viewerGrants is what reading every kipam kind is, with the claims of
// namespaces.
func viewerGrants(namespaces ...string) []request {
	all := append(slices.Clone(namespaces), clusterWide)
	return slices.Concat(
		grants(readVerbs, []string{"ippools", "ipallocations", "ipledgers"}, clusterWide),
		grants([]string{"get"}, []string{"ippools/status", "ipallocations/status"}, clusterWide),
		grants(readVerbs, []string{"ipclaims"}, all...),
		grants([]string{"get"}, []string{"ipclaims/status"}, all...),
	)
}

// shippedRole creates, or replaces, the ClusterRole config/rbac/file ships
// and returns its name.
func shippedRole(file string) string {
	GinkgoHelper()
	raw, err := os.ReadFile(filepath.Join(testenv.Root, "config", "rbac", file))
	Expect(err).NotTo(HaveOccurred())
	var want rbacv1.ClusterRole
	Expect(yaml.UnmarshalStrict(raw, &want)).To(Succeed(), file)
	Expect(want.Kind).To(Equal("ClusterRole"), file)
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: want.Name}}
	_, err = controllerutil.CreateOrUpdate(ctx, k8sClient, role, func() error {
		role.Labels, role.Rules, role.AggregationRule = want.Labels, want.Rules, want.AggregationRule
		return nil
	})
	Expect(err).NotTo(HaveOccurred())
	return role.Name
}

// as returns a client that acts as user through the API server's
// impersonation: it may do what RBAC grants user and the group
// system:authenticated, which the API server adds.
func as(user string) client.Client {
	GinkgoHelper()
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: user}
	cl, err := client.New(c, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	return cl
}

// persona binds the ClusterRole that config/rbac/file ships to a new user,
// with a RoleBinding in namespace ns or, ns empty, a ClusterRoleBinding, and
// returns the user's name and a client acting as it, once the API server's
// authorizer has seen the binding.
func persona(file, ns string) (string, client.Client) {
	GinkgoHelper()
	role := shippedRole(file)
	user := fmt.Sprintf("%s-%d", strings.TrimSuffix(role, "-role"), seq.Add(1))
	ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role}
	subjects := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}}
	meta := metav1.ObjectMeta{Name: user, Namespace: ns}
	var binding client.Object = &rbacv1.ClusterRoleBinding{ObjectMeta: meta, RoleRef: ref, Subjects: subjects}
	// Each role but the allocation viewer's reads claims where it is bound.
	ready := request{"get", "ipclaims", ns}
	if ns != clusterWide {
		binding = &rbacv1.RoleBinding{ObjectMeta: meta, RoleRef: ref, Subjects: subjects}
	} else if file == allocationRoleFile {
		ready = request{"get", "ippools", clusterWide}
	}
	Expect(k8sClient.Create(ctx, binding)).To(Succeed())
	c := as(user)
	Eventually(func() (bool, error) { return mayDo(c, ready) }).Should(BeTrue(), "%s bound to %s may %s", user, role, ready)
	return user, c
}

// mayDo asks the API server, as c's user, whether it may make r.
func mayDo(c client.Client, r request) (bool, error) {
	resource, sub, _ := strings.Cut(r.resource, "/")
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: r.namespace, Verb: r.verb, Group: kipamGroup, Resource: resource, Subresource: sub,
		},
	}}
	if err := c.Create(ctx, review); err != nil {
		return false, err
	}
	return review.Status.Allowed, nil
}

// rulesBeyond returns the rules c's user has in namespace that a user
// bound to nothing lacks: what its own bindings grant.
func rulesBeyond(c client.Client, namespace string) ([]authorizationv1.ResourceRule, []authorizationv1.NonResourceRule) {
	GinkgoHelper()
	rules := func(c client.Client) authorizationv1.SubjectRulesReviewStatus {
		GinkgoHelper()
		review := &authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: namespace}}
		Expect(c.Create(ctx, review)).To(Succeed())
		Expect(review.Status.Incomplete).To(BeFalse(), review.Status.EvaluationError)
		return review.Status
	}
	base, own := rules(as(fmt.Sprintf("nobody-%d", seq.Add(1)))), rules(c)
	return notIn(own.ResourceRules, base.ResourceRules), notIn(own.NonResourceRules, base.NonResourceRules)
}

// notIn returns the elements of s that base lacks.
func notIn[T any](s, base []T) []T {
	var out []T
	for _, r := range s {
		if !slices.ContainsFunc(base, func(b T) bool { return equality.Semantic.DeepEqual(r, b) }) {
			out = append(out, r)
		}
	}
	return out
}

// tenantNamespace creates a namespace with labels.
func tenantNamespace(labels map[string]string) string {
	GinkgoHelper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "tenant-", Labels: labels}}
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// mergePatch is a JSON merge patch of patch.
func mergePatch(patch string) client.Patch {
	return client.RawPatch(types.MergePatchType, []byte(patch))
}

// expectForbidden fails unless RBAC, not a webhook, denied err's request:
// the user may not verb resource in kipam's API group. The specs make every
// write they expect denied as a dry run, which RBAC checks all the same, so
// that a widened role fails them without changing anything.
func expectForbidden(err error, verb, resource string) {
	GinkgoHelper()
	Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want Forbidden, got %v", err)
	Expect(err.Error()).To(ContainSubstring("cannot %s resource %q in API group %q", verb, resource, kipamGroup))
}

// kipamRecords returns the IPAllocation of bound claim c and its pool's
// root IPLedger, read as kipam's own.
func kipamRecords(c *ipamv1alpha1.IPClaim) (*ipamv1alpha1.IPAllocation, *ipamv1alpha1.IPLedger) {
	GinkgoHelper()
	waitBound(c)
	a, l := &ipamv1alpha1.IPAllocation{}, &ipamv1alpha1.IPLedger{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Name: c.Status.Allocation}, a)).To(Succeed())
	Expect(k8sClient.Get(ctx, client.ObjectKey{Name: a.Spec.Pool}, l)).To(Succeed())
	return a, l
}

// forged is a new IPAllocation like a, as someone but kipam would write it.
func forged(a *ipamv1alpha1.IPAllocation) *ipamv1alpha1.IPAllocation {
	return &ipamv1alpha1.IPAllocation{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("forged-%d", seq.Add(1))},
		Spec:       a.Spec,
	}
}

// expectKipamRecordsClosed fails unless c may write none of kipam's
// records: IPAllocations, IPLedgers and the status of pools, claims and
// allocations.
func expectKipamRecordsClosed(c client.Client, p *ipamv1alpha1.IPPool, claim *ipamv1alpha1.IPClaim) {
	GinkgoHelper()
	a, l := kipamRecords(claim)
	expectForbidden(c.Create(ctx, forged(a), client.DryRunAll), "create", "ipallocations")
	expectForbidden(c.Update(ctx, a.DeepCopy(), client.DryRunAll), "update", "ipallocations")
	expectForbidden(c.Patch(ctx, a.DeepCopy(), mergePatch(`{"metadata":{"labels":{"by":"hand"}}}`), client.DryRunAll), "patch", "ipallocations")
	expectForbidden(c.Delete(ctx, a.DeepCopy(), client.DryRunAll), "delete", "ipallocations")
	expectForbidden(c.DeleteAllOf(ctx, &ipamv1alpha1.IPAllocation{}, client.DryRunAll), "deletecollection", "ipallocations")
	expectForbidden(c.Status().Update(ctx, a.DeepCopy(), client.DryRunAll), "update", "ipallocations/status")
	expectForbidden(c.Create(ctx, &ipamv1alpha1.IPLedger{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("forged-%d", seq.Add(1))}}, client.DryRunAll), "create", "ipledgers")
	expectForbidden(c.Update(ctx, l.DeepCopy(), client.DryRunAll), "update", "ipledgers")
	expectForbidden(c.Delete(ctx, l.DeepCopy(), client.DryRunAll), "delete", "ipledgers")
	expectForbidden(c.Status().Update(ctx, p.DeepCopy(), client.DryRunAll), "update", "ippools/status")
	expectForbidden(c.Status().Patch(ctx, p.DeepCopy(), mergePatch(`{"status":{}}`), client.DryRunAll), "patch", "ippools/status")
	cur := &ipamv1alpha1.IPClaim{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(claim), cur)).To(Succeed())
	cur.Status.CIDR = "192.0.2.0/32"
	expectForbidden(c.Status().Update(ctx, cur, client.DryRunAll), "update", "ipclaims/status")
	expectForbidden(c.Status().Patch(ctx, cur, mergePatch(`{"status":{"cidr":"192.0.2.0/32"}}`), client.DryRunAll), "patch", "ipclaims/status")
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(claim), cur)).To(Succeed())
	Expect(cur.Status.CIDR).To(Equal(claim.Spec.CIDR), "the claim's status is as kipam wrote it")
}

var _ = Describe("Tenancy, proven by impersonating each persona", func() {
	DescribeTable("grants each persona role exactly what the persona needs, and nothing outside kipam's API group",
		// bindIn says where to bind the role: in the first of two
		// namespaces, or cluster-wide. want is what it must allow there,
		// given both namespaces; everything else it must deny.
		func(file string, bindIn func(home string) string, want func(home, other string) []request) {
			home, other := tenantNamespace(nil), tenantNamespace(nil)
			user, c := persona(file, bindIn(home))
			expected := sets.New[string]()
			for _, r := range want(home, other) {
				expected.Insert(r.String())
			}
			matrix := everyRequest(home, other)
			Eventually(func(g Gomega) {
				allowed := sets.New[string]()
				for _, r := range matrix {
					ok, err := mayDo(c, r)
					g.Expect(err).NotTo(HaveOccurred())
					if ok {
						allowed.Insert(r.String())
					}
				}
				g.Expect(sets.List(allowed.Difference(expected))).To(BeEmpty(), "%s lets %s do more than its persona may", file, user)
				g.Expect(sets.List(expected.Difference(allowed))).To(BeEmpty(), "%s does not let %s do what its persona needs", file, user)
			}).Should(Succeed())

			res, nonRes := rulesBeyond(c, home)
			Expect(res).NotTo(BeEmpty())
			for _, r := range res {
				Expect(r.APIGroups).To(Equal([]string{kipamGroup}), "%s grants %v", file, r)
				Expect(r.Resources).NotTo(ContainElement(ContainSubstring("*")), "%s grants %v", file, r)
				Expect(r.Verbs).NotTo(ContainElement("*"), "%s grants %v", file, r)
			}
			Expect(nonRes).To(BeEmpty(), "%s grants non-resource URLs", file)
		},
		Entry("the tenant: claims in the namespaces it is bound in, and their status to read",
			tenantRoleFile, func(home string) string { return home },
			func(home, _ string) []request {
				return slices.Concat(
					grants([]string{"get", "list", "watch", "create", "update", "patch", "delete"}, []string{"ipclaims"}, home),
					grants([]string{"get"}, []string{"ipclaims/status"}, home),
				)
			}),
		Entry("the viewer: reads every kind, writes nothing",
			viewerRoleFile, func(string) string { return clusterWide },
			func(home, other string) []request { return viewerGrants(home, other) }),
		Entry("the platform admin: manages pools, reads the rest",
			adminRoleFile, func(string) string { return clusterWide },
			func(home, other string) []request {
				return append(viewerGrants(home, other), grants([]string{"create", "update", "patch", "delete"}, []string{"ippools"}, clusterWide)...)
			}),
		Entry("the claim viewer that the built-in view role aggregates: a namespace's claims to read",
			claimViewerRoleFile, func(home string) string { return home },
			func(home, _ string) []request {
				return append(grants(readVerbs, []string{"ipclaims"}, home), grants([]string{"get"}, []string{"ipclaims/status"}, home)...)
			}),
		Entry("the allocation viewer kept for existing bindings: pools and allocations to read",
			allocationRoleFile, func(string) string { return clusterWide },
			func(string, string) []request {
				return grants(readVerbs, []string{"ipallocations", "ippools"}, clusterWide)
			}),
	)

	It("lets a tenant create, read, label and delete claims in its namespace, and nowhere else", func() {
		p := createPool("10.230.0.0/24", nil)
		home, other := tenantNamespace(nil), tenantNamespace(nil)
		_, tenant := persona(tenantRoleFile, home)

		c := newClaim(home, p.Name, nil)
		Expect(tenant.Create(ctx, c)).To(Succeed())
		Expect(c.Spec.CIDR).To(Equal("10.230.0.0/32"))
		Expect(tenant.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
		var claims ipamv1alpha1.IPClaimList
		Expect(tenant.List(ctx, &claims, client.InNamespace(home))).To(Succeed())
		Expect(claims.Items).To(ConsistOf(HaveField("Name", c.Name)))

		By("labelling it, but not moving it to another pool")
		// A Conflict is retried, as clients do: kipam's controllers write
		// the new claim at the same time (seen at load average 20).
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			before := c.DeepCopy()
			c.Labels = map[string]string{"app": "web"}
			return tenant.Patch(ctx, c, client.MergeFrom(before))
		})).To(Succeed())
		Expect(c.Labels).To(HaveKeyWithValue("app", "web"))
		Expect(c.Spec.CIDR).To(Equal("10.230.0.0/32"))
		// From the claim as stored: kipam's controllers may have written it
		// since the label (a Conflict, seen beside a load run).
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			moved := &ipamv1alpha1.IPClaim{}
			if err := tenant.Get(ctx, client.ObjectKeyFromObject(c), moved); err != nil {
				return err
			}
			moved.Spec.Pool = "another-pool"
			return tenant.Update(ctx, moved, client.DryRunAll)
		})).To(MatchError(ContainSubstring("pool is immutable")))

		By("not in another tenant's namespace, nor across namespaces")
		theirs := newClaim(other, p.Name, nil)
		Expect(k8sClient.Create(ctx, theirs)).To(Succeed())
		expectForbidden(tenant.Create(ctx, newClaim(other, p.Name, nil), client.DryRunAll), "create", "ipclaims")
		expectForbidden(tenant.Get(ctx, client.ObjectKeyFromObject(theirs), &ipamv1alpha1.IPClaim{}), "get", "ipclaims")
		expectForbidden(tenant.List(ctx, &claims, client.InNamespace(other)), "list", "ipclaims")
		expectForbidden(tenant.List(ctx, &claims), "list", "ipclaims")
		expectForbidden(tenant.Delete(ctx, theirs.DeepCopy(), client.DryRunAll), "delete", "ipclaims")
		expectForbidden(tenant.DeleteAllOf(ctx, &ipamv1alpha1.IPClaim{}, client.InNamespace(home), client.DryRunAll), "deletecollection", "ipclaims")
		Expect(ledgerOf(p.Name)).To(ConsistOf(c.Spec.CIDR, theirs.Spec.CIDR))

		By("deleting its own: kipam releases the prefix")
		waitBound(c)
		Expect(tenant.Delete(ctx, c)).To(Succeed())
		expectReleased(p.Name, c)
		Expect(ledgerOf(p.Name)).To(ConsistOf(theirs.Spec.CIDR))
	})

	It("keeps a tenant off pools and off every record kipam writes", func() {
		p := createPool("10.230.1.0/24", nil)
		home := tenantNamespace(nil)
		_, tenant := persona(tenantRoleFile, home)
		c := newClaim(home, p.Name, nil)
		Expect(tenant.Create(ctx, c)).To(Succeed())

		expectForbidden(tenant.Create(ctx, pool("10.230.2.0/24", nil), client.DryRunAll), "create", "ippools")
		expectForbidden(tenant.Get(ctx, client.ObjectKeyFromObject(p), &ipamv1alpha1.IPPool{}), "get", "ippools")
		expectForbidden(tenant.List(ctx, &ipamv1alpha1.IPPoolList{}), "list", "ippools")
		edited := p.DeepCopy()
		edited.Spec.Reserved = []string{"10.230.1.0/25"}
		expectForbidden(tenant.Update(ctx, edited, client.DryRunAll), "update", "ippools")
		expectForbidden(tenant.Patch(ctx, p.DeepCopy(), mergePatch(`{"spec":{"namespaceSelector":{}}}`), client.DryRunAll), "patch", "ippools")
		expectForbidden(tenant.Delete(ctx, p.DeepCopy(), client.DryRunAll), "delete", "ippools")
		a, _ := kipamRecords(c)
		expectForbidden(tenant.Get(ctx, client.ObjectKeyFromObject(a), &ipamv1alpha1.IPAllocation{}), "get", "ipallocations")
		expectForbidden(tenant.List(ctx, &ipamv1alpha1.IPLedgerList{}), "list", "ipledgers")
		expectKipamRecordsClosed(tenant, p, c)
	})

	It("denies a tenant a pool closed to its namespace exactly as a pool that does not exist", func() {
		fence := map[string]string{"tenancy": fmt.Sprintf("closed-%d", seq.Add(1))}
		closed := pool("10.230.4.0/24", func(s *ipamv1alpha1.IPPoolSpec) {
			s.NamespaceSelector = &metav1.LabelSelector{MatchLabels: fence}
		})
		closed.Labels = fence
		Expect(k8sClient.Create(ctx, closed)).To(Succeed())
		theirNS := tenantNamespace(fence)
		theirs := newClaim(theirNS, closed.Name, func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](26) })
		Expect(k8sClient.Create(ctx, theirs)).To(Succeed())
		Expect(theirs.Spec.CIDR).To(Equal("10.230.4.0/26"))
		home := tenantNamespace(nil)
		_, tenant := persona(tenantRoleFile, home)

		// denial is what the tenant is told when it asks for what ask
		// sets, by a claim of a name shared by every attempt.
		denial := func(ask func(*ipamv1alpha1.IPClaim)) string {
			GinkgoHelper()
			c := newClaim(home, "", func(c *ipamv1alpha1.IPClaim) { c.Name = "probe" })
			ask(c)
			err := tenant.Create(ctx, c)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			return err.Error()
		}
		for what, ask := range map[string]func(*ipamv1alpha1.IPClaim){
			"for the next free address":           func(*ipamv1alpha1.IPClaim) {},
			"for the prefix another tenant holds": func(c *ipamv1alpha1.IPClaim) { c.Spec.CIDR = theirs.Spec.CIDR },
			"for a free prefix":                   func(c *ipamv1alpha1.IPClaim) { c.Spec.CIDR = "10.230.4.128/25" },
			"for more than the pool holds":        func(c *ipamv1alpha1.IPClaim) { c.Spec.PrefixLength = ptr.To[int32](16) },
			"to wait for space":                   func(c *ipamv1alpha1.IPClaim) { c.Spec.WhenExhausted = ipamv1alpha1.Wait },
		} {
			By("asking " + what)
			got := denial(func(c *ipamv1alpha1.IPClaim) { c.Spec.Pool = closed.Name; ask(c) })
			absent := denial(func(c *ipamv1alpha1.IPClaim) { c.Spec.Pool = "no-such-pool"; ask(c) })
			Expect(got).To(Equal(strings.ReplaceAll(absent, "no-such-pool", closed.Name)))
			Expect(got).To(ContainSubstring(`spec.pool: Not found: "%s (no such pool is open to namespace %s)"`, closed.Name, home))
			Expect(got).NotTo(ContainSubstring(closed.Spec.CIDR))
			Expect(got).NotTo(ContainSubstring(theirNS))
			Expect(got).NotTo(ContainSubstring(theirs.Name))
		}

		By("asking by a selector that matches only the closed pool")
		bySelector := func(labels map[string]string) string {
			GinkgoHelper()
			return denial(func(c *ipamv1alpha1.IPClaim) {
				c.Spec.PoolSelector = &metav1.LabelSelector{MatchLabels: labels}
				c.Spec.IPFamily = ipamv1alpha1.IPv4
			})
		}
		got := bySelector(fence)
		absent := bySelector(map[string]string{"tenancy": "nothing"})
		Expect(got).To(Equal(strings.ReplaceAll(absent, "tenancy=nothing", "tenancy="+fence["tenancy"])))
		Expect(got).To(ContainSubstring("no IPv4 pool matching the selector is open to namespace " + home))
		Expect(got).NotTo(ContainSubstring(closed.Name))

		Expect(ledgerOf(closed.Name)).To(ConsistOf(theirs.Spec.CIDR))
	})

	It("lets the viewer read every kind and write none", func() {
		p := createPool("10.230.5.0/24", nil)
		ns := tenantNamespace(nil)
		c := newClaim(ns, p.Name, nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		a, l := kipamRecords(c)
		_, viewer := persona(viewerRoleFile, clusterWide)

		Expect(viewer.Get(ctx, client.ObjectKeyFromObject(p), &ipamv1alpha1.IPPool{})).To(Succeed())
		var claims ipamv1alpha1.IPClaimList
		Expect(viewer.List(ctx, &claims)).To(Succeed())
		Expect(claims.Items).To(ContainElement(HaveField("Name", c.Name)))
		Expect(viewer.Get(ctx, client.ObjectKeyFromObject(a), &ipamv1alpha1.IPAllocation{})).To(Succeed())
		Expect(viewer.Get(ctx, client.ObjectKeyFromObject(l), &ipamv1alpha1.IPLedger{})).To(Succeed())

		expectForbidden(viewer.Create(ctx, newClaim(ns, p.Name, nil), client.DryRunAll), "create", "ipclaims")
		expectForbidden(viewer.Patch(ctx, c.DeepCopy(), mergePatch(`{"metadata":{"labels":{"by":"viewer"}}}`), client.DryRunAll), "patch", "ipclaims")
		expectForbidden(viewer.Delete(ctx, c.DeepCopy(), client.DryRunAll), "delete", "ipclaims")
		expectForbidden(viewer.Create(ctx, pool("10.230.6.0/24", nil), client.DryRunAll), "create", "ippools")
		expectForbidden(viewer.Delete(ctx, p.DeepCopy(), client.DryRunAll), "delete", "ippools")
		expectKipamRecordsClosed(viewer, p, c)
	})

	It("lets the platform admin manage pools and only read what tenants and kipam write", func() {
		_, admin := persona(adminRoleFile, clusterWide)
		p := pool("10.230.8.0/24", nil)
		Expect(admin.Create(ctx, p)).To(Succeed())
		before := p.DeepCopy()
		p.Labels = map[string]string{"tier": "gold"}
		Expect(admin.Patch(ctx, p, client.MergeFrom(before))).To(Succeed())

		ns := tenantNamespace(nil)
		c := newClaim(ns, p.Name, nil)
		Expect(k8sClient.Create(ctx, c)).To(Succeed())
		a, l := kipamRecords(c)
		var claims ipamv1alpha1.IPClaimList
		Expect(admin.List(ctx, &claims)).To(Succeed())
		Expect(claims.Items).To(ContainElement(HaveField("Name", c.Name)))
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(a), &ipamv1alpha1.IPAllocation{})).To(Succeed())
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(l), &ipamv1alpha1.IPLedger{})).To(Succeed())

		expectForbidden(admin.Create(ctx, newClaim(ns, p.Name, nil), client.DryRunAll), "create", "ipclaims")
		expectForbidden(admin.Delete(ctx, c.DeepCopy(), client.DryRunAll), "delete", "ipclaims")
		expectKipamRecordsClosed(admin, p, c)

		By("deleting the pool once its claims are gone")
		Expect(k8sClient.Delete(ctx, c)).To(Succeed())
		expectReleased(p.Name, c)
		Expect(admin.Delete(ctx, p)).To(Succeed())
		Eventually(func() error {
			return admin.Get(ctx, client.ObjectKeyFromObject(p), &ipamv1alpha1.IPPool{})
		}).Should(Satisfy(apierrors.IsNotFound))
	})
})
