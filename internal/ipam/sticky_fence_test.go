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

// The sequences an adversarial review found that handed a retained prefix
// to two holders, wrote the ledger on a dry run, shortened a grace or
// leaked an entry, before a line said explicitly whether it keeps its
// prefix (Release.Kept) and an answer's lines changed only once it was
// recorded. Each failed then.

package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// fillAndKeep fills the /29 with web-0..web-7, releases web-3 (kept for
// web-3) and moves the clock past its reuse grace. It returns web-3's prefix.
func reviewFillAndKeep(t *testing.T, sp *stickyPool, m *Manager) netip.Prefix {
	t.Helper()
	for i := range 8 {
		sp.mustClaim(m, fmt.Sprintf("web-%d", i))
	}
	p := sp.release(m, "web-3")
	sp.now = sp.now.Add(61 * time.Second)
	return p
}

// anon allocates for a holder with no identity (a claim created with
// generateName and no stickyKey, or a child pool): Sticky is nil.
func reviewAnon(t *testing.T, sp *stickyPool, m *Manager, dry bool) (netip.Prefix, string, error) {
	id := NewEntryID()
	p, err := m.Allocate(context.Background(), Request{Pool: sp.pool, Bits: 32, Holder: ClaimHolder("ns"), ID: id, DryRun: dry})
	return p, id, err
}

// An identity-less holder takes a kept prefix whole by eviction (its line
// stays: "taken whole"), then releases it with no Retain (no identity, the
// orphan sweep, a failed bind, a child pool, or a ledger too full for a
// new line). The old line for web-3 is back in force in the ledger, but
// the owner's allocator freed the prefix. web-3 comes back and gets it
// through keptFor, which never asks the allocator; the next claim gets it
// from the allocator: one prefix, two holders.
func TestStickyStaleReleasedLineAfterEvictionHandsOutTwice(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	p := reviewFillAndKeep(t, sp, m)

	q, id, err := reviewAnon(t, sp, m, false)
	if err != nil || q != p {
		t.Fatalf("anonymous claim on an exhausted pool: %s, %v; want the evicted %s", q, err, p)
	}
	// Released with no retain (e.g. IPAllocation orphan path, bind-failure
	// release, or a claim with no identity): grace 0 to keep it short.
	if freed, err := m.Release(context.Background(), sp.pool, q, ClaimHolder("ns"), id, 0, nil); err != nil || !freed {
		t.Fatalf("release: %v %v", freed, err)
	}
	if r, kept := sp.store.ledger(t).Kept(p, sp.now); kept {
		t.Logf("after the anonymous release the ledger again says %s is kept for %s/%s", p, r.Namespace, r.Identity)
	}
	got3, err := m.Allocate(context.Background(), Request{Pool: sp.pool, Bits: 32, Holder: ClaimHolder("ns"), ID: NewEntryID(),
		Sticky: &Identity{Namespace: "ns", Name: "web-3"}})
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := reviewAnon(t, sp, m, false)
	if err == nil && other == got3 {
		t.Fatalf("DOUBLE ALLOCATION: web-3 got %s (kept line) and another claim got %s from the allocator; ledger records %v",
			got3, other, sp.store.ledger(t).Allocations[got3])
	}
	t.Logf("web-3 %s, other %s, %v", got3, other, err)
}

// A dry run on an exhausted pool evicts a kept prefix whole, then undoes
// the allocation with allocator.Release: the allocator frees the prefix
// but its line, still kept for web-3, stays. Same double hand-out.
func TestStickyDryRunEvictionFreesKeptPrefixInMemory(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	p := reviewFillAndKeep(t, sp, m)

	if q, _, err := reviewAnon(t, sp, m, true); err != nil || q != p {
		t.Fatalf("dry run: %s %v", q, err)
	}
	got3 := sp.mustClaim(m, "web-3")
	if got3 != p {
		t.Fatalf("web-3 got %s, want %s", got3, p)
	}
	other, _, err := reviewAnon(t, sp, m, false)
	if err == nil && other == got3 {
		t.Fatalf("DOUBLE ALLOCATION after a dry run: web-3 and another claim both got %s", other)
	}
	t.Logf("other: %s %v", other, err)
}

