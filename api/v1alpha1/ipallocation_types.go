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
	"k8s.io/apimachinery/pkg/types"
)

// ClaimRef names the object an allocation is bound to.
type ClaimRef struct {
	// kind is IPClaim, IPPool for a child pool carved from its parent, or
	// IPAddressClaim for a Cluster API claim (ipam.cluster.x-k8s.io).
	// +required
	// +kubebuilder:validation:Enum=IPClaim;IPPool;IPAddressClaim
	// +kubebuilder:validation:MaxLength=16
	Kind string `json:"kind"`

	// namespace of the claim; empty for an IPPool.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`

	// name of the holder. kipam creates an IPAllocation only once its
	// holder is stored, so it is set; it is empty only on an allocation
	// written by an earlier release of kipam.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name,omitempty"`

	// uid of the holder, set when kipam creates the IPAllocation; one
	// restored without it (from a backup, or written by an earlier release)
	// is given it by the claim controller once the claim it names carries
	// its prefix.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=36
	UID types.UID `json:"uid,omitempty"`
}

// IPAllocationSpec is the binding of one prefix of a pool to its holder.
// +kubebuilder:validation:XValidation:rule="self.pool == oldSelf.pool && self.cidr == oldSelf.cidr",message="pool and cidr are immutable",fieldPath=.cidr
// +kubebuilder:validation:XValidation:rule="has(self.entry) == has(oldSelf.entry) && (!has(self.entry) || self.entry == oldSelf.entry)",message="entry is immutable",fieldPath=.entry
// +kubebuilder:validation:XValidation:rule="self.claimRef.kind == oldSelf.claimRef.kind && (!has(oldSelf.claimRef.__namespace__) || (has(self.claimRef.__namespace__) && self.claimRef.__namespace__ == oldSelf.claimRef.__namespace__)) && (!has(oldSelf.claimRef.name) || (has(self.claimRef.name) && self.claimRef.name == oldSelf.claimRef.name)) && (!has(oldSelf.claimRef.uid) || (has(self.claimRef.uid) && self.claimRef.uid == oldSelf.claimRef.uid))",message="claimRef may only be completed, never changed",fieldPath=.claimRef
type IPAllocationSpec struct {
	// pool is the name of the IPPool the prefix belongs to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Pool string `json:"pool"`

	// cidr is the allocated prefix, canonical.
	// +required
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && string(cidr(self).masked()) == self",message="must be a canonical CIDR"
	CIDR string `json:"cidr"`

	// claimRef is the object that holds the prefix.
	// +required
	ClaimRef ClaimRef `json:"claimRef"`
	// entry is the ID of the pool's ledger entry this records: kipam
	// releases that entry, and no other, when the holder is gone. Immutable.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Entry string `json:"entry,omitempty"`
}

// IPAllocationStatus is the observed state of an allocation.
type IPAllocationStatus struct {
	// boundAt was when the holder was first seen with this prefix. kipam no
	// longer writes it: an allocation is bound from its creation
	// (metadata.creationTimestamp).
	// +optional
	BoundAt *metav1.Time `json:"boundAt,omitempty"`

	// orphanedAt is when kipam first found no holder for this prefix, by
	// the clock of the replica that wrote it (a replica whose clock it is
	// ahead of sets it again to its own now); the prefix is released once
	// the orphan grace period has passed since.
	// +optional
	OrphanedAt *metav1.Time `json:"orphanedAt,omitempty"`

	// conditions: Orphaned (no holder was found: the prefix is released
	// after the orphan grace unless one takes it) and Bound (False while
	// no holder carries it; True once one does again). kipam creates an
	// allocation for a holder that carries its prefix, so a healthy
	// allocation is bound from its creation and has no status: it costs no
	// write.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// IPAllocation is kipam's durable record that one prefix of a pool is held by
// one IPClaim, child IPPool or Cluster API IPAddressClaim. kipam creates and
// deletes it; it cannot be deleted from under a live claim.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ipa,categories=kipam
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.pool`
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.claimRef.kind`,priority=1
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.claimRef.namespace`
// +kubebuilder:printcolumn:name="Claim",type=string,JSONPath=`.spec.claimRef.name`
// +kubebuilder:printcolumn:name="Orphaned",type=string,JSONPath=`.status.conditions[?(@.type=="Orphaned")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPAllocation struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec is the binding.
	// +required
	Spec IPAllocationSpec `json:"spec"`

	// status is the observed state of the binding.
	// +optional
	Status IPAllocationStatus `json:"status,omitzero"`
}

// +kubebuilder:object:root=true

// IPAllocationList is a list of IPAllocations.
type IPAllocationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []IPAllocation `json:"items"`
}

func init() {
	SchemeBuilder.Register(&IPAllocation{}, &IPAllocationList{})
}
