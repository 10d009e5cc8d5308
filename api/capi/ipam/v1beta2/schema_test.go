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

package v1beta2_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	capiipam "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	"github.com/kipam/kipam/internal/testenv"
)

// kipam's types for Cluster API's IPAM contract must mean, on the wire, what
// Cluster API's CRDs mean. These tests judge what the types write by the
// vendored CRDs themselves, run in process as the API server runs them on a
// create: pruning of unknown fields, defaulting, the OpenAPI schema, list
// types and CEL rules.

// Files of the vendored CRDs, and the fixtures: objects as Cluster API and a
// provider write them, with every field of the v1beta2 schema set.
const (
	claimCRD       = "ipam.cluster.x-k8s.io_ipaddressclaims.yaml"
	addressCRD     = "ipam.cluster.x-k8s.io_ipaddresses.yaml"
	claimFixture   = "testdata/ipaddressclaim.yaml"
	addressFixture = "testdata/ipaddress.yaml"
)

// notModelled lists, per CRD, the schema paths kipam's types leave out on
// purpose, with what is under them. Anything else in the schema must be
// modelled.
var notModelled = map[string][]string{
	// Written by providers for v1beta1 clients; kipam writes v1beta2
	// conditions only, and patches leave these alone.
	claimCRD:   {"status.deprecated"},
	addressCRD: nil,
}

// crd is one vendored CRD's v1beta2 schema, with the API server's
// validators for it.
type crd struct {
	file       string
	schema     apiextensionsv1.JSONSchemaProps
	structural *structuralschema.Structural
	validator  apiservervalidation.SchemaValidator
	rules      *cel.Validator // nil: the schema has no x-kubernetes-validations
}

func loadCRD(t *testing.T, file string) *crd {
	t.Helper()
	path := filepath.Join(testenv.Root, "config", "capi", "crd", file)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var def apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(raw, &def); err != nil {
		t.Fatalf("decoding %s: %v", path, err)
	}
	if def.Spec.Group != capiipam.GroupVersion.Group {
		t.Fatalf("%s is for group %s, not %s", path, def.Spec.Group, capiipam.GroupVersion.Group)
	}
	var version *apiextensionsv1.CustomResourceDefinitionVersion
	for i := range def.Spec.Versions {
		if v := &def.Spec.Versions[i]; v.Name == capiipam.GroupVersion.Version {
			version = v
		}
	}
	if version == nil || !version.Served {
		t.Fatalf("%s does not serve %s", path, capiipam.GroupVersion.Version)
	}
	var internal apiextensionsinternal.CustomResourceValidation
	if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(version.Schema, &internal, nil); err != nil {
		t.Fatal(err)
	}
	validator, _, err := apiservervalidation.NewSchemaValidator(internal.OpenAPIV3Schema)
	if err != nil {
		t.Fatal(err)
	}
	structural, err := structuralschema.NewStructural(internal.OpenAPIV3Schema)
	if err != nil {
		t.Fatal(err)
	}
	return &crd{
		file:       file,
		schema:     *version.Schema.OpenAPIV3Schema,
		structural: structural,
		validator:  validator,
		rules:      cel.NewValidator(structural, true, celconfig.PerCallLimit),
	}
}

// admit does to a copy of obj what the API server does to a create: it
// prunes unknown fields, applies defaults and validates. It returns the
// object as it would be stored, the paths it pruned and the errors.
func (c *crd) admit(obj map[string]any) (stored map[string]any, pruned []string, errs field.ErrorList) {
	stored = runtime.DeepCopyJSON(obj)
	pruned = pruning.PruneWithOptions(stored, c.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	if err := schemaobjectmeta.Coerce(nil, stored, c.structural, true, false); err != nil {
		errs = append(errs, err)
	}
	structuraldefaulting.Default(stored, c.structural)
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, stored, c.validator)...)
	errs = append(errs, schemaobjectmeta.Validate(context.Background(), nil, stored, c.structural, false)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, c.structural, stored)...)
	if c.rules != nil {
		ruleErrs, _ := c.rules.Validate(context.Background(), nil, c.structural, stored, nil, celconfig.RuntimeCELCostBudget)
		errs = append(errs, ruleErrs...)
	}
	return stored, pruned, errs
}

