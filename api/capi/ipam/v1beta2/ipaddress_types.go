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

// IPAddressClaimReference names the claim an IPAddress was created for, in
// the address's namespace.
type IPAddressClaimReference struct {
	// name is the claim's name.
	// +required
	Name string `json:"name,omitempty"`
}

// IPAddressSpec is the address allocated for a claim. Every field of
// Cluster API's IPAddressSpec is here: kipam writes them all.
type IPAddressSpec struct {
	// claimRef names the claim the address was created for.
	// +required
	ClaimRef IPAddressClaimReference `json:"claimRef,omitempty,omitzero"`

	// poolRef names the pool the address came from.
	// +required
	PoolRef IPPoolReference `json:"poolRef,omitempty,omitzero"`

	// address is the IP address, without a prefix length (at most 39
	// characters, the longest IPv6 text form).
	// +required
	Address string `json:"address,omitempty"`

	// prefix is the prefix length of the network the address is on, 0 to
	// 128. A pointer, as in Cluster API, so that 0 is written and not
	// omitted.
	// +required
	Prefix *int32 `json:"prefix,omitempty"`

	// gateway is the gateway of the network the address is on.
	// +optional
	Gateway string `json:"gateway,omitempty"`
}

// IPAddress is an IP address allocated for an IPAddressClaim, named as the
// claim and in its namespace. It has no status.
// +kubebuilder:object:root=true
type IPAddress struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the allocated address.
	// +required
	Spec IPAddressSpec `json:"spec,omitempty,omitzero"`
}

// +kubebuilder:object:root=true

// IPAddressList is a list of IPAddresses.
type IPAddressList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAddress `json:"items"`
}

func init() {
	SchemeBuilder.Register(&IPAddress{}, &IPAddressList{})
}
