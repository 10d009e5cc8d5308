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

package ipam

import (
	"net/netip"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// Who holds what: the rules that tie a ledger entry, an IPAllocation and
// the claim or pool that carries them. The controllers decide by them what
// to release and what to repair, and internal/inspect what to report, so
// they live here, once.

// PoolOf names the pool a claim's cidr is allocated from: the pool
// annotation kipam sets (for a claim by selector, the pool it chose), else
// spec.pool.
func PoolOf(claim *ipamv1alpha1.IPClaim) string {
	if p := claim.Annotations[PoolAnnotation]; p != "" {
		return p
	}
	return claim.Spec.Pool
}

// OwnEntry reports whether a ledger entry is the one claim carries: its
// namespace's, with its entry ID. An entry written before entries had IDs
// is any claim's of its namespace.
func OwnEntry(e Entry, claim *ipamv1alpha1.IPClaim) bool {
	return e.Is(ClaimHolder(claim.Namespace), ClaimEntryID(claim)) || e.Is(ClaimHolder(claim.Namespace), "")
}

// Carries reports whether claim c carries entry e, recorded for p in pool:
// it is in the entry's namespace and holds p as its entry, or it waits and
// the entry's ID is its uid (the claim controller commits a waiting
// claim's prefix before it patches the claim, and nothing bounds the time
// between).
func Carries(pool string, p netip.Prefix, e Entry, c *ipamv1alpha1.IPClaim) bool {
	if ClaimHolder(c.Namespace) != e.Holder {
		return false
	}
	if c.Spec.CIDR == "" {
		return e.ID != "" && string(c.UID) == e.ID
	}
	return c.Spec.CIDR == p.String() && PoolOf(c) == pool && OwnEntry(e, c)
}

// PoolCarries reports whether pool carries entry e of its parent's ledger:
// the entry names the pool as its holder, with the pool's entry ID.
func PoolCarries(pool *ipamv1alpha1.IPPool, e Entry) bool {
	return e.Is(PoolHolder(pool.Name), PoolEntryID(pool))
}

// BoundTo reports whether an IPAllocation records claim as its holder.
func BoundTo(a *ipamv1alpha1.IPAllocation, claim *ipamv1alpha1.IPClaim) bool {
	ref := a.Spec.ClaimRef
	return ref.Kind == "IPClaim" && ref.Namespace == claim.Namespace && ref.Name == claim.Name && (ref.UID == "" || ref.UID == claim.UID)
}

// ClaimHolds reports whether claim, the one a's claimRef names, carries
// a's prefix: its uid is the one recorded (if any) and its cidr is a's.
func ClaimHolds(claim *ipamv1alpha1.IPClaim, a *ipamv1alpha1.IPAllocation) bool {
	ref := a.Spec.ClaimRef
	return (ref.UID == "" || ref.UID == claim.UID) && claim.Spec.CIDR == a.Spec.CIDR
}

// PoolHolds reports whether pool, the one a's claimRef names, carries a's
// prefix: the same uid, and its cidr is a's.
func PoolHolds(pool *ipamv1alpha1.IPPool, a *ipamv1alpha1.IPAllocation) bool {
	return pool.UID == a.Spec.ClaimRef.UID && pool.Spec.CIDR == a.Spec.CIDR
}
