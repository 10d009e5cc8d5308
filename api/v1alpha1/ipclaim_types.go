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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPFamily is an IP address family.
// +kubebuilder:validation:Enum=IPv4;IPv6
type IPFamily string

const (
	// IPv4 is the IPv4 family.
	IPv4 IPFamily = "IPv4"
	// IPv6 is the IPv6 family.
	IPv6 IPFamily = "IPv6"
)

// IPFamilyPolicy says how many families a claim asks for, after the
// Service API's spec.ipFamilyPolicy.
// +kubebuilder:validation:Enum=SingleStack;PreferDualStack;RequireDualStack
type IPFamilyPolicy string

const (
	// SingleStack asks for one prefix, of spec.ipFamily (the default).
	SingleStack IPFamilyPolicy = "SingleStack"
	// PreferDualStack asks for one prefix of each family of spec.ipFamilies
	// and settles for the one that fits when the other does not.
	PreferDualStack IPFamilyPolicy = "PreferDualStack"
	// RequireDualStack asks for one prefix of each family of
	// spec.ipFamilies, both or neither.
	RequireDualStack IPFamilyPolicy = "RequireDualStack"
)

// ExhaustedPolicy says what happens to a claim that its pool cannot satisfy.
// +kubebuilder:validation:Enum=Deny;Wait
type ExhaustedPolicy string

const (
	// Deny rejects the claim at creation with an error naming the pool, the
	// requested size and the largest free prefix.
	Deny ExhaustedPolicy = "Deny"
	// Wait creates the claim Pending; it is bound, in creation order, as soon
	// as space frees up.
	Wait ExhaustedPolicy = "Wait"
)

