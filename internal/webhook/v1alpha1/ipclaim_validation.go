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
	"net/netip"
	"regexp"
	"slices"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// The messages of the IPClaim CRD's rules, word for word (api/v1alpha1,
// ipclaim_types.go); TestValidateClaimCreateMatchesCRD holds them equal.
const (
	msgCanonicalCIDR = "must be a canonical CIDR such as 10.0.0.0/24 or 2001:db8::/64: " +
		"no address bits set past the prefix length, IPv6 in lower-case compressed form"
	msgPoolXorSelector   = "exactly one of pool, pools or poolSelector must be set"
	msgFamilyRequired    = "ipFamily (ipFamilies for a dual-stack claim) is required with poolSelector, to choose between IPv4 and IPv6 pools"
	msgCIDRFamily        = "cidr is not of the family given by ipFamily"
	msgIPv4PrefixLength  = "prefixLength must be at most 32 for IPv4"
	msgPrefixLengthMatch = "prefixLength must equal the prefix length of cidr when both are set"
)

// ValidateClaimCreate mirrors the IPClaim CRD's schema and CEL rules that can
// deny a create, with the API server's field paths and messages, so that the
// allocating webhook can deny a claim before it commits anything for it. It
// also checks spec.poolSelector, which the CRD leaves to kipam.
//
// A field set to "" reads as absent here, as it does in the decoded claim;
// the API server still sees it unless the webhook's patch removes it
// (admission.DefaulterRemoveUnknownOrOmitableFields).
func ValidateClaimCreate(claim *ipamv1alpha1.IPClaim) field.ErrorList {
	spec := &claim.Spec
	path := field.NewPath("spec")
	errs := validateClaimSchema(spec, path)
	// Like the API server, which runs no CEL rule once the OpenAPI schema has
	// found a wrong type, value or length: its rules may assume them.
	if !slices.ContainsFunc(errs, blocksRules) {
		errs = append(errs, validateClaimRules(spec, path)...)
	}
	if spec.PoolSelector != nil {
		errs = append(errs, validatePoolSelector(spec.PoolSelector, path.Child("poolSelector"))...)
	}
	return errs
}

// stickyKey is spec.stickyKey's pattern in the schema.
var stickyKey = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// validateClaimSchema mirrors the OpenAPI schema's field markers.
func validateClaimSchema(spec *ipamv1alpha1.IPClaimSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if utf8.RuneCountInString(spec.Pool) > 253 {
		errs = append(errs, field.TooLong(path.Child("pool"), "", 253))
	}
	if spec.IPFamily != "" && spec.IPFamily != ipamv1alpha1.IPv4 && spec.IPFamily != ipamv1alpha1.IPv6 {
		errs = append(errs, field.NotSupported(path.Child("ipFamily"), string(spec.IPFamily),
			[]ipamv1alpha1.IPFamily{ipamv1alpha1.IPv4, ipamv1alpha1.IPv6}))
	}
	if pl := spec.PrefixLength; pl != nil && *pl < 0 {
		errs = append(errs, belowMinimum(path.Child("prefixLength"), int64(*pl), 0))
	} else if pl != nil && *pl > 128 {
		errs = append(errs, aboveMaximum(path.Child("prefixLength"), int64(*pl), 128))
	}
	if utf8.RuneCountInString(spec.CIDR) > 43 {
		errs = append(errs, field.TooLong(path.Child("cidr"), "", 43))
	}
	if ttl := spec.TTLSeconds; ttl != nil && *ttl < 1 {
		errs = append(errs, belowMinimum(path.Child("ttlSeconds"), *ttl, 1))
	}
	if utf8.RuneCountInString(spec.StickyKey) > 253 {
		errs = append(errs, field.TooLong(path.Child("stickyKey"), "", 253))
	} else if spec.StickyKey != "" && !stickyKey.MatchString(spec.StickyKey) {
		errs = append(errs, field.Invalid(path.Child("stickyKey"), spec.StickyKey, path.Child("stickyKey").String()+" in body should match '"+stickyKey.String()+"'"))
	}
	families := []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv4, ipamv1alpha1.IPv6}
	if spec.IPFamilyPolicy != "" && !slices.Contains([]ipamv1alpha1.IPFamilyPolicy{ipamv1alpha1.SingleStack, ipamv1alpha1.PreferDualStack, ipamv1alpha1.RequireDualStack}, spec.IPFamilyPolicy) {
		errs = append(errs, field.NotSupported(path.Child("ipFamilyPolicy"), string(spec.IPFamilyPolicy),
			[]ipamv1alpha1.IPFamilyPolicy{ipamv1alpha1.SingleStack, ipamv1alpha1.PreferDualStack, ipamv1alpha1.RequireDualStack}))
	}
	if n := len(spec.IPFamilies); n > 2 {
		errs = append(errs, field.TooMany(path.Child("ipFamilies"), n, 2))
	} else {
		for i, f := range spec.IPFamilies {
			if !slices.Contains(families, f) {
				errs = append(errs, field.NotSupported(path.Child("ipFamilies").Index(i), string(f), families))
			}
		}
	}
	if n := len(spec.Pools); n > 2 {
		errs = append(errs, field.TooMany(path.Child("pools"), n, 2))
	} else {
		for i, p := range spec.Pools {
			if utf8.RuneCountInString(p) > 253 {
				errs = append(errs, field.TooLong(path.Child("pools").Index(i), "", 253))
			}
		}
	}
	if n := len(spec.PrefixLengths); n > 2 {
		errs = append(errs, field.TooMany(path.Child("prefixLengths"), n, 2))
	} else {
		for i, pl := range spec.PrefixLengths {
			if p := path.Child("prefixLengths").Index(i); pl < 0 {
				errs = append(errs, belowMinimum(p, int64(pl), 0))
			} else if pl > 128 {
				errs = append(errs, aboveMaximum(p, int64(pl), 128))
			}
		}
	}
	if n := len(spec.CIDRs); n > 2 {
		errs = append(errs, field.TooMany(path.Child("cidrs"), n, 2))
	} else {
		for i, c := range spec.CIDRs {
			if utf8.RuneCountInString(c) > 43 {
				errs = append(errs, field.TooLong(path.Child("cidrs").Index(i), "", 43))
			}
		}
	}
	if spec.WhenExhausted != "" && spec.WhenExhausted != ipamv1alpha1.Deny && spec.WhenExhausted != ipamv1alpha1.Wait {
		errs = append(errs, field.NotSupported(path.Child("whenExhausted"), string(spec.WhenExhausted),
			[]ipamv1alpha1.ExhaustedPolicy{ipamv1alpha1.Deny, ipamv1alpha1.Wait}))
	}
	return errs
}

