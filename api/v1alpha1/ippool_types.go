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

// AllocationStrategy says how a pool picks a free prefix when a claim does
// not ask for a specific one.
// +kubebuilder:validation:Enum=FirstFit;Random
type AllocationStrategy string

const (
	// FirstFit hands out the lowest free aligned prefix.
	FirstFit AllocationStrategy = "FirstFit"
	// Random hands out a free aligned prefix chosen uniformly at random.
	Random AllocationStrategy = "Random"
)

// IPPoolSpec describes a block of address space that claims draw from.
// +kubebuilder:validation:XValidation:rule="has(self.cidr) || has(self.parentPool)",message="cidr is required unless parentPool is set",fieldPath=.cidr
// +kubebuilder:validation:XValidation:rule="has(self.cidr) || has(self.prefixLength)",message="prefixLength is required when cidr is empty, to say what size to carve from parentPool",fieldPath=.prefixLength
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.cidr) || (has(self.cidr) && self.cidr == oldSelf.cidr)",message="cidr is immutable once set",fieldPath=.cidr
// +kubebuilder:validation:XValidation:rule="has(self.parentPool) == has(oldSelf.parentPool) && (!has(self.parentPool) || self.parentPool == oldSelf.parentPool)",message="parentPool is immutable",fieldPath=.parentPool
// +kubebuilder:validation:XValidation:rule="has(self.prefixLength) == has(oldSelf.prefixLength) && (!has(self.prefixLength) || self.prefixLength == oldSelf.prefixLength)",message="prefixLength is immutable",fieldPath=.prefixLength
// +kubebuilder:validation:XValidation:rule="!has(self.cidr) || !has(self.prefixLength) || !isCIDR(self.cidr) || self.prefixLength == cidr(self.cidr).prefixLength()",message="prefixLength must equal the prefix length of cidr when both are set",fieldPath=.prefixLength
// +kubebuilder:validation:XValidation:rule="!has(self.cidr) || !isCIDR(self.cidr) || cidr(self.cidr).ip().family() == 6 || !has(self.prefixLength) || self.prefixLength <= 32",message="prefixLength must be at most 32 for an IPv4 pool",fieldPath=.prefixLength
// +kubebuilder:validation:XValidation:rule="!has(self.cidr) || !isCIDR(self.cidr) || !has(self.defaultPrefixLength) || (self.defaultPrefixLength >= cidr(self.cidr).prefixLength() && (cidr(self.cidr).ip().family() == 6 || self.defaultPrefixLength <= 32))",message="defaultPrefixLength must lie between the pool's own prefix length and the family's maximum (32 for IPv4, 128 for IPv6)",fieldPath=.defaultPrefixLength
// +kubebuilder:validation:XValidation:rule="!has(self.namespaceLimit) || !has(self.namespaceLimit.addressSpace) || !has(self.cidr) || !isCIDR(self.cidr) || (self.namespaceLimit.addressSpace >= cidr(self.cidr).prefixLength() && (cidr(self.cidr).ip().family() == 6 || self.namespaceLimit.addressSpace <= 32))",message="namespaceLimit.addressSpace must lie between the pool's own prefix length and the family's maximum (32 for IPv4, 128 for IPv6)",fieldPath=.namespaceLimit.addressSpace
type IPPoolSpec struct {
	// cidr is the pool's address space in canonical CIDR notation, IPv4 or
	// IPv6, e.g. 10.0.0.0/16 or 2001:db8::/48. It overlaps no other pool
	// but its ancestors: kipam records it, as the pool is created, in its
	// parent's ledger (in the address space of its family for a top-level
	// pool), and denies a pool whose cidr overlaps anything recorded there,
	// naming it. A pool with parentPool and prefixLength may leave it empty:
	// kipam then carves a free prefix of that length from the parent, and
	// the created object carries it. Set when the pool is created, and
	// immutable.
	// +optional
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && string(cidr(self).masked()) == self",message="must be a canonical CIDR such as 10.0.0.0/24 or 2001:db8::/48: no address bits set past the prefix length, IPv6 in lower-case compressed form"
	CIDR string `json:"cidr,omitempty"`

	// parentPool is the name of the IPPool this pool's prefix is allocated
	// from: the parent hands none of it to its claims or other children,
	// counts it as allocated, and cannot finish deleting while this pool
	// exists. The parent must exist when this pool is created. Immutable.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ParentPool string `json:"parentPool,omitempty"`

	// prefixLength is the length of the prefix to carve from parentPool when
	// cidr is empty. When cidr is set it must match it. Immutable.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	PrefixLength *int32 `json:"prefixLength,omitempty"`

	// namespaceSelector selects the namespaces whose IPClaims and Cluster
	// API IPAddressClaims may draw from this pool. Absent: every namespace
	// may. An empty selector ({}) also selects every namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// reserved lists address space that is never handed out: canonical CIDRs
	// (10.0.0.0/28) or inclusive address ranges written first-last
	// (10.0.0.1-10.0.0.9), which need not be aligned. Reserved space does
	// not count as available. A change of reserved, excludeFirst or
	// excludeLast that would cover a claim or child pool of the pool is
	// denied; one that overlaps an allocation made before it (restored from
	// a backup) leaves that allocation alone and holds for the rest.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=87
	// +kubebuilder:validation:items:XValidation:rule="(isCIDR(self) && string(cidr(self).masked()) == self) || (self.split('-').size() == 2 && isIP(self.split('-')[0]) && isIP(self.split('-')[1]))",message="must be a canonical CIDR (10.0.0.0/28) or an address range first-last (10.0.0.1-10.0.0.9)"
	Reserved []string `json:"reserved,omitempty"`

	// excludeFirst is how many addresses at the start of the pool are never
	// handed out, e.g. 1 for a network address, 2 for network and gateway.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ExcludeFirst int64 `json:"excludeFirst,omitempty"`

	// excludeLast is how many addresses at the end of the pool are never
	// handed out, e.g. 1 for an IPv4 broadcast address.
	// +optional
	// +kubebuilder:validation:Minimum=0
	ExcludeLast int64 `json:"excludeLast,omitempty"`

	// defaultPrefixLength is the prefix length handed to claims that do not
	// give one. Absent: a single address (/32 for IPv4, /128 for IPv6).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	DefaultPrefixLength *int32 `json:"defaultPrefixLength,omitempty"`

	// strategy is how a free prefix is chosen for claims that do not ask for
	// a specific one: FirstFit (the lowest free address) or Random.
	// +optional
	// +kubebuilder:default=FirstFit
	Strategy AllocationStrategy `json:"strategy,omitempty"`

	// reuseGracePeriodSeconds is how long a released prefix stays out of
	// circulation before it can be handed out again, so that stale clients
	// and caches do not collide with its next holder. Absent or 0: reused at
	// once.
	// At most a year (31536000).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=31536000
	ReuseGracePeriodSeconds *int64 `json:"reuseGracePeriodSeconds,omitempty"`

	// retainReleased keeps a released claim's prefix for the claim's
	// identity (its namespace and spec.stickyKey, or its name without one)
	// this long, a duration such as "24h": a claim of that identity created
	// again in the window asks for a prefix of the same length and gets the
	// same one back. Other claims get a retained prefix only when nothing
	// else fits, the oldest release first, and never within the reuse grace.
	// The ledger keeps who held each retained prefix (identity, claim uid,
	// bound and released at) for the window. Absent or 0: off. At most
	// 8760h.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('8760h')",message="must be a duration from 0s to 8760h"
	RetainReleased *metav1.Duration `json:"retainReleased,omitempty"`

	// namespaceLimit caps what the claims of any one namespace hold from
	// this pool at a time. It is checked as each prefix is allocated,
	// against the pool's ledger, so claims created at once cannot pass it
	// together (while one replica serves the pool); a claim past it is
	// denied like one for an exhausted pool
	// (403, or Pending with whenExhausted: Wait until that namespace
	// releases something). Lowering it evicts nothing. Absent: no cap.
	// +optional
	NamespaceLimit *NamespaceLimit `json:"namespaceLimit,omitempty"`

	// gateway is the gateway of the network the pool's addresses are on,
	// reported with each address kipam answers a Cluster API
	// IPAddressClaim with (the IPAddress's spec.gateway). It is one of the
	// pool's own addresses, in canonical form, and is never handed out.
	// +optional
	// +kubebuilder:validation:MaxLength=39
	Gateway string `json:"gateway,omitempty"`

	// addressPrefixLength is the prefix length reported with each address
	// kipam answers a Cluster API IPAddressClaim with (the IPAddress's
	// spec.prefix): the length of the network the machines are on, which
	// may be shorter than the pool's own (a pool carved from a subnet).
	// Absent: the pool's own prefix length.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	AddressPrefixLength *int32 `json:"addressPrefixLength,omitempty"`
}

