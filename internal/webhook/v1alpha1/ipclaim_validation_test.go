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
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// The claim webhook commits a prefix before the API server validates the
// claim against its CRD, so ValidateClaimCreate must deny exactly what the CRD
// denies. These tests judge every claim twice: by ValidateClaimCreate and by
// the generated CRD's own validators, run in process as the API server runs
// them on a create.

const claimCRDFile = "../../../config/crd/bases/ipam.kipam.dev_ipclaims.yaml"

// crdValidator validates an IPClaim create the way the API server's
// customResourceStrategy.Validate does: CRD defaults, the OpenAPI schema, and
// then the CEL rules, unless the schema found an error that blocks them.
type crdValidator struct {
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaValidator
	rules      *cel.Validator
}

// loadClaimCRD reads the generated IPClaim CRD and returns its served version.
func loadClaimCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinitionVersion {
	t.Helper()
	raw, err := os.ReadFile(claimCRDFile)
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(raw, &crd); err != nil {
		t.Fatalf("decoding %s: %v", claimCRDFile, err)
	}
	for i := range crd.Spec.Versions {
		if v := &crd.Spec.Versions[i]; v.Name == ipamv1alpha1.GroupVersion.Version {
			return v
		}
	}
	t.Fatalf("%s has no version %s", claimCRDFile, ipamv1alpha1.GroupVersion.Version)
	return nil
}

func newCRDValidator(t *testing.T, version *apiextensionsv1.CustomResourceDefinitionVersion) *crdValidator {
	t.Helper()
	var internal apiextensionsinternal.CustomResourceValidation
	if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(version.Schema, &internal, nil); err != nil {
		t.Fatal(err)
	}
	schema, _, err := apiservervalidation.NewSchemaValidator(internal.OpenAPIV3Schema)
	if err != nil {
		t.Fatal(err)
	}
	structural, err := structuralschema.NewStructural(internal.OpenAPIV3Schema)
	if err != nil {
		t.Fatal(err)
	}
	return &crdValidator{
		structural: structural,
		schema:     schema,
		rules:      cel.NewValidator(structural, true, celconfig.PerCallLimit),
	}
}

// validate returns the errors the API server would give for creating claim.
// Where it skips the CEL rules it adds an error naming no field; that one is
// left out here.
func (v *crdValidator) validate(t *testing.T, claim *ipamv1alpha1.IPClaim) field.ErrorList {
	t.Helper()
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(claim)
	if err != nil {
		t.Fatal(err)
	}
	structuraldefaulting.Default(obj, v.structural)
	errs := apiservervalidation.ValidateCustomResource(nil, obj, v.schema)
	// apiextensions-apiserver's hasBlockingErr, customresource/strategy.go.
	blocking := func(e *field.Error) bool {
		return slices.Contains([]field.ErrorType{field.ErrorTypeNotSupported, field.ErrorTypeRequired,
			field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid}, e.Type)
	}
	if slices.ContainsFunc(errs, blocking) {
		return errs
	}
	ruleErrs, _ := v.rules.Validate(context.Background(), nil, v.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, ruleErrs...)
}

func claimWith(spec ipamv1alpha1.IPClaimSpec) *ipamv1alpha1.IPClaim {
	return &ipamv1alpha1.IPClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: ipamv1alpha1.GroupVersion.String(), Kind: "IPClaim"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec:       spec,
	}
}

// fieldPaths returns the errors' field paths, sorted, repeats kept.
func fieldPaths(errs field.ErrorList) []string {
	paths := make([]string, 0, len(errs))
	for _, e := range errs {
		paths = append(paths, e.Field)
	}
	slices.Sort(paths)
	return paths
}

// errorLines returns the errors as kubectl shows them, sorted.
func errorLines(errs field.ErrorList) []string {
	lines := make([]string, 0, len(errs))
	for _, e := range errs {
		lines = append(lines, e.Error())
	}
	slices.Sort(lines)
	return lines
}

func selector(exprs ...metav1.LabelSelectorRequirement) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "shared"}, MatchExpressions: exprs}
}

