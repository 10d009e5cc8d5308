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

// Condition types.
const (
	// ConditionReady is true on a pool that serves claims and on a claim
	// that holds its prefix.
	ConditionReady = "Ready"
	// ConditionExhausted is true on a pool that could not satisfy a claim.
	ConditionExhausted = "Exhausted"
	// ConditionBound is true on an allocation whose holder exists.
	ConditionBound = "Bound"
	// ConditionOrphaned is true on an allocation that no holder carries.
	ConditionOrphaned = "Orphaned"
	// ConditionOverlapping is true on a pool whose cidr overlaps another
	// pool's (not its ancestor's or descendant's): pools created before
	// kipam recorded every pool's prefix in its parent, which kipam adopts
	// at startup and reports when it cannot.
	ConditionOverlapping = "Overlapping"
	// ConditionDualStack is true on a dual-stack claim that holds both
	// families, false on a PreferDualStack claim that settled for one.
	ConditionDualStack = "DualStack"
)

// Condition reasons.
const (
	// ReasonAllocated: the claim holds its prefix.
	ReasonAllocated = "Allocated"
	// ReasonPending: the claim waits for space (whenExhausted: Wait).
	ReasonPending = "Pending"
	// ReasonQueued (a metric reason): the claim came behind older claims of
	// its namespace that wait on the same pools.
	ReasonQueued = "Queued"
	// ReasonNeverFits: the waiting claim can never fit any of its pools as
	// they are now (its size, reserved space, the namespace's limit): it
	// leaves its namespace's queue until a pool changes.
	ReasonNeverFits = "NeverFits"
	// ReasonPoolExhausted: the pool has no room for the requested size.
	ReasonPoolExhausted = "PoolExhausted"
	// ReasonLedgerFull: the pool's ledger that would record the requested
	// size is full (see --max-ledger-bytes); a release there makes room.
	ReasonLedgerFull = "LedgerFull"
	// ReasonNamespaceLimit: the claim's namespace holds what the pool's
	// spec.namespaceLimit allows.
	ReasonNamespaceLimit = "NamespaceLimit"
	// ReasonExpired (an event): the claim's ttlSeconds ran out and kipam deleted it.
	ReasonExpired = "Expired"
	// ReasonConflict: the claim's cidr is held by another allocation, or
	// overlaps one, and is not the claim's to take.
	ReasonConflict = "Conflict"
	// ReasonPoolReady: the pool is restored and serving.
	ReasonPoolReady = "PoolReady"
	// ReasonDraining: the pool is being deleted and waits until nothing is
	// allocated from it.
	ReasonDraining = "Draining"
	// ReasonInvalid: the pool's spec cannot be served, or the claim does not
	// fit its pool.
	ReasonInvalid = "Invalid"
	// ReasonBadLedger: one of the pool's IPLedgers holds a line kipam cannot
	// read (written around kipam); the pool serves nothing until a person
	// repairs it, because the line may record a prefix that is held.
	ReasonBadLedger = "BadLedger"
	// ReasonHolderFound: the allocation's holder exists.
	ReasonHolderFound = "HolderFound"
	// ReasonHolderMissing: no holder carries the allocation.
	ReasonHolderMissing = "HolderMissing"
	// ReasonOverlap: the pool's cidr overlaps another pool's, and is not
	// recorded in its parent's ledger.
	ReasonOverlap = "Overlap"
	// ReasonOverlapped: the pool's cidr is recorded in its parent's ledger,
	// and pools that could not be recorded overlap it.
	ReasonOverlapped = "Overlapped"
	// ReasonNoOverlap: the pool's cidr is recorded in its parent's ledger.
	ReasonNoOverlap = "NoOverlap"
	// ReasonParentMissing: the pool's parentPool does not exist.
	ReasonParentMissing = "ParentMissing"
	// ReasonBothFamilies: the dual-stack claim holds an IPv4 and an IPv6
	// prefix.
	ReasonBothFamilies = "BothFamilies"
	// ReasonFellBack: the PreferDualStack claim holds one family; the
	// other did not fit when it was created.
	ReasonFellBack = "FellBackToOneFamily"
)

// Finalizers.
const (
	// ClaimFinalizer keeps an IPClaim until its prefix is released.
	ClaimFinalizer = "ipam.kipam.dev/release"
	// AllocationFinalizer keeps an IPAllocation until its holder is gone.
	AllocationFinalizer = "ipam.kipam.dev/holder"
	// PoolFinalizer keeps an IPPool until nothing is allocated from it.
	PoolFinalizer = "ipam.kipam.dev/drain"
	// LedgerFinalizer keeps an IPLedger, whoever deletes it (the garbage
	// collector in a foreground deletion of its pool, a user), until
	// nothing can be committed to its pool again: the pool finished
	// draining, or is gone.
	LedgerFinalizer = "ipam.kipam.dev/sealed"
)

// Labels kipam puts on the objects it manages.
const (
	// LabelPool names the pool of an IPAllocation.
	LabelPool = "ipam.kipam.dev/pool"
	// LabelClaimNamespace names the namespace of an IPAllocation's claim.
	LabelClaimNamespace = "ipam.kipam.dev/claim-namespace"
)
