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

// IPLedgerSpec records what is allocated from one pool, or from one shard
// of it. A pool's root ledger is named after the pool; it records the
// prefixes at least as large as a shard, and lists the open shards, each a
// ledger of its own that records the smaller prefixes inside its range. So
// no ledger grows with the pool, and each write stays small.
//
// Entries are packed one per line rather than as a list of objects: the API
// server validates, prunes and converts every list item, which made a write
// of 256 structured entries five times slower than the same entries as text.
type IPLedgerSpec struct {
	// pool is the name of the IPPool this ledger records.
	// +required
	Pool string `json:"pool"`
	// poolUID is the uid of that pool: a pool created again under the
	// same name never reads or writes another pool's ledgers.
	// +optional
	PoolUID string `json:"poolUID,omitempty"`
	// shard is the range a shard ledger records; empty for a root ledger.
	// +optional
	Shard string `json:"shard,omitempty"`
	// root is the uid of the root ledger that opened this shard.
	// +optional
	Root string `json:"root,omitempty"`
	// sealed marks a ledger closed for good: it records nothing and is
	// never written again. A shard is sealed before its range leaves the
	// root's list, so a writer that still believes it open cannot commit;
	// a deleted pool's ledgers are all sealed, the root last, before the
	// pool goes.
	// +optional
	Sealed bool `json:"sealed,omitempty"`
	// shardBits is the prefix length of the root's shards: prefixes longer
	// than it are recorded in a shard, the others in the root. 0 means the
	// pool is not sharded. Fixed when the root ledger is created.
	// +optional
	ShardBits int32 `json:"shardBits,omitempty"`
	// nextShard numbers the next shard the root opens, so that no shard
	// ledger's name is ever used twice.
	// +optional
	NextShard int64 `json:"nextShard,omitempty"`
	// shards lists the root's open shards, one "<cidr> <number>" per line;
	// shard number n is the IPLedger named "<pool>.<n>".
	// +optional
	Shards string `json:"shards,omitempty"`
	// allocations are the committed prefixes, one
	// "<cidr> <holder> <unix seconds> <entry ID>" per line. The holder is
	// "IPClaim/<namespace>" for a claim (its name may not exist yet at
	// admission), "IPAddressClaim/<namespace>" for a Cluster API
	// IPAddressClaim, or "IPPool/<name>" for a child pool; the time is the
	// commit's, or that of a retried pool create that took the entry over;
	// the entry ID names this entry for its release (entries written before
	// IDs have none).
	// +optional
	Allocations string `json:"allocations,omitempty"`
	// holds are released prefixes not yet free again, one
	// "<cidr> <unix seconds until free>" per line.
	// +optional
	Holds string `json:"holds,omitempty"`
	// released records who held the prefixes released in the pool's
	// retention window (spec.retainReleased), one
	// "<cidr> <namespace> <identity> <claim uid> <bound at> <released at> <until> <kept|held>"
	// per line, times in unix seconds. A "kept" line keeps its prefix for
	// that identity until then; once a claim takes the prefix the line
	// says "held" and only records who held it before.
	// +optional
	Released string `json:"released,omitempty"`
}

// IPLedger is kipam's internal, durable record of what is allocated from one
// IPPool: the object whose resourceVersion fences every allocation, so that
// two writers can never commit overlapping prefixes. kipam alone writes it;
// IPAllocations are the user-facing view of the same facts.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipl
// +kubebuilder:selectablefield:JSONPath=`.spec.pool`
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.pool`
// +kubebuilder:printcolumn:name="Shard",type=string,JSONPath=`.spec.shard`
// +kubebuilder:printcolumn:name="Sealed",type=boolean,JSONPath=`.spec.sealed`,priority=1
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