// claimCases is the table both sides are held to.
var claimCases = []struct {
	name string
	spec ipamv1alpha1.IPClaimSpec
	// want is the field paths denied, sorted, repeats kept; none when the
	// claim is valid.
	want []string
	// webhookOnly marks a denial with no CRD rule behind it: the CRD must
	// admit the claim.
	webhookOnly bool
}{
	{name: "by pool name", spec: ipamv1alpha1.IPClaimSpec{Pool: "tenant-a"}},
	{name: "by selector and family", spec: ipamv1alpha1.IPClaimSpec{PoolSelector: selector(), IPFamily: ipamv1alpha1.IPv6}},
	{name: "by selector, family from cidr", spec: ipamv1alpha1.IPClaimSpec{PoolSelector: selector(), CIDR: "10.1.0.0/24"}},
	{name: "by empty selector", spec: ipamv1alpha1.IPClaimSpec{PoolSelector: &metav1.LabelSelector{}, IPFamily: ipamv1alpha1.IPv4}},
	{name: "by selector expressions", spec: ipamv1alpha1.IPClaimSpec{IPFamily: ipamv1alpha1.IPv4, PoolSelector: selector(
		metav1.LabelSelectorRequirement{Key: "kipam.dev/zone", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}},
		metav1.LabelSelectorRequirement{Key: "retired", Operator: metav1.LabelSelectorOpDoesNotExist})}},
	{name: "a specific IPv6 prefix", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "2001:db8::/64", PrefixLength: ptr.To[int32](64), IPFamily: ipamv1alpha1.IPv6}},
	{name: "the longest canonical cidr", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", PrefixLength: ptr.To[int32](128)}},
	{name: "all of IPv4", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "0.0.0.0/0", PrefixLength: ptr.To[int32](0), IPFamily: ipamv1alpha1.IPv4}},
	{name: "a /24 with a lifetime that waits", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", PrefixLength: ptr.To[int32](24), IPFamily: ipamv1alpha1.IPv4,
		TTLSeconds: ptr.To[int64](1), WhenExhausted: ipamv1alpha1.Wait}},
	{name: "/64 with the family left to the pool", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", PrefixLength: ptr.To[int32](64)}},
	{name: "IPv6 /128", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", PrefixLength: ptr.To[int32](128), IPFamily: ipamv1alpha1.IPv6, WhenExhausted: ipamv1alpha1.Deny}},
	{name: "a 253-character pool name", spec: ipamv1alpha1.IPClaimSpec{Pool: strings.Repeat("p", 253)}},

	{name: "neither pool nor selector", spec: ipamv1alpha1.IPClaimSpec{IPFamily: ipamv1alpha1.IPv4}, want: []string{"spec.pool"}},
	{name: "both pool and selector", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", PoolSelector: selector(), IPFamily: ipamv1alpha1.IPv4},
		want: []string{"spec.pool"}},
	{name: "both, and no family", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", PoolSelector: &metav1.LabelSelector{}},
		want: []string{"spec.ipFamily", "spec.pool"}},
	{name: "selector without a family", spec: ipamv1alpha1.IPClaimSpec{PoolSelector: selector()}, want: []string{"spec.ipFamily"}},
	{name: "a 254-character pool name", spec: ipamv1alpha1.IPClaimSpec{Pool: strings.Repeat("p", 254)}, want: []string{"spec.pool"}},
	{name: "a stickyKey", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", StickyKey: "web-0.db"}},
	{name: "a 253-character stickyKey", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", StickyKey: strings.Repeat("k", 253)}},
	{name: "a 254-character stickyKey", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", StickyKey: strings.Repeat("k", 254)}, want: []string{"spec.stickyKey"}},
	{name: "a stickyKey with a space", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", StickyKey: "web 0"}, want: []string{"spec.stickyKey"}},
	{name: "a stickyKey in upper case", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", StickyKey: "Web-0"}, want: []string{"spec.stickyKey"}},
	{name: "unknown family", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", IPFamily: "IPv5"}, want: []string{"spec.ipFamily"}},
	{name: "unknown family hides the rules", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", PoolSelector: selector(), IPFamily: "ipv4", PrefixLength: ptr.To[int32](64)},
		want: []string{"spec.ipFamily"}},
	{name: "IPv4 cidr, IPv6 family", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "10.0.0.0/24", IPFamily: ipamv1alpha1.IPv6}, want: []string{"spec.cidr"}},
	{name: "IPv6 cidr, IPv4 family", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "2001:db8::/64", IPFamily: ipamv1alpha1.IPv4}, want: []string{"spec.cidr"}},
	{name: "host bits set", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "10.0.0.7/24"}, want: []string{"spec.cidr"}},
	{name: "host bits set, other family", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "10.0.0.7/24", IPFamily: ipamv1alpha1.IPv6},
		want: []string{"spec.cidr", "spec.cidr"}},
	{name: "IPv6 upper case", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "2001:DB8::/64"}, want: []string{"spec.cidr"}},
	{name: "IPv6 not compressed", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "2001:db8:0:0::/64"}, want: []string{"spec.cidr"}},
	{name: "IPv4-mapped IPv6", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "::ffff:10.0.0.0/104", IPFamily: ipamv1alpha1.IPv4},
		want: []string{"spec.cidr"}},
	{name: "IPv4-mapped IPv6 in hex", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "::ffff:a00:0/104", PrefixLength: ptr.To[int32](8)},
		want: []string{"spec.cidr"}},
	{name: "IPv6 with a zone", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "fe80::%eth0/64"}, want: []string{"spec.cidr"}},
	{name: "a bare address", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "10.0.0.0"}, want: []string{"spec.cidr"}},
	{name: "a leading zero in the length", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "10.0.0.0/08"}, want: []string{"spec.cidr"}},
	{name: "IPv4 /33", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "10.0.0.0/33"}, want: []string{"spec.cidr"}},
	{name: "not a CIDR", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "banana", PrefixLength: ptr.To[int32](24)}, want: []string{"spec.cidr"}},
	{name: "a 44-character cidr hides the rules", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/0128"},
		want: []string{"spec.cidr"}},
	{name: "prefixLength 33 for IPv4", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", PrefixLength: ptr.To[int32](33), IPFamily: ipamv1alpha1.IPv4},
		want: []string{"spec.prefixLength"}},
	{name: "prefixLength 129", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", PrefixLength: ptr.To[int32](129)}, want: []string{"spec.prefixLength"}},
	{name: "prefixLength 129 for IPv4", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", PrefixLength: ptr.To[int32](129), IPFamily: ipamv1alpha1.IPv4},
		want: []string{"spec.prefixLength", "spec.prefixLength"}},
	{name: "prefixLength -1", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", PrefixLength: ptr.To[int32](-1)}, want: []string{"spec.prefixLength"}},
	{name: "prefixLength disagrees with cidr", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "10.0.0.0/24", PrefixLength: ptr.To[int32](28)},
		want: []string{"spec.prefixLength"}},
	{name: "prefixLength disagrees with a host-bits cidr", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "10.0.0.7/24", PrefixLength: ptr.To[int32](28)},
		want: []string{"spec.cidr", "spec.prefixLength"}},
	{name: "zero lifetime", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", TTLSeconds: ptr.To[int64](0)}, want: []string{"spec.ttlSeconds"}},
	{name: "negative lifetime", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", TTLSeconds: ptr.To[int64](-60)}, want: []string{"spec.ttlSeconds"}},
	{name: "unknown exhaustion policy", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", WhenExhausted: "Retry"}, want: []string{"spec.whenExhausted"}},

	{name: "dual-stack from two pools", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: ipamv1alpha1.RequireDualStack,
		IPFamilies: []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv4, ipamv1alpha1.IPv6}, Pools: []string{"p4", "p6"}, PrefixLengths: []int32{24, 64}}},
	{name: "dual-stack by selector, IPv6 first", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: ipamv1alpha1.PreferDualStack,
		IPFamilies: []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv6, ipamv1alpha1.IPv4}, PoolSelector: selector()}},
	{name: "dual-stack as kipam writes it", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: ipamv1alpha1.RequireDualStack,
		IPFamilies: []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv4, ipamv1alpha1.IPv6}, Pools: []string{"p4", strings.Repeat("p", 253)},
		CIDR: "10.0.0.0/24", CIDRs: []string{"10.0.0.0/24", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"}, PrefixLengths: []int32{0, 128}}},
	{name: "unknown family policy", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", IPFamilyPolicy: "DualStack"}, want: []string{"spec.ipFamilyPolicy"}},
	{name: "three families", spec: ipamv1alpha1.IPClaimSpec{PoolSelector: selector(), IPFamilyPolicy: ipamv1alpha1.RequireDualStack,
		IPFamilies: []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv4, ipamv1alpha1.IPv6, ipamv1alpha1.IPv4}}, want: []string{"spec.ipFamilies"}},
	{name: "an unknown family in ipFamilies", spec: ipamv1alpha1.IPClaimSpec{PoolSelector: selector(), IPFamilyPolicy: ipamv1alpha1.RequireDualStack,
		IPFamilies: []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv4, "IPv5"}}, want: []string{"spec.ipFamilies[1]"}},
	{name: "pool and pools", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", Pools: []string{"p4", "p6"}}, want: []string{"spec.pool"}},
	{name: "pools and a selector", spec: ipamv1alpha1.IPClaimSpec{PoolSelector: selector(), IPFamily: ipamv1alpha1.IPv4, Pools: []string{"p4"}},
		want: []string{"spec.pool"}},
	{name: "three pools", spec: ipamv1alpha1.IPClaimSpec{Pools: []string{"a", "b", "c"}}, want: []string{"spec.pools"}},
	{name: "a 254-character name in pools", spec: ipamv1alpha1.IPClaimSpec{Pools: []string{strings.Repeat("p", 254), "p6"}}, want: []string{"spec.pools[0]"}},
	{name: "three prefix lengths", spec: ipamv1alpha1.IPClaimSpec{Pools: []string{"p4", "p6"}, PrefixLengths: []int32{24, 64, 64}},
		want: []string{"spec.prefixLengths"}},
	{name: "prefix lengths out of range", spec: ipamv1alpha1.IPClaimSpec{Pools: []string{"p4", "p6"}, PrefixLengths: []int32{-1, 129}},
		want: []string{"spec.prefixLengths[0]", "spec.prefixLengths[1]"}},
	{name: "three cidrs", spec: ipamv1alpha1.IPClaimSpec{Pools: []string{"p4", "p6"}, CIDRs: []string{"10.0.0.0/24", "2001:db8::/64", "10.1.0.0/24"}},
		want: []string{"spec.cidrs"}},
	{name: "a 44-character item of cidrs", spec: ipamv1alpha1.IPClaimSpec{Pools: []string{"p4", "p6"},
		CIDRs: []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/0128"}}, want: []string{"spec.cidrs[0]"}},
	{name: "a non-canonical item of cidrs", spec: ipamv1alpha1.IPClaimSpec{Pools: []string{"p4", "p6"},
		CIDRs: []string{"10.0.0.0/24", "2001:DB8::/64"}}, want: []string{"spec.cidrs[1]"}},

	{name: "unknown selector operator", webhookOnly: true, spec: ipamv1alpha1.IPClaimSpec{IPFamily: ipamv1alpha1.IPv4,
		PoolSelector: selector(metav1.LabelSelectorRequirement{Key: "zone", Operator: "Near"})},
		want: []string{"spec.poolSelector.matchExpressions[0].operator"}},
	{name: "In without values", webhookOnly: true, spec: ipamv1alpha1.IPClaimSpec{IPFamily: ipamv1alpha1.IPv4,
		PoolSelector: selector(metav1.LabelSelectorRequirement{Key: "zone", Operator: metav1.LabelSelectorOpIn})},
		want: []string{"spec.poolSelector.matchExpressions[0].values"}},
	{name: "selector key not a label name", webhookOnly: true, spec: ipamv1alpha1.IPClaimSpec{IPFamily: ipamv1alpha1.IPv4,
		PoolSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"-tier": "shared"}}},
		want: []string{"spec.poolSelector.matchLabels"}},
	{name: "selector value not a label value", webhookOnly: true, spec: ipamv1alpha1.IPClaimSpec{IPFamily: ipamv1alpha1.IPv4,
		PoolSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "shared pool"}}},
		want: []string{"spec.poolSelector.matchLabels"}},
}