// wire is obj as JSON on the wire, decoded as the API server decodes it
// (integers as int64).
func wire(t *testing.T, obj any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := utiljson.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// fixture reads a YAML fixture as the API server would decode it.
func fixture(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := utiljson.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

var transition = metav1.NewTime(time.Date(2026, 8, 1, 10, 0, 1, 0, time.UTC))

// fullClaim is a claim with every field kipam's types model set, as kipam
// leaves it once the address is allocated.
func fullClaim() *capiipam.IPAddressClaim {
	return &capiipam.IPAddressClaim{
		TypeMeta: metav1.TypeMeta{APIVersion: capiipam.GroupVersion.String(), Kind: "IPAddressClaim"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "worker-0-eth0-0", Namespace: "tenant-a",
			Labels: map[string]string{"cluster.x-k8s.io/cluster-name": "workload-1"},
		},
		Spec: capiipam.IPAddressClaimSpec{
			ClusterName: "workload-1",
			PoolRef:     capiipam.IPPoolReference{APIGroup: "ipam.kipam.dev", Kind: "IPPool", Name: "tenant-a"},
		},
		Status: capiipam.IPAddressClaimStatus{
			Conditions: []metav1.Condition{{
				Type: capiipam.ReadyCondition, Status: metav1.ConditionTrue, ObservedGeneration: 1,
				LastTransitionTime: transition, Reason: "Allocated", Message: "10.10.0.10/16 from pool tenant-a",
			}},
			AddressRef: capiipam.IPAddressReference{Name: "worker-0-eth0-0"},
		},
	}
}

// fullAddress is an address with every field set, as kipam creates it.
func fullAddress() *capiipam.IPAddress {
	return &capiipam.IPAddress{
		TypeMeta:   metav1.TypeMeta{APIVersion: capiipam.GroupVersion.String(), Kind: "IPAddress"},
		ObjectMeta: metav1.ObjectMeta{Name: "worker-0-eth0-0", Namespace: "tenant-a"},
		Spec: capiipam.IPAddressSpec{
			ClaimRef: capiipam.IPAddressClaimReference{Name: "worker-0-eth0-0"},
			PoolRef:  capiipam.IPPoolReference{APIGroup: "ipam.kipam.dev", Kind: "IPPool", Name: "tenant-a"},
			Address:  "10.10.0.10",
			Prefix:   ptr.To[int32](16),
			Gateway:  "10.10.0.1",
		},
	}
}

// What kipam writes is admitted as it is: nothing pruned, nothing
// defaulted, no error. Every case sets each field at most once, so a field
// whose JSON name the schema lacks shows up as pruned.
func TestWhatKipamWritesIsAdmittedUnchanged(t *testing.T) {
	claims, addresses := loadCRD(t, claimCRD), loadCRD(t, addressCRD)
	newClaim := func() *capiipam.IPAddressClaim {
		c := fullClaim()
		c.Status = capiipam.IPAddressClaimStatus{}
		return c
	}
	cases := []struct {
		name string
		crd  *crd
		obj  any
	}{
		{"a claim with its address", claims, fullClaim()},
		{"a claim as created, no status", claims, newClaim()},
		{"a claim without clusterName", claims, func() any { c := newClaim(); c.Spec.ClusterName = ""; return c }()},
		{"a claim that failed", claims, func() any {
			c := fullClaim()
			c.Status.AddressRef = capiipam.IPAddressReference{}
			c.Status.Conditions[0].Status, c.Status.Conditions[0].Reason = metav1.ConditionFalse, capiipam.ReasonPoolExhausted
			return c
		}()},
		{"a claim with conditions of other types", claims, func() any {
			c := fullClaim()
			c.Status.Conditions = append(c.Status.Conditions, metav1.Condition{Type: "ipam.kipam.dev/Fenced",
				Status: metav1.ConditionUnknown, LastTransitionTime: transition, Reason: "Waiting"})
			return c
		}()},
		{"an IPv4 address", addresses, fullAddress()},
		{"an address with no gateway", addresses, func() any { a := fullAddress(); a.Spec.Gateway = ""; return a }()},
		{"an IPv6 address of 39 characters, /128", addresses, func() any {
			a := fullAddress()
			a.Spec.Address, a.Spec.Prefix, a.Spec.Gateway = "2001:0db8:0000:0000:0000:ff00:0042:8329", ptr.To[int32](128), "2001:db8::1"
			return a
		}()},
		{"an address on a /0", addresses, func() any { a := fullAddress(); a.Spec.Prefix = ptr.To[int32](0); return a }()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			sent := wire(t, tc.obj)
			stored, pruned, errs := tc.crd.admit(sent)
			g.Expect(errs).To(BeEmpty())
			g.Expect(pruned).To(BeEmpty(), "fields the CRD does not know")
			g.Expect(stored).To(Equal(sent), "the API server would change what kipam wrote")
		})
	}
}

// The validators are not vacuous: what kipam must never write, the CRD
// denies, at the field.
func TestWhatTheCRDDenies(t *testing.T) {
	claims, addresses := loadCRD(t, claimCRD), loadCRD(t, addressCRD)
	cases := []struct {
		name string
		crd  *crd
		obj  any
		want string
	}{
		{"a pool reference without apiGroup", claims, func() any { c := fullClaim(); c.Spec.PoolRef.APIGroup = ""; return c }(),
			"spec.poolRef.apiGroup: Required value"},
		{"a pool name in upper case", claims, func() any { c := fullClaim(); c.Spec.PoolRef.Name = "Tenant-A"; return c }(),
			"spec.poolRef.name: Invalid value"},
		{"a clusterName of 64 characters", claims, func() any { c := fullClaim(); c.Spec.ClusterName = strings.Repeat("c", 64); return c }(),
			"spec.clusterName: Too long"},
		{"a condition without a reason", claims, func() any { c := fullClaim(); c.Status.Conditions[0].Reason = ""; return c }(),
			"status.conditions[0].reason: Invalid value: \"\": status.conditions[0].reason in body should be at least 1 chars long"},
		{"two Ready conditions", claims, func() any {
			c := fullClaim()
			c.Status.Conditions = append(c.Status.Conditions, c.Status.Conditions[0])
			return c
		}(), `status.conditions[1]: Duplicate value: {"type":"Ready"}`},
		{"an address without prefix", addresses, func() any { a := fullAddress(); a.Spec.Prefix = nil; return a }(),
			"spec.prefix: Required value"},
		{"a prefix of 129", addresses, func() any { a := fullAddress(); a.Spec.Prefix = ptr.To[int32](129); return a }(),
			"spec.prefix: Invalid value"},
		{"an address with its prefix length", addresses, func() any {
			a := fullAddress()
			a.Spec.Address = "2001:0db8:0000:0000:0000:ff00:0042:8329/64"
			return a
		}(), "spec.address: Too long"},
		{"an address without a claim (omitzero drops the empty reference)", addresses, func() any { a := fullAddress(); a.Spec.ClaimRef.Name = ""; return a }(),
			"spec.claimRef: Required value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			_, _, errs := tc.crd.admit(wire(t, tc.obj))
			g.Expect(errs.ToAggregate()).To(MatchError(ContainSubstring(tc.want)))
		})
	}
}

