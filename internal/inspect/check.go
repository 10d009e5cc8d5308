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
	"cmp"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// Kind is a kind of inconsistency.
type Kind string

// The kinds of Problem.
const (
	// Overlap: two claims, two pools, a claim and a pool it is not in, or
	// two ledger entries (in one ledger, or in pools neither of which is
	// carved from the other's entry) cover the same addresses.
	Overlap Kind = "Overlap"
	// UnheldEntry: a ledger entry that no live claim or pool carries,
	// committed longer than the grace ago.
	UnheldEntry Kind = "UnheldEntry"
	// UnrecordedClaim: a bound claim (spec.cidr set) whose pool's ledger
	// does not record its prefix as its entry.
	UnrecordedClaim Kind = "UnrecordedClaim"
	// UnrecordedPool: a pool whose parent's ledger (its address space's,
	// for a top-level pool) does not record its prefix as its entry.
	UnrecordedPool Kind = "UnrecordedPool"
	// MissingAllocation: a bound claim, or a pool, older than the grace
	// without the IPAllocation that records its prefix.
	MissingAllocation Kind = "MissingAllocation"
	// OrphanedAllocation: an IPAllocation whose claim or pool is gone, or
	// does not carry its prefix.
	OrphanedAllocation Kind = "OrphanedAllocation"
	// StatusDrift: a pool whose status disagrees with a recount of its
	// ledgers.
	StatusDrift Kind = "StatusDrift"
	// OutsidePool: a claim whose cidr lies outside its pool, or whose pool
	// does not exist.
	OutsidePool Kind = "OutsidePool"
	// BadLedger: a pool's ledgers cannot be read.
	BadLedger Kind = "BadLedger"
)

// Problem is one inconsistency.
type Problem struct {
	Kind Kind `json:"kind"`
	// Object is what to look at first: "IPClaim <namespace>/<name>",
	// "IPPool <name>", "IPAllocation <name>" or "IPLedger <name>".
	Object string `json:"object"`
	// Message says what is wrong and what to do about it.
	Message string `json:"message"`
	// Namespaces are those of the claims it concerns, if any: a tenant's
	// view of the check.
	Namespaces []string `json:"namespaces,omitempty"`
}

func (p Problem) String() string { return fmt.Sprintf("%s %s: %s", p.Kind, p.Object, p.Message) }

// Check reports every inconsistency among the cluster's kipam objects, in
// a fixed order (by kind, object, message); none for a consistent cluster.
//
// now is the time that ages are measured against, and grace how old a
// state that kipam repairs on its own must be before it is reported: an
// entry committed for a create still in flight, an IPAllocation its
// controller has yet to create or to release. Give it at least kipam's
// --orphan-grace. kipam's sweep measures that grace from when it first
// saw an entry, on its own clock, because it releases what it finds; a
// one-shot check has seen nothing before, so it measures an entry's age
// from the commit time the ledger records (the committing replica's
// clock), an object's from its creation or deletion timestamp (the API
// server's), and an orphaned IPAllocation's from status.orphanedAt. A
// clock skew between those and now moves the bound by the skew: a check
// only reports, so that errs towards a late report, never a release.
//
// What a release in progress leaves for a moment is not reported: claims
// and IPAllocations being deleted (for less than the grace) are not
// checked against their records; a pool being deleted is not checked for
// status drift. status.pending is not compared: only the ledger sweep that
// writes it knows it.
func (c *Cluster) Check(now time.Time, grace time.Duration) []Problem {
	var out []Problem
	report := func(kind Kind, object string, namespaces []string, format string, args ...any) {
		out = append(out, Problem{Kind: kind, Object: object, Namespaces: namespaces, Message: fmt.Sprintf(format, args...)})
	}
	older := func(t metav1.Time) bool { return now.Sub(t.Time) > grace }
	for name, err := range c.LedgerErrors {
		report(BadLedger, "IPLedger "+name, nil, "the ledgers of pool %s cannot be read, so kipam cannot serve it: %v", name, err)
	}
	c.checkObjectOverlaps(report)
	c.checkEntryOverlaps(report)
	c.checkEntries(now, grace, report)
	for _, claim := range c.Claims {
		if claim.Spec.CIDR == "" || (claim.DeletionTimestamp != nil && !older(*claim.DeletionTimestamp)) {
			continue
		}
		c.checkClaim(claim, older(claim.CreationTimestamp), report)
	}
	for _, key := range sortedKeys(c.Addresses) {
		if a := c.Addresses[key]; a.DeletionTimestamp == nil || older(*a.DeletionTimestamp) {
			c.checkAddress(a, older(a.CreationTimestamp), report)
		}
	}
	for _, pool := range c.sortedPools() {
		if pool.DeletionTimestamp != nil && !older(*pool.DeletionTimestamp) {
			continue
		}
		c.checkPool(pool, older(pool.CreationTimestamp), report)
	}
	for _, name := range sortedKeys(c.Allocations) {
		a := c.Allocations[name]
		if a.DeletionTimestamp != nil && !older(*a.DeletionTimestamp) {
			continue
		}
		if a.Status.OrphanedAt != nil && !older(*a.Status.OrphanedAt) {
			continue // kipam saw it and releases it after its grace
		}
		c.checkAllocation(a, report)
	}
	slices.SortFunc(out, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Object, b.Object), cmp.Compare(a.Message, b.Message))
	})
	return out
}