// IPClaimSpec is a request for one prefix from a pool.
// +kubebuilder:validation:XValidation:rule="[has(self.pool), has(self.pools), has(self.poolSelector)].exists_one(x, x)",message="exactly one of pool, pools or poolSelector must be set",fieldPath=.pool
// +kubebuilder:validation:XValidation:rule="!has(self.poolSelector) || has(self.ipFamily) || has(self.ipFamilies) || has(self.cidr)",message="ipFamily (ipFamilies for a dual-stack claim) is required with poolSelector, to choose between IPv4 and IPv6 pools",fieldPath=.ipFamily
// +kubebuilder:validation:XValidation:rule="!has(self.ipFamily) || !has(self.cidr) || !isCIDR(self.cidr) || (cidr(self.cidr).ip().family() == 4) == (self.ipFamily == 'IPv4')",message="cidr is not of the family given by ipFamily",fieldPath=.cidr
// +kubebuilder:validation:XValidation:rule="!has(self.prefixLength) || !has(self.ipFamily) || self.ipFamily == 'IPv6' || self.prefixLength <= 32",message="prefixLength must be at most 32 for IPv4",fieldPath=.prefixLength
// +kubebuilder:validation:XValidation:rule="!has(self.prefixLength) || !has(self.cidr) || !isCIDR(self.cidr) || self.prefixLength == cidr(self.cidr).prefixLength()",message="prefixLength must equal the prefix length of cidr when both are set",fieldPath=.prefixLength
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.cidr) || (has(self.cidr) && self.cidr == oldSelf.cidr)",message="cidr is immutable once set",fieldPath=.cidr
// +kubebuilder:validation:XValidation:rule="has(self.pool) == has(oldSelf.pool) && (!has(self.pool) || self.pool == oldSelf.pool)",message="pool is immutable",fieldPath=.pool
// +kubebuilder:validation:XValidation:rule="has(self.poolSelector) == has(oldSelf.poolSelector) && (!has(self.poolSelector) || self.poolSelector == oldSelf.poolSelector)",message="poolSelector is immutable",fieldPath=.poolSelector
// +kubebuilder:validation:XValidation:rule="has(self.ipFamily) == has(oldSelf.ipFamily) && (!has(self.ipFamily) || self.ipFamily == oldSelf.ipFamily)",message="ipFamily is immutable",fieldPath=.ipFamily
// +kubebuilder:validation:XValidation:rule="has(self.prefixLength) == has(oldSelf.prefixLength) && (!has(self.prefixLength) || self.prefixLength == oldSelf.prefixLength)",message="prefixLength is immutable",fieldPath=.prefixLength
// +kubebuilder:validation:XValidation:rule="has(self.ipFamilyPolicy) == has(oldSelf.ipFamilyPolicy) && (!has(self.ipFamilyPolicy) || self.ipFamilyPolicy == oldSelf.ipFamilyPolicy)",message="ipFamilyPolicy is immutable",fieldPath=.ipFamilyPolicy
// +kubebuilder:validation:XValidation:rule="has(self.ipFamilies) == has(oldSelf.ipFamilies) && (!has(self.ipFamilies) || self.ipFamilies == oldSelf.ipFamilies)",message="ipFamilies is immutable",fieldPath=.ipFamilies
// +kubebuilder:validation:XValidation:rule="has(self.pools) == has(oldSelf.pools) && (!has(self.pools) || self.pools == oldSelf.pools)",message="pools is immutable",fieldPath=.pools
// +kubebuilder:validation:XValidation:rule="has(self.prefixLengths) == has(oldSelf.prefixLengths) && (!has(self.prefixLengths) || self.prefixLengths == oldSelf.prefixLengths)",message="prefixLengths is immutable",fieldPath=.prefixLengths
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.cidrs) || (has(self.cidrs) && self.cidrs == oldSelf.cidrs)",message="cidrs is written by kipam when it allocates the claim and is immutable once set",fieldPath=.cidrs
// +kubebuilder:validation:XValidation:rule="has(self.stickyKey) == has(oldSelf.stickyKey) && (!has(self.stickyKey) || self.stickyKey == oldSelf.stickyKey)",message="stickyKey is immutable",fieldPath=.stickyKey
type IPClaimSpec struct {
	// pool is the name of the IPPool to allocate from. Exactly one of pool,
	// pools and poolSelector is set. Immutable.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Pool string `json:"pool,omitempty"`

	// poolSelector selects candidate IPPools by label; together with
	// ipFamily (each family of ipFamilies for a dual-stack claim), kipam
	// allocates from the first matching pool of the family, in name order,
	// that has room and admits the claim's namespace. Immutable.
	// +optional
	PoolSelector *metav1.LabelSelector `json:"poolSelector,omitempty"`

	// ipFamily is IPv4 or IPv6. Required with poolSelector (unless cidr is
	// given); with pool it is checked against the pool's family. Immutable.
	// +optional
	IPFamily IPFamily `json:"ipFamily,omitempty"`

	// prefixLength is the length of the prefix to allocate, e.g. 32 for one
	// IPv4 address or 24 for a /24. Absent: the pool's defaultPrefixLength.
	// Immutable.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	PrefixLength *int32 `json:"prefixLength,omitempty"`

	// cidr is the allocated prefix. kipam writes it when the claim is
	// created; set it yourself to ask for that exact prefix (a restored
	// backup does this). Canonical CIDR notation. Immutable once set.
	// +optional
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && string(cidr(self).masked()) == self",message="must be a canonical CIDR such as 10.0.0.0/24 or 2001:db8::/64: no address bits set past the prefix length, IPv6 in lower-case compressed form"
	CIDR string `json:"cidr,omitempty"`

	// ipFamilyPolicy is SingleStack (the default: one prefix, of ipFamily),
	// PreferDualStack or RequireDualStack (one prefix of each family of
	// ipFamilies, allocated together when the claim is created: both or,
	// for RequireDualStack, neither; PreferDualStack settles for the family
	// that fits and says so in the DualStack condition). Immutable.
	// +optional
	IPFamilyPolicy IPFamilyPolicy `json:"ipFamilyPolicy,omitempty"`

	// ipFamilies are the families of a dual-stack claim, IPv4 and IPv6,
	// primary first: spec.cidr and spec.cidrs[0] are of the primary family,
	// or of the one family held after a PreferDualStack fallback.
	// Only with ipFamilyPolicy PreferDualStack or RequireDualStack (a
	// single-stack claim uses ipFamily). Immutable.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=2
	IPFamilies []IPFamily `json:"ipFamilies,omitempty"`

	// pools names one pool per family of a dual-stack claim, in the order
	// of ipFamilies. Exactly one of pool, pools and poolSelector is set; a
	// dual-stack claim by selector takes, for each family, the first
	// matching pool of that family that has room. Immutable.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:items:MaxLength=253
	Pools []string `json:"pools,omitempty"`

	// prefixLengths are the lengths of a dual-stack claim's prefixes, one
	// per family in the order of ipFamilies. Absent: each pool's
	// defaultPrefixLength. Immutable.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:items:Minimum=0
	// +kubebuilder:validation:items:Maximum=128
	PrefixLengths []int32 `json:"prefixLengths,omitempty"`

	// cidrs are a dual-stack claim's prefixes, primary first (cidrs[0] is
	// spec.cidr), written by kipam when the claim is created (both
	// families, or one when PreferDualStack fell back), or when it binds a
	// RequireDualStack claim that waited (both). A claim created with them
	// (a restore from a backup) gets exactly these prefixes, or is denied.
	// Immutable once set.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self) && string(cidr(self).masked()) == self",message="must be a canonical CIDR such as 10.0.0.0/24 or 2001:db8::/64: no address bits set past the prefix length, IPv6 in lower-case compressed form"
	CIDRs []string `json:"cidrs,omitempty"`

	// ttlSeconds is the claim's lifetime, counted from its creation (time
	// spent waiting for space counts too). At expiry kipam deletes the
	// claim (event Expired), which releases its prefix; a claim still
	// waiting then is deleted without ever being bound. Raise it before
	// expiry to renew. Absent: the claim lives until deleted.
	// +optional
	// +kubebuilder:validation:Minimum=1
	TTLSeconds *int64 `json:"ttlSeconds,omitempty"`

	// whenExhausted is what happens when the pool has no room: Deny rejects
	// the claim at creation; Wait creates it Pending and binds it as soon as
	// space frees up, after the older waiting claims of its namespace. While
	// a claim of the namespace waits on the same pools, a new claim of the
	// namespace waits behind it (Wait) or is denied (Deny). A claim that no
	// release could ever make room for is denied either way, saying why.
	// A RequireDualStack claim waits until both families fit, holding
	// neither meanwhile; PreferDualStack cannot wait.
	// +optional
	// +kubebuilder:default=Deny
	WhenExhausted ExhaustedPolicy `json:"whenExhausted,omitempty"`

	// stickyKey names this claim's identity in its namespace for a pool
	// that retains released prefixes (IPPool spec.retainReleased), in place
	// of the claim's name: for controllers that create claims under new
	// names (generateName) but want the same prefix back. Immutable.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	StickyKey string `json:"stickyKey,omitempty"`
}