// schemaPaths returns the paths of every property under s, below prefix,
// with "[]" for the items of a list.
func schemaPaths(s apiextensionsv1.JSONSchemaProps, prefix string, into map[string]bool) {
	if s.Items != nil && s.Items.Schema != nil {
		schemaPaths(*s.Items.Schema, prefix+"[]", into)
	}
	for name, p := range s.Properties {
		path := strings.TrimPrefix(prefix+"."+name, ".")
		into[path] = true
		schemaPaths(p, path, into)
	}
}

// objectPaths returns the paths of every field set in a decoded object.
func objectPaths(x any, prefix string, into map[string]bool) {
	switch x := x.(type) {
	case map[string]any:
		for name, v := range x {
			path := strings.TrimPrefix(prefix+"."+name, ".")
			into[path] = true
			objectPaths(v, path, into)
		}
	case []any:
		for _, v := range x {
			objectPaths(v, prefix+"[]", into)
		}
	}
}

// Every field of the v1beta2 schema is either modelled, and set by the full
// object, or listed in notModelled: a newer Cluster API whose CRD adds a
// field, or renames one, fails here until someone decides about it.
func TestEveryFieldOfTheSchemaIsDecidedOn(t *testing.T) {
	for file, obj := range map[string]any{claimCRD: fullClaim(), addressCRD: fullAddress()} {
		t.Run(file, func(t *testing.T) {
			c := loadCRD(t, file)
			inSchema, written := map[string]bool{}, map[string]bool{}
			schemaPaths(c.schema, "", inSchema)
			objectPaths(wire(t, obj), "", written)
			var missing, unknown []string
			for path := range inSchema {
				left := slices.ContainsFunc(notModelled[file], func(p string) bool { return path == p || strings.HasPrefix(path, p+".") })
				if !written[path] && !left && !strings.HasPrefix(path, "metadata") {
					missing = append(missing, path)
				}
				if written[path] && left {
					unknown = append(unknown, path+" (listed as not modelled)")
				}
			}
			for path := range written {
				if !inSchema[path] && !strings.HasPrefix(path, "metadata.") {
					unknown = append(unknown, path)
				}
			}
			slices.Sort(missing)
			slices.Sort(unknown)
			g := NewWithT(t)
			g.Expect(missing).To(BeEmpty(), "in the schema, neither modelled nor listed in notModelled")
			g.Expect(unknown).To(BeEmpty(), "written, but not a field of the schema")
		})
	}
}