// Same, with a denial after the eviction (spec.namespaceLimit) in place of
// a dry run: undo() releases the evicted prefix in memory, its line stays.
func TestStickyDeniedEvictionFreesKeptPrefixInMemory(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	p := reviewFillAndKeep(t, sp, m)
	// Another namespace with a limit of 0 claims is denied after evict.
	limited := sp.pool.DeepCopy()
	limited.Spec.NamespaceLimit = &ipamv1alpha1.NamespaceLimit{Claims: ptr.To[int32](7)}
	sp.pool = limited
	if q, err := m.Allocate(context.Background(), Request{Pool: sp.pool, Bits: 32, Holder: ClaimHolder("ns"), ID: NewEntryID()}); err == nil {
		t.Fatalf("expected a NamespaceLimit denial (ns holds 7, limit 8? got %s)", q)
	} else {
		t.Logf("denied: %v", err)
	}
	// web-3 gives a claim back first, so its namespace has room.
	sp.release(m, "web-0")
	sp.pool.Spec.NamespaceLimit = nil
	got3 := sp.mustClaim(m, "web-3")
	if got3 != p {
		t.Fatalf("web-3 got %s, want %s", got3, p)
	}
	sp.now = sp.now.Add(61 * time.Second) // past web-0's grace too
	for range 2 {
		other, _, err := reviewAnon(t, sp, m, false)
		if err == nil && other == got3 {
			t.Fatalf("DOUBLE ALLOCATION after a denied eviction: web-3 and another claim both got %s", other)
		}
		t.Logf("other: %s %v", other, err)
	}
}

