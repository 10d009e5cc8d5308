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
	"context"
	"net/netip"
	"strconv"
	"testing"
)

// entriesOf are the prefixes the stored ledgers record as entry id of holder.
func entriesOf(t *testing.T, s *memStore, holder, id string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for p, e := range s.ledger(t).Allocations {
		if e.Is(holder, id) {
			out = append(out, p)
		}
	}
	return out
}

// bothAnswer asks the pool's owner, then a replica whose memory lags, for
// req, and returns their answers.
func bothAnswer(t *testing.T, owner, stale *Manager, req Request) (netip.Prefix, netip.Prefix) {
	t.Helper()
	p1, err := owner.Allocate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := stale.Allocate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return p1, p2
}

// An AdoptKnown miss on a replica whose memory has not seen the entry,
// committed by another in the shard the miss's answer falls in, conflicts
// on that shard: memory is rebuilt and the entry found, not a second one
// made.
func TestAdoptKnownMissInTheEntrysShardFindsTheEntry(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.0.0.0/24") // /26 shards
	ctx := context.Background()
	owner, stale := NewManager(s, nil), NewManager(s, nil)
	if _, err := owner.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.64/27"), Bits: 27, Holder: ClaimHolder("other"), ID: "0"}); err != nil {
		t.Fatal(err)
	}
	// The stale replica builds the pool now, and then misses what follows.
	if _, err := stale.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("x"), DryRun: true}); err != nil {
		t.Fatal(err)
	}
	req := Request{Pool: pool, Bits: 32, Holder: AddressClaimHolder("ns"), ID: "claim-uid", AdoptKnown: true}
	p1, p2 := bothAnswer(t, owner, stale, req)
	if got := entriesOf(t, s, req.Holder, req.ID); len(got) != 1 || p1 != p2 {
		t.Fatalf("the owner answered %s, the stale replica %s; the ledger records %v for the claim, want one entry", p1, p2, got)
	}
}

// An AdoptKnown miss on a replica whose memory has not seen the entry,
// committed by another in another shard than the miss's answer, makes a
// second entry (the caller releases it as surplus): its own, disjoint from
// every other, never an address the ledger records for someone else.
func TestAdoptKnownMissInAnotherShardMakesADisjointSecondEntry(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.0.0.0/24") // /26 shards
	ctx := context.Background()
	owner, stale := NewManager(s, nil), NewManager(s, nil)
	var reported []netip.Prefix
	for i, c := range []string{"10.0.0.0/27", "10.0.0.32/27", "10.0.0.64/27"} {
		p, err := owner.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix(c), Bits: 27, Holder: ClaimHolder("other"), ID: strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		reported = append(reported, p)
	}
	if _, err := stale.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("x"), DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if freed, err := owner.Release(ctx, pool, reported[0], ClaimHolder("other"), "0", 0, nil); err != nil || !freed {
		t.Fatalf("release: freed %v, %v", freed, err)
	}
	reported = reported[1:]
	req := Request{Pool: pool, Bits: 32, Holder: AddressClaimHolder("ns"), ID: "claim-uid", AdoptKnown: true}
	p1, p2 := bothAnswer(t, owner, stale, req)
	if p1 == p2 || p1.Overlaps(p2) {
		t.Fatalf("the owner answered %s, the stale replica %s: want a second, disjoint entry (this test pins the documented miss)", p1, p2)
	}
	if got := entriesOf(t, s, req.Holder, req.ID); len(got) != 2 {
		t.Fatalf("the ledger records %v for the claim, want both answers", got)
	}
	checkLedger(t, s, netip.MustParsePrefix("10.0.0.0/24"), append(reported, p1, p2))
	// The next AdoptKnown, on either replica, answers with one of the two.
	for _, m := range []*Manager{owner, stale} {
		if p, err := m.Allocate(ctx, req); err != nil || (p != p1 && p != p2) {
			t.Fatalf("a later AdoptKnown answered %s, %v; want %s or %s", p, err, p1, p2)
		}
	}
	if got := entriesOf(t, s, req.Holder, req.ID); len(got) != 2 {
		t.Fatalf("the ledger records %v for the claim after later AdoptKnowns, want still the two", got)
	}
}
