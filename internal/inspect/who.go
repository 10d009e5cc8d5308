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

package inspect

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// Answer says who holds an address or prefix now, and who held it before
// while a pool that retains released prefixes keeps the record.
type Answer struct {
	// Query is the prefix asked about (an address is its /32 or /128).
	Query netip.Prefix `json:"query"`
	// HeldBy are the ledger entries that overlap Query, outermost first:
	// for an address, the top-level pool in its address space, each child
	// pool down the tree, then the claim.
	HeldBy []Holding `json:"heldBy"`
	// Before are the claims that held a prefix overlapping Query and
	// released it within their pool's retention window (spec.retainReleased),
	// latest release first.
	Before []Previous `json:"before,omitempty"`
	// State is what the innermost pool around Query does with what no
	// claim holds of it: "free in pool P", "reserved in pool P", "held in
	// pool P until T (reuse grace)", "partly allocated in pool P", or "in
	// no pool"; empty when a claim holds all of Query.
	State string `json:"state,omitempty"`
}

// Holding is one ledger entry and what carries it.
type Holding struct {
	// Pool is the pool, or address space, whose ledger records the entry.
	Pool string `json:"pool"`
	// CIDR is the entry's prefix.
	CIDR netip.Prefix `json:"cidr"`
	// Holder is the entry's holder as the ledger names it: IPClaim/<namespace>,
	// IPAddressClaim/<namespace> or IPPool/<name>.
	Holder string `json:"holder"`
	// Entry is the entry's ID.
	Entry string `json:"entry,omitempty"`
	// Committed is when the entry was committed, by the clock of the
	// replica that committed it.
	Committed metav1.Time `json:"committed"`
	// Kind, Namespace and Name are the live claim or pool that carries the
	// entry; empty when none does.
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	// Allocation is the IPAllocation that records the entry's prefix in
	// Pool, if there is one, and Since its creation: since when the holder
	// has had it.
	Allocation string       `json:"allocation,omitempty"`
	Since      *metav1.Time `json:"since,omitempty"`
}

// Previous is a claim that held a prefix before, as its pool's ledger
// records it (ipam.Release).
type Previous struct {
	Pool      string       `json:"pool"`
	CIDR      netip.Prefix `json:"cidr"`
	Namespace string       `json:"namespace"`
	// Identity is the claim's name, or its spec.stickyKey.
	Identity string      `json:"identity"`
	ClaimUID string      `json:"claimUID,omitempty"`
	Bound    metav1.Time `json:"bound"`
	Released metav1.Time `json:"released"`
	// KeptUntil is when the pool stops keeping the prefix for Identity;
	// nil once a claim holds it again.
	KeptUntil *metav1.Time `json:"keptUntil,omitempty"`
}

// Who says which ledger entries, in every pool and address space, overlap
// q, and what carries each.
func (c *Cluster) Who(q netip.Prefix) *Answer {
	ans := &Answer{Query: q}
	claimHeld := false
	for _, pool := range c.ledgerNames() {
		ledger := c.Ledgers[pool]
		for _, p := range ledger.Prefixes() {
			if !p.Overlaps(q) {
				continue
			}
			e := ledger.Allocations[p]
			h := Holding{Pool: pool, CIDR: p, Holder: e.Holder, Entry: e.ID, Committed: metav1.NewTime(e.At)}
			c.carrier(pool, p, e, &h)
			if a := c.Allocations[ipam.AllocationName(pool, p)]; a != nil {
				h.Allocation, h.Since = a.Name, a.CreationTimestamp.DeepCopy()
			}
			if _, claim := ipam.HolderNamespace(e.Holder); claim && p.Bits() <= q.Bits() {
				claimHeld = true
			}
			ans.HeldBy = append(ans.HeldBy, h)
		}
	}
	for _, pool := range c.ledgerNames() {
		ledger := c.Ledgers[pool]
		for p, r := range ledger.Released {
			if !p.Overlaps(q) {
				continue
			}
			prev := Previous{Pool: pool, CIDR: p, Namespace: r.Namespace, Identity: r.Identity, ClaimUID: r.UID,
				Bound: metav1.NewTime(r.Bound), Released: metav1.NewTime(r.Released)}
			if _, kept := ledger.Kept(p, c.At); kept {
				until := metav1.NewTime(r.Until)
				prev.KeptUntil = &until
			}
			ans.Before = append(ans.Before, prev)
		}
	}
	slices.SortFunc(ans.Before, func(a, b Previous) int { return b.Released.Compare(a.Released.Time) })
	slices.SortFunc(ans.HeldBy, func(a, b Holding) int {
		if a.CIDR.Bits() != b.CIDR.Bits() {
			return a.CIDR.Bits() - b.CIDR.Bits()
		}
		return comparePrefixes(a.CIDR, b.CIDR)
	})
	if !claimHeld {
		ans.State = c.state(q, ans.HeldBy)
	}
	return ans
}