// A full object as Cluster API and a provider write it, fields kipam does not
// model included, decodes into kipam's types and encodes back with every
// field kipam models unchanged and only the unmodelled ones gone.
func TestFullObjectsSurviveTheRoundTrip(t *testing.T) {
	type object interface{ runtime.Object }
	cases := []struct {
		crd, fixture string
		into         object
		check        func(g Gomega, obj object)
	}{
		{claimCRD, claimFixture, &capiipam.IPAddressClaim{}, func(g Gomega, obj object) {
			c := obj.(*capiipam.IPAddressClaim)
			g.Expect(c.Spec.ClusterName).To(Equal("workload-1"))
			g.Expect(c.Spec.PoolRef).To(Equal(capiipam.IPPoolReference{APIGroup: "ipam.kipam.dev", Kind: "IPPool", Name: "tenant-a"}))
			g.Expect(c.Status.AddressRef.Name).To(Equal("worker-0-eth0-0"))
			g.Expect(c.Status.Conditions).To(HaveLen(1))
			g.Expect(c.Status.Conditions[0].Type).To(Equal(capiipam.ReadyCondition))
			g.Expect(c.Status.Conditions[0].ObservedGeneration).To(Equal(int64(1)))
		}},
		{addressCRD, addressFixture, &capiipam.IPAddress{}, func(g Gomega, obj object) {
			a := obj.(*capiipam.IPAddress)
			g.Expect(a.Spec).To(Equal(capiipam.IPAddressSpec{
				ClaimRef: capiipam.IPAddressClaimReference{Name: "worker-0-eth0-0"},
				PoolRef:  capiipam.IPPoolReference{APIGroup: "ipam.kipam.dev", Kind: "IPPool", Name: "tenant-a"},
				Address:  "10.10.0.10", Prefix: ptr.To[int32](16), Gateway: "10.10.0.1",
			}))
			g.Expect(a.OwnerReferences).To(HaveLen(2))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			g := NewWithT(t)
			c := loadCRD(t, tc.crd)
			example := fixture(t, tc.fixture)

			// The fixture is a valid object of Cluster API's, every field of it
			// known to the schema.
			stored, pruned, errs := c.admit(example)
			g.Expect(errs).To(BeEmpty())
			g.Expect(pruned).To(BeEmpty())
			g.Expect(stored).To(Equal(example))
			all, inSchema := map[string]bool{}, map[string]bool{}
			objectPaths(example, "", all)
			schemaPaths(c.schema, "", inSchema)
			for path := range inSchema {
				if !strings.HasPrefix(path, "metadata") {
					g.Expect(all).To(HaveKey(path), "the fixture should set every field of the schema")
				}
			}

			raw, err := json.Marshal(example)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(json.Unmarshal(raw, tc.into)).To(Succeed())
			tc.check(g, tc.into)

			want := runtime.DeepCopyJSON(example)
			for _, path := range notModelled[tc.crd] {
				parts := strings.Split(path, ".")
				parent := want
				for _, p := range parts[:len(parts)-1] {
					parent = parent[p].(map[string]any)
				}
				g.Expect(parent).To(HaveKey(parts[len(parts)-1]), "the fixture should set %s", path)
				delete(parent, parts[len(parts)-1])
			}
			g.Expect(wire(t, tc.into)).To(Equal(want))
		})
	}
}

// The scheme knows both kinds and their lists under the contract's group
// and version, as a controller-runtime client and cache need them.
func TestSchemeRegistersTheContractKinds(t *testing.T) {
	g := NewWithT(t)
	scheme := runtime.NewScheme()
	g.Expect(capiipam.AddToScheme(scheme)).To(Succeed())
	for obj, kind := range map[runtime.Object]string{
		&capiipam.IPAddressClaim{}: "IPAddressClaim", &capiipam.IPAddressClaimList{}: "IPAddressClaimList",
		&capiipam.IPAddress{}: "IPAddress", &capiipam.IPAddressList{}: "IPAddressList",
	} {
		gvks, _, err := scheme.ObjectKinds(obj)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(gvks).To(ConsistOf(capiipam.GroupVersion.WithKind(kind)))
	}
}