// NamespaceLimit is what the claims of one namespace may hold from a pool.
// +kubebuilder:validation:MinProperties=1
type NamespaceLimit struct {
	// claims is the most claims of one namespace holding a prefix of the
	// pool.
	// +optional
	// +kubebuilder:validation:Minimum=1
	Claims *int32 `json:"claims,omitempty"`

	// addressSpace caps the addresses one namespace's claims hold together,
	// written as the prefix length of that much space: 24 allows 256 IPv4
	// addresses in any mix of sizes (one /24, or four /26s, or 256 hosts),
	// 56 allows an IPv6 /56's worth.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	AddressSpace *int32 `json:"addressSpace,omitempty"`
}

// IPPoolStatus is the observed usage of a pool. Sizes are decimal strings
// because IPv6 pools overflow 64-bit integers.
type IPPoolStatus struct {
	// capacity is how many addresses the pool spans.
	// +optional
	Capacity string `json:"capacity,omitempty"`

	// allocated is how many addresses are held by claims and child pools.
	// +optional
	Allocated string `json:"allocated,omitempty"`

	// available is how many addresses are neither allocated, reserved nor
	// held back by a reuse grace period.
	// +optional
	Available string `json:"available,omitempty"`

	// utilization is allocated as a percentage of the space that can be
	// handed out, e.g. "37.5%".
	// +optional
	Utilization string `json:"utilization,omitempty"`

	// largestFreePrefix is the prefix length of the largest free aligned
	// block, i.e. the largest claim the pool can still satisfy. Absent when
	// nothing is free.
	// +optional
	LargestFreePrefix *int32 `json:"largestFreePrefix,omitempty"`

	// claims is how many prefixes of this pool are committed for claims
	// (IPClaims and Cluster API IPAddressClaims), pending ones included.
	// +optional
	Claims int32 `json:"claims,omitempty"`

	// pending is how many of those no stored IPClaim carries yet: a create
	// that kipam allowed and that is still on its way, or that the API
	// server refused after kipam's webhook (another webhook or policy, two
	// creates of one new name at once, a timeout). They count as allocated
	// until the orphan sweep releases them, the orphan grace
	// (--orphan-grace, 2 minutes by default) after the sweeping replica
	// first saw them, or after the age unconfirmed gives them if that is
	// older.
	// +optional
	Pending int32 `json:"pending,omitempty"`

	// unconfirmed lists the pool's entries that the orphan sweep found no
	// holder carrying (pending claims, child pools and Cluster API
	// IPAddressClaims) and that are still within the orphan grace, oldest
	// first, at most 64. Each says how long kipam had seen it: a replica
	// that leads the sweep next, after a restart or a change of leader,
	// counts the grace as already run for that long instead of starting
	// it again. Only kipam writes it.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Unconfirmed []UnconfirmedEntry `json:"unconfirmed,omitempty"`

	// childPools is how many IPPools are carved out of this pool.
	// +optional
	ChildPools int32 `json:"childPools,omitempty"`

	// conditions: Ready (the pool serves claims), Exhausted (no prefix of
	// defaultPrefixLength is free) and Overlapping (its cidr overlaps
	// another pool's).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// UnconfirmedEntry is a ledger entry that no holder carried when the
// orphan sweep last looked, and how long kipam had seen it by then.
type UnconfirmedEntry struct {
	// ledger is the IPLedger that records the entry.
	Ledger string `json:"ledger"`
	// cidr is the entry's prefix.
	CIDR string `json:"cidr"`
	// holder is who the entry was committed for: "IPClaim/<namespace>",
	// "IPAddressClaim/<namespace>" or "IPPool/<name>".
	Holder string `json:"holder"`
	// id is the entry's ID, which its holder carries once stored.
	// +optional
	ID string `json:"id,omitempty"`
	// committedAt is the entry's time as its ledger records it.
	CommittedAt metav1.Time `json:"committedAt"`
	// seenFor is how long, at least, the entry had been in its ledger
	// when this status was written: a duration measured on the clock of
	// one replica, which another replica may add to its own, not a time
	// to compare across clocks.
	SeenFor metav1.Duration `json:"seenFor"`
}

// IPPool is a block of IPv4 or IPv6 address space from which IPClaims and
// child IPPools are allocated. Pools never overlap one another, except that a
// child pool lies inside its parent.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:validation:XValidation:rule="!self.metadata.name.contains('.space.kipam.dev')",message="names containing .space.kipam.dev are kipam's own address spaces and their ledgers"
// +kubebuilder:resource:scope=Cluster,shortName=ipp,categories=kipam
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Parent",type=string,JSONPath=`.spec.parentPool`
// +kubebuilder:printcolumn:name="Claims",type=integer,JSONPath=`.status.claims`
// +kubebuilder:printcolumn:name="Children",type=integer,JSONPath=`.status.childPools`
// +kubebuilder:printcolumn:name="Utilization",type=string,JSONPath=`.status.utilization`
// +kubebuilder:printcolumn:name="Largest-Free",type=integer,JSONPath=`.status.largestFreePrefix`,description="The prefix length of the largest free block"
// +kubebuilder:printcolumn:name="Allocated",type=string,JSONPath=`.status.allocated`,priority=1
// +kubebuilder:printcolumn:name="Capacity",type=string,JSONPath=`.status.capacity`,priority=1
// +kubebuilder:printcolumn:name="Pending",type=integer,JSONPath=`.status.pending`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPPool struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec is the address space and its rules.
	// +required
	Spec IPPoolSpec `json:"spec"`

	// status is the observed usage of the pool.
	// +optional
	Status IPPoolStatus `json:"status,omitzero"`
}

// +kubebuilder:object:root=true

// IPPoolList is a list of IPPools.
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []IPPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&IPPool{}, &IPPoolList{})
}