// carrier fills in the live claim or pool that carries entry e of p in
// pool, by the rules the controllers release by.
func (c *Cluster) carrier(pool string, p netip.Prefix, e ipam.Entry, h *Holding) {
	if name, ok := strings.CutPrefix(e.Holder, ipam.PoolHolderPrefix); ok {
		if child := c.Pools[name]; child != nil && ipam.PoolCarries(child, e) && ipam.ParentOf(child) == pool {
			h.Kind, h.Name = "IPPool", child.Name
		}
		return
	}
	if strings.HasPrefix(e.Holder, ipam.AddressClaimHolderPrefix) {
		for _, claim := range c.AddressClaims {
			if ipam.AddressClaimCarries(pool, e, claim) {
				h.Kind, h.Namespace, h.Name = "IPAddressClaim", claim.Namespace, claim.Name
			}
		}
		return
	}
	if claim := c.claimCarrying(pool, p, e); claim != nil {
		h.Kind, h.Namespace, h.Name = "IPClaim", claim.Namespace, claim.Name
	}
}

// claimCarrying is the claim that carries entry e of p in pool, or nil.
func (c *Cluster) claimCarrying(pool string, p netip.Prefix, e ipam.Entry) *ipamv1alpha1.IPClaim {
	for _, claim := range c.Claims {
		if ipam.Carries(pool, p, e, claim) {
			return claim
		}
	}
	return nil
}

// state says what the innermost pool around q does with q, which no claim
// holds whole; held are the entries that overlap q.
func (c *Cluster) state(q netip.Prefix, held []Holding) string {
	var inner *ipamv1alpha1.IPPool
	for _, pool := range c.Pools {
		p := prefixOf(pool.Spec.CIDR)
		if p.IsValid() && p.Bits() <= q.Bits() && p.Contains(q.Addr()) && (inner == nil || p.Bits() > prefixOf(inner.Spec.CIDR).Bits()) {
			inner = pool
		}
	}
	if inner == nil {
		return "in no pool"
	}
	if ledger := c.Ledgers[inner.Name]; ledger != nil {
		for p := range ledger.Released {
			if r, kept := ledger.Kept(p, c.At); kept && p.Overlaps(q) {
				return fmt.Sprintf("retained in pool %s for %s/%s, which released it, until %s (spec.retainReleased)",
					inner.Name, r.Namespace, r.Identity, r.Until.UTC().Format(time.RFC3339))
			}
		}
		for p, until := range ledger.Holds {
			if p.Overlaps(q) && until.After(c.At) {
				return fmt.Sprintf("held in pool %s until %s (reuse grace)", inner.Name, until.UTC().Format(time.RFC3339))
			}
		}
	}
	if ipam.ReservedSet(inner).OverlapsPrefix(q) {
		return "reserved in pool " + inner.Name
	}
	if slices.ContainsFunc(held, func(h Holding) bool { return h.Pool == inner.Name }) {
		return "partly allocated in pool " + inner.Name
	}
	return "free in pool " + inner.Name
}