// TestValidateClaimCreateMatchesCRD holds ValidateClaimCreate and the CRD to
// the table, and to each other: the same fields, types, values and messages.
func TestValidateClaimCreateMatchesCRD(t *testing.T) {
	crd := newCRDValidator(t, loadClaimCRD(t))
	for _, tc := range claimCases {
		t.Run(tc.name, func(t *testing.T) {
			claim := claimWith(tc.spec)
			fromCRD, got := crd.validate(t, claim), ValidateClaimCreate(claim)
			if paths := fieldPaths(got); !slices.Equal(paths, tc.want) {
				t.Errorf("ValidateClaimCreate denied %q, want %q:\n%s", paths, tc.want, strings.Join(errorLines(got), "\n"))
			}
			want := tc.want
			if tc.webhookOnly {
				want = nil
			}
			if paths := fieldPaths(fromCRD); !slices.Equal(paths, want) {
				t.Errorf("the CRD denied %q, want %q:\n%s", paths, want, strings.Join(errorLines(fromCRD), "\n"))
			}
			if !tc.webhookOnly && !slices.Equal(errorLines(got), errorLines(fromCRD)) {
				t.Errorf("ValidateClaimCreate:\n%s\nthe CRD:\n%s",
					strings.Join(errorLines(got), "\n"), strings.Join(errorLines(fromCRD), "\n"))
			}
		})
	}
}

