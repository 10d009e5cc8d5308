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
	"slices"

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
	return poolOf(claim.Annotations[PoolAnnotation], claim.Spec.Pool)
}

// poolOf is PoolOf of a claim with the pool annotation annotated and
// spec.pool specified.
func poolOf(annotated, specified string) string {
	if annotated != "" {
		return annotated
	}
	return specified
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
	_, ok := HoldingOf(c, pool, p.String())
	return ok && OwnEntry(e, c)
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
// a's prefix: its uid is the one recorded (if any) and one of its cidrs
// (Holdings) is a's.
func ClaimHolds(claim *ipamv1alpha1.IPClaim, a *ipamv1alpha1.IPAllocation) bool {
	ref := a.Spec.ClaimRef
	return (ref.UID == "" || ref.UID == claim.UID) && slices.ContainsFunc(Holdings(claim), func(h Holding) bool { return h.CIDR == a.Spec.CIDR })
}

// PoolHolds reports whether pool, the one a's claimRef names, carries a's
// prefix: the same uid, and its cidr is a's.
func PoolHolds(pool *ipamv1alpha1.IPPool, a *ipamv1alpha1.IPAllocation) bool {
	return pool.UID == a.Spec.ClaimRef.UID && pool.Spec.CIDR == a.Spec.CIDR
}

// SecondaryPoolAnnotation on a dual-stack IPClaim names the pool of its
// second prefix, spec.cidrs[1] (PoolAnnotation names the first's). The
// second entry has the same entry ID as the first (EntryAnnotation): an
// entry is named by its pool, prefix, holder and ID, and the two are in
// pools of different families. kipam's webhook alone sets it, on create,
// and keeps it unchanged on every update.
const SecondaryPoolAnnotation = "ipam.kipam.dev/secondary-pool"

// FallbackAnnotation on a PreferDualStack IPClaim that got one family says
// why the other did not fit, as its webhook found at creation; the claim
// controller reports it in the DualStack condition.
const FallbackAnnotation = "ipam.kipam.dev/fallback"

// DualStack reports whether claim asks for both families.
func DualStack(claim *ipamv1alpha1.IPClaim) bool {
	p := claim.Spec.IPFamilyPolicy
	return p == ipamv1alpha1.PreferDualStack || p == ipamv1alpha1.RequireDualStack
}

// Holding is one prefix a claim carries: its pool, its cidr as the claim
// spells it, and the ID of its ledger entry.
type Holding struct {
	Pool  string
	CIDR  string
	Entry string
}

// Holdings lists the prefixes a claim carries, primary first: spec.cidr
// from its pool, and for a dual-stack claim spec.cidrs[1] from the
// secondary pool, with the same entry ID. None for a claim without cidr.
// Everything that asks whether a claim carries an entry or an
// IPAllocation asks it of each holding.
func Holdings(claim *ipamv1alpha1.IPClaim) []Holding {
	return holdings(claim.Spec.CIDR, claim.Spec.CIDRs, PoolOf(claim), claim.Annotations[SecondaryPoolAnnotation], ClaimEntryID(claim))
}

// holdings is Holdings of a claim with spec.cidr cidr and spec.cidrs
// cidrs, from pool and secondary, with entry ID id.
func holdings(cidr string, cidrs []string, pool, secondary, id string) []Holding {
	if cidr == "" {
		return nil
	}
	out := []Holding{{Pool: pool, CIDR: cidr, Entry: id}}
	if len(cidrs) == 2 && cidrs[0] == cidr {
		out = append(out, Holding{Pool: secondary, CIDR: cidrs[1], Entry: id})
	}
	return out
}

// HoldingOf returns the holding of claim recorded for cidr in pool.
func HoldingOf(claim *ipamv1alpha1.IPClaim, pool, cidr string) (Holding, bool) {
	return holdingOf(Holdings(claim), pool, cidr)
}

// holdingOf returns the holding of held recorded for cidr in pool.
func holdingOf(held []Holding, pool, cidr string) (Holding, bool) {
	for _, h := range held {
		if h.Pool == pool && h.CIDR == cidr {
			return h, true
		}
	}
	return Holding{}, false
}

// View is claim as a single-stack claim of holding h: spec.cidr and the
// pool are h's, so that every rule written for one prefix (RequestFor,
// the repair path) applies to each of a dual-stack claim's prefixes.
func View(claim *ipamv1alpha1.IPClaim, h Holding) *ipamv1alpha1.IPClaim {
	v := claim.DeepCopy()
	v.Spec.IPFamilyPolicy, v.Spec.IPFamilies, v.Spec.Pools, v.Spec.PrefixLengths, v.Spec.CIDRs = "", nil, nil, nil, nil
	v.Spec.IPFamily, v.Spec.PrefixLength = "", nil
	v.Spec.CIDR = h.CIDR
	if v.Spec.PoolSelector == nil {
		v.Spec.Pool = h.Pool
	}
	v.Annotations = map[string]string{PoolAnnotation: h.Pool, EntryAnnotation: h.Entry}
	if h.Entry == "" || h.Entry == string(claim.UID) {
		delete(v.Annotations, EntryAnnotation)
	}
	return v
}

// FamilyView is the single-stack claim that asks for family i of a
// dual-stack claim: its family, its pool (or the claim's selector) and its
// prefix length.
func FamilyView(claim *ipamv1alpha1.IPClaim, i int) *ipamv1alpha1.IPClaim {
	v := claim.DeepCopy()
	s := &v.Spec
	s.IPFamily = s.IPFamilies[i]
	if len(s.Pools) > i {
		s.Pool = s.Pools[i]
	}
	if len(s.PrefixLengths) > i {
		s.PrefixLength = &s.PrefixLengths[i]
	}
	s.IPFamilyPolicy, s.IPFamilies, s.Pools, s.PrefixLengths, s.CIDRs = "", nil, nil, nil, nil
	return v
}
