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

package v1beta2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The claim's Ready condition and its reasons, as Cluster API names them.
const (
	// ReadyCondition is true once an address is allocated for the claim.
	ReadyCondition = "Ready"
	// ReasonAllocationFailed: allocating failed for a reason other than a
	// full pool; the message says why.
	ReasonAllocationFailed = "AllocationFailed"
	// ReasonPoolNotReady: the pool the claim names is not ready.
	ReasonPoolNotReady = "PoolNotReady"
	// ReasonPoolExhausted: the pool the claim names has no free address.
	ReasonPoolExhausted = "PoolExhausted"
)

// IPPoolReference names the pool a claim asks for, or an address came from,
// by API group, kind and name; the pool is in the claim's namespace or
// cluster-scoped, as its kind is.
type IPPoolReference struct {
	// name is the pool's name.
	// +required
	Name string `json:"name,omitempty"`

	// kind is the pool's kind.
	// +required
	Kind string `json:"kind,omitempty"`

	// apiGroup is the pool's API group: a provider serves only the claims
	// whose apiGroup and kind are its own.
	// +required
	APIGroup string `json:"apiGroup,omitempty"`
}

// IPAddressClaimSpec is what a claim asks for.
type IPAddressClaimSpec struct {
	// clusterName is the Cluster the claim belongs to: while that Cluster is
	// paused, or missing, its claims are left alone.
	// +optional
	ClusterName string `json:"clusterName,omitempty"`

	// poolRef is the pool to allocate the address from.
	// +required
	PoolRef IPPoolReference `json:"poolRef,omitempty,omitzero"`
}

// IPAddressReference names the IPAddress created for a claim, in the
// claim's namespace.
type IPAddressReference struct {
	// name is the IPAddress's name.
	// +required
	Name string `json:"name,omitempty"`
}

// IPAddressClaimStatus is what the claim was given. Cluster API's
// status.deprecated.v1beta1 is not modelled: patches computed from this type
// leave it alone, and an update of the status would drop it.
type IPAddressClaimStatus struct {
	// conditions: Ready, with reasons AllocationFailed, PoolNotReady and
	// PoolExhausted when false.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// addressRef names the IPAddress created for the claim; consumers wait
	// for it to be set.
	// +optional
	AddressRef IPAddressReference `json:"addressRef,omitempty,omitzero"`
}

// IPAddressClaim asks the provider of the pool it names for one IP address.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
type IPAddressClaim struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the claim asks for.
	// +required
	Spec IPAddressClaimSpec `json:"spec,omitempty,omitzero"`

	// status is what the claim was given.
	// +optional
	Status IPAddressClaimStatus `json:"status,omitempty,omitzero"`
}

// +kubebuilder:object:root=true

// IPAddressClaimList is a list of IPAddressClaims.
type IPAddressClaimList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAddressClaim `json:"items"`
}

func init() {
	SchemeBuilder.Register(&IPAddressClaim{}, &IPAddressClaimList{})
}