type reportFunc func(kind Kind, object string, namespaces []string, format string, args ...any)

// item is a prefix something covers, for the overlap sweep.
type item struct {
	p netip.Prefix
	// object names it in a report; pool is the claim's pool, the pool's
	// own name, or the ledger an entry is in; holder is an entry's holder.
	object, pool, holder string
	// namespace is a claim's.
	namespace string
	claim     bool
}

// checkObjectOverlaps reports claims and pools that cover the same
// addresses, other than a claim and the pools around its pool, and a pool
// and its ancestors.
func (c *Cluster) checkObjectOverlaps(report reportFunc) {
	var items []item
	for _, pool := range c.sortedPools() {
		if p := prefixOf(pool.Spec.CIDR); p.IsValid() {
			items = append(items, item{p: p, object: "IPPool " + pool.Name, pool: pool.Name})
		}
	}
	for _, claim := range c.Claims {
		for _, h := range ipam.Holdings(claim) {
			if p := prefixOf(h.CIDR); p.IsValid() {
				items = append(items, item{p: p, object: "IPClaim " + claim.Namespace + "/" + claim.Name, pool: h.Pool,
					namespace: claim.Namespace, claim: true})
			}
		}
	}
	for _, key := range sortedKeys(c.Addresses) {
		a := c.Addresses[key]
		if addr, err := netip.ParseAddr(a.Spec.Address); err == nil {
			items = append(items, item{p: netip.PrefixFrom(addr, addr.BitLen()), object: "IPAddress " + key, pool: a.Spec.PoolRef.Name,
				namespace: a.Namespace, claim: true})
		}
	}
	overlaps(items, func(a, b item) {
		switch {
		case a.claim && b.claim:
		case a.claim && ipam.Ancestors(c.Pools, a.pool)[b.pool], b.claim && ipam.Ancestors(c.Pools, b.pool)[a.pool]:
			return // a claim inside its pool and the pools around it
		case !a.claim && !b.claim && (ipam.Ancestors(c.Pools, a.pool)[b.pool] || ipam.Ancestors(c.Pools, b.pool)[a.pool]):
			return // a pool inside its ancestors
		}
		report(Overlap, b.object, namespaces(a, b), "%s overlaps %s (%s): both may use the same addresses; `kubectl kipam who %s` shows which one its pool's ledger records, delete the other",
			b.p, a.object, a.p, b.p)
	})
}

// checkEntryOverlaps reports ledger entries that cover the same addresses:
// two in one ledger, or two in different pools' ledgers unless one is the
// entry of a pool the other's pool is, or is carved from.
func (c *Cluster) checkEntryOverlaps(report reportFunc) {
	var items []item
	for _, pool := range c.ledgerNames() {
		ledger := c.Ledgers[pool]
		for _, p := range ledger.Prefixes() {
			items = append(items, item{p: p, object: "IPLedger " + pool, pool: pool, holder: ledger.Allocations[p].Holder})
		}
		// A prefix kept for the claim that released it is as taken as an
		// entry: nothing may overlap it either.
		for p := range ledger.Released {
			if r, kept := ledger.Kept(p, c.At); kept {
				items = append(items, item{p: p, object: "IPLedger " + pool, pool: pool, holder: "retained for " + r.Namespace + "/" + r.Identity})
			}
		}
	}
	around := func(x, y item) bool { // x is the entry of y's pool or of a pool y's pool is carved from
		name, ok := strings.CutPrefix(x.holder, ipam.PoolHolderPrefix)
		return ok && ipam.Ancestors(c.Pools, y.pool)[name]
	}
	overlaps(items, func(a, b item) {
		if a.pool != b.pool && (around(a, b) || around(b, a)) {
			return
		}
		where := "the same ledger"
		if a.pool != b.pool {
			where = "pool " + a.pool + "'s ledger"
		}
		report(Overlap, b.object, namespaces(a, b), "pool %s records %s for %s, which overlaps %s recorded for %s in %s: the same addresses are committed twice; "+
			"`kubectl kipam who %s` shows who carries each", b.pool, b.p, b.holder, a.p, a.holder, where, b.p)
	})
}

