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

// LedgerEntry is one prefix committed to a pool's ledger.
type LedgerEntry struct {
	// cidr is the allocated prefix, canonical.
	CIDR string `json:"cidr"`
	// holder is who asked for it: "IPClaim/<namespace>" for a claim (its
	// name may not exist yet at admission), "IPPool/<name>" for a child pool.
	Holder string `json:"holder"`
	// at is when it was committed, in Unix seconds.
	At int64 `json:"at"`
}

// LedgerHold is a released prefix kept out of circulation for the pool's
// reuse grace period.
type LedgerHold struct {
	// cidr is the released prefix.
	CIDR string `json:"cidr"`
	// until is when it may be handed out again, in Unix seconds.
	Until int64 `json:"until"`
}

// IPLedgerSpec lists what is allocated from one pool.
type IPLedgerSpec struct {
	// pool is the name of the IPPool this ledger records.
	Pool string `json:"pool"`
	// allocations are the committed prefixes.
	// +optional
	Allocations []LedgerEntry `json:"allocations,omitempty"`
	// holds are released prefixes not yet free again.
	// +optional
	Holds []LedgerHold `json:"holds,omitempty"`
}

// IPLedger is kipam's internal, durable record of what is allocated from one
// IPPool: the object whose resourceVersion fences every allocation, so that
// two writers can never commit overlapping prefixes. kipam alone writes it;
// IPAllocations are the user-facing view of the same facts.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipl
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.pool`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPLedger struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitzero"`

	// spec is the ledger's content.
	// +required
	Spec IPLedgerSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// IPLedgerList is a list of IPLedgers.
type IPLedgerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitzero"`
	Items           []IPLedger `json:"items"`
}

func init() {
	SchemeBuilder.Register(&IPLedger{}, &IPLedgerList{})
}
