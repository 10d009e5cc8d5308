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
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

var (
	v4v6 = []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv4, ipamv1alpha1.IPv6}
	v6v4 = []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv6, ipamv1alpha1.IPv4}
)

// TestValidateFamilies holds kipam's own rules for the family fields, which
// no CRD rule mirrors, to a table: the field denied and why.
func TestValidateFamilies(t *testing.T) {
	req, pref := ipamv1alpha1.RequireDualStack, ipamv1alpha1.PreferDualStack
	cases := []struct {
		name string
		spec ipamv1alpha1.IPClaimSpec
		// want is "field: type" of each error, sorted.
		want []string
	}{
		{name: "single-stack by default", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", IPFamily: ipamv1alpha1.IPv4}},
		{name: "SingleStack said", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", IPFamilyPolicy: ipamv1alpha1.SingleStack, CIDR: "10.0.0.0/24"}},
		{name: "RequireDualStack from two pools", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, Pools: []string{"a", "b"},
			PrefixLengths: []int32{32, 128}}},
		{name: "PreferDualStack by selector, IPv6 primary", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: pref, IPFamilies: v6v4,
			PoolSelector: selector(), PrefixLengths: []int32{64, 24}}},

		{name: "ipFamilies on a single-stack claim", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", IPFamilies: v4v6},
			want: []string{"spec.ipFamilies: Forbidden"}},
		{name: "pools without a policy", spec: ipamv1alpha1.IPClaimSpec{Pools: []string{"a", "b"}, PrefixLengths: []int32{24, 64}},
			want: []string{"spec.pools: Forbidden", "spec.prefixLengths: Forbidden"}},
		{name: "cidrs on a SingleStack claim", spec: ipamv1alpha1.IPClaimSpec{Pool: "p", IPFamilyPolicy: ipamv1alpha1.SingleStack, CIDRs: []string{"10.0.0.0/24"}},
			want: []string{"spec.cidrs: Forbidden"}},
		{name: "RequireDualStack with one family", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6[:1], Pools: []string{"a"}},
			want: []string{"spec.ipFamilies: Invalid value"}},
		{name: "PreferDualStack without families", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: pref, PoolSelector: selector()},
			want: []string{"spec.ipFamilies: Required value"}},
		{name: "a family twice", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv6, ipamv1alpha1.IPv6},
			Pools: []string{"a", "b"}}, want: []string{"spec.ipFamilies[1]: Duplicate value"}},
		{name: "a pool twice", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, Pools: []string{"a", "a"}},
			want: []string{"spec.pools[1]: Duplicate value"}},
		{name: "one pool for two families", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, Pools: []string{"a"}},
			want: []string{"spec.pools: Invalid value"}},
		{name: "ipFamily and pool with dual-stack", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, Pool: "a", IPFamily: ipamv1alpha1.IPv4},
			want: []string{"spec.ipFamily: Forbidden", "spec.pool: Forbidden"}},
		{name: "a specific cidr with dual-stack", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, Pools: []string{"a", "b"},
			CIDR: "10.0.0.0/24"}, want: []string{"spec.cidr: Forbidden"}},
		{name: "a restore: cidrs, and cidr its first", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, Pools: []string{"a", "b"},
			CIDR: "10.0.0.0/24", CIDRs: []string{"10.0.0.0/24", "2001:db8::/64"}}},
		{name: "a restore of a claim that fell back to one family", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: pref, IPFamilies: v4v6, Pools: []string{"a", "b"},
			CIDRs: []string{"2001:db8::/64"}}},
		{name: "a restore in the wrong order", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: pref, IPFamilies: v4v6, Pools: []string{"a", "b"},
			CIDRs: []string{"2001:db8::/64", "10.0.0.0/24"}}, want: []string{"spec.cidrs[0]: Invalid value", "spec.cidrs[1]: Invalid value"}},
		{name: "a RequireDualStack restore of one family", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, Pools: []string{"a", "b"},
			CIDRs: []string{"10.0.0.0/24"}}, want: []string{"spec.cidrs: Invalid value"}},
		{name: "a restore of another length than prefixLengths", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, Pools: []string{"a", "b"},
			PrefixLengths: []int32{28, 64}, CIDRs: []string{"10.0.0.0/24", "2001:db8::/64"}}, want: []string{"spec.cidrs[0]: Invalid value"}},
		{name: "a cidr that is not cidrs[0]", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, Pools: []string{"a", "b"},
			CIDR: "10.0.1.0/24", CIDRs: []string{"10.0.0.0/24", "2001:db8::/64"}}, want: []string{"spec.cidr: Forbidden"}},
		{name: "prefixLength with dual-stack", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, Pools: []string{"a", "b"},
			PrefixLength: ptr.To[int32](24)}, want: []string{"spec.prefixLength: Forbidden"}},
		{name: "one length for two families", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, Pools: []string{"a", "b"},
			PrefixLengths: []int32{24}}, want: []string{"spec.prefixLengths: Invalid value"}},
		{name: "a /64 of IPv4", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v6v4, Pools: []string{"a", "b"},
			PrefixLengths: []int32{64, 64}}, want: []string{"spec.prefixLengths[1]: Invalid value"}},
		{name: "Wait with PreferDualStack", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: pref, IPFamilies: v4v6, PoolSelector: selector(),
			WhenExhausted: ipamv1alpha1.Wait}, want: []string{"spec.whenExhausted: Forbidden"}},
		{name: "Wait with RequireDualStack", spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: req, IPFamilies: v4v6, PoolSelector: selector(),
			WhenExhausted: ipamv1alpha1.Wait}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := ValidateFamilies(claimWith(tc.spec))
			got := make([]string, 0, len(errs))
			for _, e := range errs {
				got = append(got, e.Field+": "+e.Type.String())
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("denied %q, want %q:\n%s", got, tc.want, strings.Join(errorLines(errs), "\n"))
			}
			// Each denial is one a person can act on.
			for _, e := range errs {
				if e.Type != field.ErrorTypeDuplicate && e.Detail == "" {
					t.Errorf("%s says nothing of why", e.Field)
				}
			}
		})
	}
}