// TestValidateClaimCreateAgreesEverywhere compares both sides on every
// combination of a few telling values per field.
func TestValidateClaimCreateAgreesEverywhere(t *testing.T) {
	crd := newCRDValidator(t, loadClaimCRD(t))
	pools := []string{"", "p", strings.Repeat("p", 254)}
	selectors := []*metav1.LabelSelector{nil, {}, selector()}
	families := []ipamv1alpha1.IPFamily{"", ipamv1alpha1.IPv4, ipamv1alpha1.IPv6, "IPv5"}
	cidrs := []string{"", "10.0.0.0/24", "10.0.0.7/24", "0.0.0.0/0", "2001:db8::/64", "2001:DB8::/64",
		"::ffff:10.0.0.0/104", "banana", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/0128"}
	lengths := []*int32{nil, ptr.To[int32](-1), ptr.To[int32](0), ptr.To[int32](24), ptr.To[int32](32),
		ptr.To[int32](33), ptr.To[int32](64), ptr.To[int32](128), ptr.To[int32](129)}
	ttls := []*int64{nil, ptr.To[int64](0), ptr.To[int64](1)}
	policies := []ipamv1alpha1.ExhaustedPolicy{"", ipamv1alpha1.Deny, "Retry"}
	mismatches := 0
	for _, p := range pools {
		for _, sel := range selectors {
			for _, fam := range families {
				for _, c := range cidrs {
					for _, l := range lengths {
						for _, ttl := range ttls {
							for _, we := range policies {
								claim := claimWith(ipamv1alpha1.IPClaimSpec{Pool: p, PoolSelector: sel, IPFamily: fam,
									CIDR: c, PrefixLength: l, TTLSeconds: ttl, WhenExhausted: we})
								got, want := errorLines(ValidateClaimCreate(claim)), errorLines(crd.validate(t, claim))
								if slices.Equal(got, want) {
									continue
								}
								if mismatches++; mismatches <= 5 {
									t.Errorf("%+v\nValidateClaimCreate:\n%s\nthe CRD:\n%s", claim.Spec,
										strings.Join(got, "\n"), strings.Join(want, "\n"))
								}
							}
						}
					}
				}
			}
		}
	}
	if mismatches > 5 {
		t.Errorf("and %d more mismatches", mismatches-5)
	}
}

// unmirrored names the CRD constraints under spec that a decoded IPClaim
// cannot break, so that neither the table nor ValidateClaimCreate can have
// them.
var unmirrored = map[string]string{
	"spec.pool minLength":                            "pool is omitempty: an empty pool is no pool once decoded",
	"spec.poolSelector.matchExpressions[*] required": "key and operator are always written, empty or not",
}

// TestClaimTableCoversTheCRD removes each create-time constraint of the CRD
// in turn and expects the CRD to judge some row of the table differently
// without it. A rule added to the CRD without a row here, and so without its
// mirror in ValidateClaimCreate, fails this test.
func TestClaimTableCoversTheCRD(t *testing.T) {
	version := loadClaimCRD(t)
	judge := func(crd *crdValidator) [][]string {
		results := make([][]string, len(claimCases))
		for i, tc := range claimCases {
			results[i] = errorLines(crd.validate(t, claimWith(tc.spec)))
		}
		return results
	}
	full := judge(newCRDValidator(t, version))
	root := version.Schema.OpenAPIV3Schema
	seen := map[string]bool{}
	for _, c := range constraintsOf(root.Properties["spec"], []string{"spec"}) {
		seen[c.name] = true
		if _, ok := unmirrored[c.name]; ok {
			continue
		}
		without := version.DeepCopy()
		*without.Schema.OpenAPIV3Schema = dropAt(*without.Schema.OpenAPIV3Schema, c.path, c.drop)
		if slices.EqualFunc(full, judge(newCRDValidator(t, without)), slices.Equal) {
			t.Errorf("no row of claimCases breaks %s: add one, and mirror the rule in ValidateClaimCreate", c.name)
		}
	}
	for name := range unmirrored {
		if !seen[name] {
			t.Errorf("unmirrored names %s, which the CRD no longer has", name)
		}
	}
}

// constraint is one validation of a schema node.
type constraint struct {
	name string   // where and what, e.g. "spec.pool maxLength"
	path []string // the node: property names, [*] for items, [key] for additionalProperties
	drop func(*apiextensionsv1.JSONSchemaProps)
}

// constraintsOf lists the validations at and below s that can deny a create;
// a CEL rule naming oldSelf is a transition rule, run only on update.
func constraintsOf(s apiextensionsv1.JSONSchemaProps, path []string) []constraint {
	var cs []constraint
	add := func(what string, present bool, drop func(*apiextensionsv1.JSONSchemaProps)) {
		if present {
			cs = append(cs, constraint{name: strings.ReplaceAll(strings.Join(path, "."), ".[", "[") + " " + what,
				path: slices.Clone(path), drop: drop})
		}
	}
	type props = apiextensionsv1.JSONSchemaProps
	add("maxLength", s.MaxLength != nil, func(s *props) { s.MaxLength = nil })
	add("minLength", s.MinLength != nil, func(s *props) { s.MinLength = nil })
	add("maximum", s.Maximum != nil, func(s *props) { s.Maximum = nil })
	add("minimum", s.Minimum != nil, func(s *props) { s.Minimum = nil })
	add("multipleOf", s.MultipleOf != nil, func(s *props) { s.MultipleOf = nil })
	add("pattern", s.Pattern != "", func(s *props) { s.Pattern = "" })
	add("format", s.Type == "string" && s.Format != "", func(s *props) { s.Format = "" })
	add("enum", len(s.Enum) > 0, func(s *props) { s.Enum = nil })
	add("required", len(s.Required) > 0, func(s *props) { s.Required = nil })
	add("maxItems", s.MaxItems != nil, func(s *props) { s.MaxItems = nil })
	add("minItems", s.MinItems != nil, func(s *props) { s.MinItems = nil })
	add("uniqueItems", s.UniqueItems, func(s *props) { s.UniqueItems = false })
	add("maxProperties", s.MaxProperties != nil, func(s *props) { s.MaxProperties = nil })
	add("minProperties", s.MinProperties != nil, func(s *props) { s.MinProperties = nil })
	add("allOf", len(s.AllOf) > 0, func(s *props) { s.AllOf = nil })
	add("anyOf", len(s.AnyOf) > 0, func(s *props) { s.AnyOf = nil })
	add("oneOf", len(s.OneOf) > 0, func(s *props) { s.OneOf = nil })
	add("not", s.Not != nil, func(s *props) { s.Not = nil })
	for i, r := range s.XValidations {
		add(fmt.Sprintf("rule %q", r.Rule), !strings.Contains(r.Rule, "oldSelf"), func(s *props) {
			s.XValidations = slices.Delete(slices.Clone(s.XValidations), i, i+1)
		})
	}
	for _, name := range slices.Sorted(maps.Keys(s.Properties)) {
		cs = append(cs, constraintsOf(s.Properties[name], append(slices.Clone(path), name))...)
	}
	if s.Items != nil && s.Items.Schema != nil {
		cs = append(cs, constraintsOf(*s.Items.Schema, append(slices.Clone(path), "[*]"))...)
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		cs = append(cs, constraintsOf(*s.AdditionalProperties.Schema, append(slices.Clone(path), "[key]"))...)
	}
	return cs
}

// dropAt returns s with drop applied to the node at path; s must be a deep
// copy, as the nodes on the way are changed in place.
func dropAt(s apiextensionsv1.JSONSchemaProps, path []string, drop func(*apiextensionsv1.JSONSchemaProps)) apiextensionsv1.JSONSchemaProps {
	if len(path) == 0 {
		drop(&s)
		return s
	}
	switch rest := path[1:]; path[0] {
	case "[*]":
		*s.Items.Schema = dropAt(*s.Items.Schema, rest, drop)
	case "[key]":
		*s.AdditionalProperties.Schema = dropAt(*s.AdditionalProperties.Schema, rest, drop)
	default:
		s.Properties[path[0]] = dropAt(s.Properties[path[0]], rest, drop)
	}
	return s
}