// namespaces are the namespaces of the claims among items, or of the
// claims that hold their entries, once each.
func namespaces(items ...item) []string {
	var out []string
	for _, it := range items {
		ns := it.namespace
		if h, ok := ipam.HolderNamespace(it.holder); ok {
			ns = h
		}
		if ns != "" && !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out
}

// overlaps calls found for every pair of items whose prefixes overlap, the
// one that sorts first (by address, then the larger) as a. Prefixes either
// nest or are disjoint, so the items that contain the one at hand form a
// chain: a sweep in address order keeps it as a stack.
func overlaps(items []item, found func(a, b item)) {
	slices.SortStableFunc(items, func(a, b item) int { return comparePrefixes(a.p, b.p) })
	var stack []item
	for _, it := range items {
		for len(stack) > 0 && !stack[len(stack)-1].p.Contains(it.p.Addr()) {
			stack = stack[:len(stack)-1]
		}
		for _, s := range stack {
			found(s, it)
		}
		stack = append(stack, it)
	}
}

// checkEntries reports ledger entries that no live claim or pool carries,
// committed longer than grace ago: the leaks kipam's ledger sweep and
// IPAllocation controller release after their own grace.
func (c *Cluster) checkEntries(now time.Time, grace time.Duration, report reportFunc) {
	for _, pool := range c.ledgerNames() {
		ledger := c.Ledgers[pool]
		for _, p := range ledger.Prefixes() {
			e := ledger.Allocations[p]
			var h Holding
			c.carrier(pool, p, e, &h)
			if h.Name != "" || now.Sub(e.At) <= grace {
				continue
			}
			age := now.Sub(e.At).Round(time.Second)
			how := "the ledger sweep releases an entry no claim carries after its orphan grace, so one that stays means it cannot"
			if name, ok := strings.CutPrefix(e.Holder, ipam.PoolHolderPrefix); ok {
				how = "pool " + name + " does not exist, or carries another entry"
				if c.Pools[name] == nil {
					how = "pool " + name + " is gone; its prefix stays allocated while claims or pools inside it live"
				}
			} else if ns, ok := strings.CutPrefix(e.Holder, ipam.AddressClaimHolderPrefix); ok {
				how = fmt.Sprintf("no IPAddressClaim of namespace %s with uid %s asks pool %s: kipam's ledger sweep releases it after its orphan grace", ns, e.ID, pool)
			} else if a := c.Allocations[ipam.AllocationName(pool, p)]; a != nil && a.Spec.Entry == e.ID {
				ref := a.Spec.ClaimRef
				how = fmt.Sprintf("its IPAllocation %s names the claim %s/%s, which does not carry it", a.Name, ref.Namespace, ref.Name)
				if c.claim(ref.Namespace, ref.Name) == nil {
					how = fmt.Sprintf("its IPAllocation %s names the claim %s/%s, which is gone (deleted without its finalizer): "+
						"kipam releases the entry after its orphan grace", a.Name, ref.Namespace, ref.Name)
				}
			}
			report(UnheldEntry, "IPLedger "+pool, namespaces(item{holder: e.Holder}), "pool %s records %s for %s (entry %q, committed %s ago), and no live claim or pool carries it: %s",
				pool, p, e.Holder, e.ID, age, how)
		}
	}
}

// checkClaim checks a bound claim's prefixes (two for a dual-stack claim)
// against their pools, their pools' ledgers and their IPAllocations; aged
// says whether it is older than the grace.
func (c *Cluster) checkClaim(claim *ipamv1alpha1.IPClaim, aged bool, report reportFunc) {
	for _, h := range ipam.Holdings(claim) {
		c.checkHolding(claim, h, aged, report)
	}
}

// checkHolding checks one prefix a claim carries.
func (c *Cluster) checkHolding(claim *ipamv1alpha1.IPClaim, h ipam.Holding, aged bool, report reportFunc) {
	object := "IPClaim " + claim.Namespace + "/" + claim.Name
	p := prefixOf(h.CIDR)
	poolName := h.Pool
	pool := c.Pools[poolName]
	if !p.IsValid() {
		return // the CRD admits only canonical CIDRs
	}
	if pool == nil {
		report(OutsidePool, object, []string{claim.Namespace}, "its pool %s does not exist, so nothing keeps %s from being handed out again; delete the claim", poolName, p)
		return
	}
	if pp := prefixOf(pool.Spec.CIDR); !pp.IsValid() || pp.Addr().Is4() != p.Addr().Is4() || pp.Bits() > p.Bits() || !pp.Contains(p.Addr()) {
		report(OutsidePool, object, []string{claim.Namespace}, "its cidr %s lies outside its pool %s (%s): kipam cannot record it there; delete the claim", p, poolName, pool.Spec.CIDR)
		return
	}
	e, recorded := c.entry(poolName, p)
	switch {
	case c.LedgerErrors[poolName] != nil:
		// BadLedger says it.
	case !recorded:
		report(UnrecordedClaim, object, []string{claim.Namespace}, "pool %s's ledger does not record %s, so nothing keeps it from being handed out again: "+
			"kipam's claim controller records it when it reconciles the claim if it is free, else marks the claim Conflict", poolName, p)
	case !ipam.OwnEntry(e, claim):
		report(UnrecordedClaim, object, []string{claim.Namespace}, "pool %s's ledger records %s for %s (entry %q), not for this claim (entry %q): the claim holds nothing; "+
			"delete it, or whatever holds the entry", poolName, p, e.Holder, e.ID, ipam.ClaimEntryID(claim))
	}
	name := ipam.AllocationName(poolName, p)
	switch a := c.Allocations[name]; {
	case !aged:
	case a == nil:
		report(MissingAllocation, object, []string{claim.Namespace}, "no IPAllocation %s records its %s: kipam's claim controller creates it for a claim its pool's ledger records", name, p)
	case !ipam.BoundTo(a, claim):
		ref := a.Spec.ClaimRef
		report(MissingAllocation, object, []string{claim.Namespace}, "the IPAllocation %s of its %s names %s %s/%s, not this claim", name, p, ref.Kind, ref.Namespace, ref.Name)
	}
}

// checkAddress checks an IPAddress kipam answered a claim with against its
// claim, its pool's ledger and its IPAllocation; aged says whether it is
// older than the grace.
func (c *Cluster) checkAddress(a *capiv1beta2.IPAddress, aged bool, report reportFunc) {
	object := "IPAddress " + a.Namespace + "/" + a.Name
	addr, err := netip.ParseAddr(a.Spec.Address)
	if err != nil {
		return // not one kipam wrote
	}
	p := netip.PrefixFrom(addr, addr.BitLen())
	poolName := a.Spec.PoolRef.Name
	claim := c.AddressClaims[a.Namespace+"/"+a.Spec.ClaimRef.Name]
	switch {
	case claim == nil || !metav1.IsControlledBy(a, claim):
		report(OrphanedAllocation, object, []string{a.Namespace}, "it says %s from pool %s for the IPAddressClaim %s, which is gone or does not own it: "+
			"its consumer may use an address kipam no longer holds for it; delete it", addr, poolName, a.Spec.ClaimRef.Name)
		return
	case c.LedgerErrors[poolName] != nil:
		return // BadLedger says it.
	}
	if e, ok := c.entry(poolName, p); !ok || !ipam.AddressClaimCarries(poolName, e, claim) {
		report(UnrecordedClaim, object, []string{a.Namespace}, "pool %s's ledger does not record %s as the entry of IPAddressClaim %s (uid %s), "+
			"so nothing keeps it from being handed out again: delete the IPAddress and kipam answers the claim again", poolName, addr, claim.Name, claim.UID)
	}
	name := ipam.AllocationName(poolName, p)
	if al := c.Allocations[name]; aged && (al == nil || !ipam.AddressClaimHolds(claim, al)) {
		report(MissingAllocation, object, []string{a.Namespace}, "no IPAllocation %s records its %s for IPAddressClaim %s: kipam's IPAddressClaim controller creates it",
			name, addr, claim.Name)
	}
}

// checkPool checks that a pool's parent records its prefix as its entry,
// that an IPAllocation records it (once aged, older than the grace), and
// that its status agrees with a recount.
func (c *Cluster) checkPool(pool *ipamv1alpha1.IPPool, aged bool, report reportFunc) {
	object := "IPPool " + pool.Name
	p := prefixOf(pool.Spec.CIDR)
	if !p.IsValid() {
		return // the pool controller reports it: Ready=False
	}
	parent := ipam.ParentOf(pool)
	if c.LedgerErrors[parent] != nil {
		// BadLedger says it.
	} else if _, ok := c.pool(parent); !ok {
		report(UnrecordedPool, object, nil, "its parent pool %s does not exist, so nothing keeps %s from being handed out again", parent, p)
	} else if e, ok := c.entry(parent, p); !ok || !ipam.PoolCarries(pool, e) {
		report(UnrecordedPool, object, nil, "%s's ledger does not record %s as this pool's entry %q, so the pool serves no claims and its parent "+
			"may hand the addresses out: kipam's pool controller records it if it is free, else sets its Overlapping condition",
			parent, p, ipam.PoolEntryID(pool))
	}
	name := ipam.AllocationName(parent, p)
	switch a := c.Allocations[name]; {
	case !aged:
	case a == nil:
		report(MissingAllocation, object, nil, "no IPAllocation %s records its %s in %s: kipam's pool controller creates it for a recorded pool", name, p, parent)
	case a.Spec.ClaimRef.Kind != "IPPool" || a.Spec.ClaimRef.Name != pool.Name:
		ref := a.Spec.ClaimRef
		report(MissingAllocation, object, nil, "the IPAllocation %s of its %s names %s %s, not this pool", name, p, ref.Kind, ref.Name)
	}
	if pool.DeletionTimestamp == nil {
		c.checkStatus(pool, aged, report)
	}
}

// checkStatus compares a pool's stored usage with a recount of its
// ledgers by the function the pool controller writes it with. Holds that
// ended since the status was written may leave more free now than it says,
// so available and largestFreePrefix need only lie between the recount
// with every recorded hold still running and the recount as of At.
func (c *Cluster) checkStatus(pool *ipamv1alpha1.IPPool, aged bool, report reportFunc) {
	object := "IPPool " + pool.Name
	got := pool.Status
	if got.Capacity == "" {
		if aged {
			report(StatusDrift, object, nil, "its usage was never counted: is kipam running?")
		}
		return
	}
	cur, _, err := c.recount(pool, c.At)
	if err != nil {
		return // the pool controller says why: Ready=False, reason Invalid
	}
	held, _, err := c.recount(pool, time.Time{})
	if err != nil {
		return
	}
	want := cur.Status
	var diffs []string
	differ := func(field, got, want string) {
		if got != want {
			diffs = append(diffs, fmt.Sprintf("%s %s (recounted: %s)", field, got, want))
		}
	}
	differ("capacity", got.Capacity, want.Capacity)
	differ("allocated", got.Allocated, want.Allocated)
	differ("utilization", got.Utilization, want.Utilization)
	differ("claims", fmt.Sprint(got.Claims), fmt.Sprint(want.Claims))
	differ("childPools", fmt.Sprint(got.ChildPools), fmt.Sprint(want.ChildPools))
	if !between(got.Available, held.Status.Available, want.Available) {
		differ("available", got.Available, want.Available)
	}
	// A longer prefix is a smaller block; nothing free is smaller than any.
	length := func(lf *int32) int {
		if lf == nil {
			return 256
		}
		return int(*lf)
	}
	if l := length(got.LargestFreePrefix); l < length(want.LargestFreePrefix) || l > length(held.Status.LargestFreePrefix) {
		differ("largestFreePrefix", prefixLength(got.LargestFreePrefix), prefixLength(want.LargestFreePrefix))
	}
	if len(diffs) > 0 {
		report(StatusDrift, object, nil, "its status says %s: the pool controller rewrites it on the pool's next change; if it stays, is kipam running?",
			strings.Join(diffs, ", "))
	}
}

// checkAllocation reports an IPAllocation whose holder is gone or does
// not carry its prefix.
func (c *Cluster) checkAllocation(a *ipamv1alpha1.IPAllocation, report reportFunc) {
	object := "IPAllocation " + a.Name
	ref := a.Spec.ClaimRef
	switch ref.Kind {
	case "IPPool":
		pool := c.Pools[ref.Name]
		switch {
		case pool == nil:
			report(OrphanedAllocation, object, nil, "it records %s in %s for pool %s, which is gone: kipam releases a pool's prefix when the pool has drained", a.Spec.CIDR, a.Spec.Pool, ref.Name)
		case !ipam.PoolHolds(pool, a) || ipam.ParentOf(pool) != a.Spec.Pool:
			report(OrphanedAllocation, object, nil, "it records %s in %s for pool %s, which is %s in %s (uid %s, recorded %s)",
				a.Spec.CIDR, a.Spec.Pool, ref.Name, pool.Spec.CIDR, ipam.ParentOf(pool), pool.UID, ref.UID)
		}
	case "IPAddressClaim":
		claim := c.AddressClaims[ref.Namespace+"/"+ref.Name]
		switch {
		case claim == nil:
			report(OrphanedAllocation, object, []string{ref.Namespace}, "it records %s in pool %s for the IPAddressClaim %s/%s, which is gone: "+
				"kipam marks it Orphaned and releases the address after its orphan grace", a.Spec.CIDR, a.Spec.Pool, ref.Namespace, ref.Name)
		case !ipam.AddressClaimHolds(claim, a):
			report(OrphanedAllocation, object, []string{ref.Namespace}, "it records %s in pool %s for the IPAddressClaim %s/%s, which is another claim "+
				"(uid %s, recorded %s) or asks pool %s", a.Spec.CIDR, a.Spec.Pool, ref.Namespace, ref.Name, claim.UID, ref.UID, claim.Spec.PoolRef.Name)
		}
	default:
		claim := c.claim(ref.Namespace, ref.Name)
		switch {
		case claim == nil:
			report(OrphanedAllocation, object, []string{ref.Namespace}, "it records %s in pool %s for the claim %s/%s, which is gone: "+
				"kipam marks it Orphaned and releases the prefix after its orphan grace", a.Spec.CIDR, a.Spec.Pool, ref.Namespace, ref.Name)
		case !ipam.ClaimHolds(claim, a) || !holds(claim, a):
			var held []string
			for _, h := range ipam.Holdings(claim) {
				held = append(held, fmt.Sprintf("%q in pool %s", h.CIDR, h.Pool))
			}
			if len(held) == 0 {
				held = []string{fmt.Sprintf("%q in pool %s", claim.Spec.CIDR, ipam.PoolOf(claim))}
			}
			report(OrphanedAllocation, object, []string{ref.Namespace}, "it records %s in pool %s for the claim %s/%s, which holds %s (uid %s, recorded %s)",
				a.Spec.CIDR, a.Spec.Pool, ref.Namespace, ref.Name, strings.Join(held, " and "), claim.UID, ref.UID)
		}
	}
}

// holds reports whether one of claim's prefixes is a's, in a's pool.
func holds(claim *ipamv1alpha1.IPClaim, a *ipamv1alpha1.IPAllocation) bool {
	_, ok := ipam.HoldingOf(claim, a.Spec.Pool, a.Spec.CIDR)
	return ok
}

// entry returns the entry pool's ledgers record for exactly p.
func (c *Cluster) entry(pool string, p netip.Prefix) (ipam.Entry, bool) {
	l := c.Ledgers[pool]
	if l == nil {
		return ipam.Entry{}, false
	}
	e, ok := l.Allocations[p]
	return e, ok
}

func (c *Cluster) claim(namespace, name string) *ipamv1alpha1.IPClaim {
	i, ok := slices.BinarySearchFunc(c.Claims, namespace+"/"+name, func(c *ipamv1alpha1.IPClaim, key string) int {
		return strings.Compare(c.Namespace+"/"+c.Name, key)
	})
	if !ok {
		return nil
	}
	return c.Claims[i]
}

func (c *Cluster) sortedPools() []*ipamv1alpha1.IPPool {
	out := make([]*ipamv1alpha1.IPPool, 0, len(c.Pools))
	for _, name := range sortedKeys(c.Pools) {
		out = append(out, c.Pools[name])
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// between reports whether the decimal x lies between lo and hi.
func between(x, lo, hi string) bool {
	v, ok1 := new(big.Int).SetString(x, 10)
	a, ok2 := new(big.Int).SetString(lo, 10)
	b, ok3 := new(big.Int).SetString(hi, 10)
	return ok1 && ok2 && ok3 && v.Cmp(a) >= 0 && v.Cmp(b) <= 0
}

func prefixLength(lf *int32) string {
	if lf == nil {
		return "none"
	}
	return fmt.Sprintf("/%d", *lf)
}