// A dry run that evicts a kept prefix by covering part of it deletes its
// line and writes the ledger: a dry run with a side effect that destroys
// another identity's retention.
func TestStickyDryRunDeletesRetention(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	ctx := context.Background()
	var ids [2]string
	var ps [2]netip.Prefix
	for i := range 2 {
		ids[i] = NewEntryID()
		var err error
		ps[i], err = m.Allocate(ctx, Request{Pool: sp.pool, Bits: 30, Holder: ClaimHolder("ns"), ID: ids[i], Sticky: &Identity{"ns", fmt.Sprintf("big-%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if freed, err := m.Release(ctx, sp.pool, ps[0], ClaimHolder("ns"), ids[0], Grace(sp.pool),
		&Retain{Namespace: "ns", Identity: "big-0", UID: "u", For: time.Hour}); err != nil || !freed {
		t.Fatal(freed, err)
	}
	sp.now = sp.now.Add(61 * time.Second)
	writes := sp.store.writes
	if _, _, err := reviewAnon(t, sp, m, true); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if _, kept := sp.store.ledger(t).Kept(ps[0], sp.now); !kept || sp.store.writes != writes {
		t.Fatalf("a DRY RUN wrote the ledger (%d writes) and %s is no longer kept for big-0 (kept=%v)", sp.store.writes-writes, ps[0], kept)
	}
}

// A drain of a pool whose only released prefix is retained (no hold line)
// leaves no hold in the sealed root: the pool's prefix returns to its
// parent at once, inside the reuse grace of the prefix just released.
func TestStickyDrainIgnoresRetainedPrefixGrace(t *testing.T) {
	for _, retain := range []bool{false, true} {
		t.Run(fmt.Sprintf("retain=%v", retain), func(t *testing.T) {
			sp := newStickyPool(t)
			if !retain {
				sp.pool.Spec.RetainReleased = nil
			}
			m := sp.manager()
			sp.mustClaim(m, "web-0")
			sp.release(m, "web-0")
			ctx := context.Background()
			del := sp.pool.DeepCopy()
			del.DeletionTimestamp = &metav1.Time{Time: sp.now}
			if err := m.Drain(ctx, del); err != nil {
				t.Fatal(err)
			}
			root, _ := sp.store.Get(ctx, "p")
			until := HeldUntil(root)
			if !until.After(sp.now) {
				t.Errorf("sealed root holds nothing (HeldUntil %v): the pool's /29 goes back to its parent inside the 60s reuse grace of the address released at %v", until, sp.now)
			}
		})
	}
}

// A reservation added over a kept prefix: Build cannot allocate it (the
// reservation wins, says the doc), but keptFor still gives it back, so an
// entry is recorded inside the reserved range, and its release is a no-op
// in the owner (IsAllocated is false): the entry leaks.
func TestStickyReservationOverKeptPrefix(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	p0 := sp.mustClaim(m, "web-0")
	sp.mustClaim(m, "web-1")
	sp.release(m, "web-0")
	res := sp.pool.DeepCopy()
	res.Generation++
	res.Spec.Reserved = []string{p0.Addr().String() + "-" + p0.Addr().String()}
	sp.pool = res
	got, err := sp.claim(m, "web-0")
	if err == nil && got == p0 {
		t.Errorf("web-0 got %s back although spec.reserved now covers it", got)
		h := sp.held["web-0"]
		freed, err := m.Release(context.Background(), sp.pool, h.p, ClaimHolder("ns"), h.id, 0, nil)
		if !freed {
			t.Errorf("LEAK: release of %s by its entry freed nothing (%v); ledger still records %v", h.p, err, sp.store.ledger(t).Allocations[h.p])
		}
	}
}

// No eviction needed: web-0 gets its kept prefix back (keptFor leaves the
// line: "who held it before"), but that entry is then released with no
// Retain: the claim controller's failed-bind release (grace 0, nil) or the
// orphan sweep for a create rejected after admission (nil). The allocator
// frees the prefix; the surviving line keeps it for web-0 again in the
// ledger. web-0's next request takes it from the line, anyone else's from
// the allocator.
func TestStickyOrphanReleaseOfGivenBackPrefixHandsOutTwice(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	ctx := context.Background()
	p := sp.mustClaim(m, "web-0")
	sp.release(m, "web-0")
	again := sp.mustClaim(m, "web-0")
	if again != p {
		t.Fatalf("given back %s, want %s", again, p)
	}
	h := sp.held["web-0"]
	// The bind's patch was refused: release exactly what was committed.
	if freed, err := m.Release(ctx, sp.pool, h.p, ClaimHolder("ns"), h.id, 0, nil); err != nil || !freed {
		t.Fatalf("failed-bind release: %v %v", freed, err)
	}
	delete(sp.held, "web-0")
	got := sp.mustClaim(m, "web-0")
	id := NewEntryID()
	other, err := m.Allocate(ctx, Request{Pool: sp.pool, Bits: 32, Holder: ClaimHolder("other"), ID: id, Sticky: &Identity{"other", "x"}})
	if err == nil && other == got {
		t.Fatalf("DOUBLE ALLOCATION: web-0 (from its line) and other/x (from the allocator) both got %s; the ledger records %v",
			got, sp.store.ledger(t).Allocations[got])
	}
	t.Logf("web-0 %s other %s %v", got, other, err)
}

// The reuse grace of a kept prefix is measured from Released, which the
// ledger stores truncated to the second (holds round up, "never early").
// A replica that restored from the ledger hands the prefix to another
// identity up to a second before the grace ends.
func TestStickyGraceEndsEarlyAfterRestore(t *testing.T) {
	sp := newStickyPool(t)
	sp.now = sp.now.Add(900 * time.Millisecond)
	m := sp.manager()
	for i := range 8 {
		sp.mustClaim(m, fmt.Sprintf("web-%d", i))
	}
	releasedAt := sp.now
	p := sp.release(m, "web-3")
	sp.now = releasedAt.Add(Grace(sp.pool) - 500*time.Millisecond) // still inside the grace
	failover := sp.manager()
	q, _, err := reviewAnon(t, sp, failover, false)
	if err == nil && q == p {
		t.Fatalf("another claim got %s at %v, %v before the reuse grace ends (released at %v)", q, sp.now, releasedAt.Add(Grace(sp.pool)).Sub(sp.now), releasedAt)
	}
}