// belowMinimum and aboveMaximum say what the OpenAPI validator says of an
// integer outside a schema's minimum or maximum.
func belowMinimum(path *field.Path, v, minimum int64) *field.Error {
	return field.Invalid(path, v, fmt.Sprintf("%s in body should be greater than or equal to %d", path, minimum))
}

func aboveMaximum(path *field.Path, v, maximum int64) *field.Error {
	return field.Invalid(path, v, fmt.Sprintf("%s in body should be less than or equal to %d", path, maximum))
}

// blocksRules reports whether the API server skips the CEL rules after a
// schema error of this kind (apiextensions-apiserver's hasBlockingErr).
func blocksRules(err *field.Error) bool {
	switch err.Type {
	case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong,
		field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
		return true
	}
	return false
}

// validateClaimRules mirrors the CEL rules that apply on create; the rules
// naming oldSelf only run on update.
func validateClaimRules(spec *ipamv1alpha1.IPClaimSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	// A rule's fieldPath error carries no value, like the API server's.
	rule := func(child, message string) {
		errs = append(errs, field.Invalid(path.Child(child), field.OmitValueType{}, message))
	}
	prefix, isCIDR := celCIDR(spec.CIDR)
	if spec.CIDR != "" && (!isCIDR || prefix.Masked().String() != spec.CIDR) {
		errs = append(errs, field.Invalid(path.Child("cidr"), spec.CIDR, msgCanonicalCIDR))
	}
	for i, c := range spec.CIDRs {
		// The items' rule: its error names the item and carries its value.
		if p, ok := celCIDR(c); !ok || p.Masked().String() != c {
			errs = append(errs, field.Invalid(path.Child("cidrs").Index(i), c, msgCanonicalCIDR))
		}
	}
	if n := btoi(spec.Pool != "") + btoi(len(spec.Pools) > 0) + btoi(spec.PoolSelector != nil); n != 1 {
		rule("pool", msgPoolXorSelector)
	}
	if spec.PoolSelector != nil && spec.IPFamily == "" && len(spec.IPFamilies) == 0 && spec.CIDR == "" {
		rule("ipFamily", msgFamilyRequired)
	}
	if spec.IPFamily != "" && isCIDR && prefix.Addr().Is4() != (spec.IPFamily == ipamv1alpha1.IPv4) {
		rule("cidr", msgCIDRFamily)
	}
	if spec.PrefixLength != nil && spec.IPFamily != "" && spec.IPFamily != ipamv1alpha1.IPv6 && *spec.PrefixLength > 32 {
		rule("prefixLength", msgIPv4PrefixLength)
	}
	if spec.PrefixLength != nil && isCIDR && int(*spec.PrefixLength) != prefix.Bits() {
		rule("prefixLength", msgPrefixLengthMatch)
	}
	return errs
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// celCIDR parses s as the CEL cidr library's isCIDR and cidr() do: any
// prefix netip.ParsePrefix accepts, canonical or not, except an IPv4-mapped
// IPv6 one. It reports false for an empty s.
func celCIDR(s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	return p, err == nil && !p.Addr().Is4In6()
}

// validatePoolSelector denies a selector that kipam could not evaluate when
// it looks for a pool. The CRD checks only its shape.
func validatePoolSelector(sel *metav1.LabelSelector, path *field.Path) field.ErrorList {
	errs := metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, path)
	if len(errs) > 0 {
		return errs
	}
	if _, err := metav1.LabelSelectorAsSelector(sel); err != nil {
		return field.ErrorList{field.Invalid(path, sel, err.Error())}
	}
	return nil
}