// IPClaimStatus is the observed state of a claim.
type IPClaimStatus struct {
	// cidr is the prefix bound to this claim.
	// +optional
	CIDR string `json:"cidr,omitempty"`

	// pool is the name of the pool the prefix came from.
	// +optional
	Pool string `json:"pool,omitempty"`

	// allocation is the name of the IPAllocation that records the binding.
	// +optional
	Allocation string `json:"allocation,omitempty"`

	// cidrs are the prefixes bound to a dual-stack claim, primary first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=2
	CIDRs []string `json:"cidrs,omitempty"`

	// allocations name the IPAllocations of a dual-stack claim's prefixes,
	// in the order of cidrs.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=2
	Allocations []string `json:"allocations,omitempty"`

	// expiresAt is when the claim's ttlSeconds runs out.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// conditions: Ready, with reasons Allocated, Pending, NeverFits,
	// Conflict and Invalid; on a dual-stack claim DualStack, true when it
	// holds both families (BothFamilies), false when PreferDualStack fell
	// back to one (FellBackToOneFamily, saying why the other did not fit).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// IPClaim requests an IP address or prefix from an IPPool. The prefix is
// allocated when the claim is created, so the object returned by create
// already carries spec.cidr; deleting the claim releases it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ipc,categories=kipam
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.status.pool`
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Secondary",type=string,JSONPath=`.spec.cidrs[1]`
// +kubebuilder:printcolumn:name="Families",type=string,JSONPath=`.spec.ipFamilyPolicy`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Expires",type=date,JSONPath=`.status.expiresAt`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPClaim struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec is what the claim asks for.
	// +required
	Spec IPClaimSpec `json:"spec"`

	// status is what the claim was given.
	// +optional
	Status IPClaimStatus `json:"status,omitzero"`
}

// +kubebuilder:object:root=true

// IPClaimList is a list of IPClaims.
type IPClaimList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []IPClaim `json:"items"`
}

func init() {
	SchemeBuilder.Register(&IPClaim{}, &IPClaimList{})
}
