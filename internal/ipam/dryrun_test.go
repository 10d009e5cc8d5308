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
	"errors"
	"net/netip"
	"testing"

	"github.com/kipam/kipam/internal/allocator"
)

// TestADryRunIsAnsweredFromTheStoredLedgers: two replicas serve one pool
// (its owner unreachable, each serves it here), and one commits a prefix
// that the other's allocator has not seen. A commit at the other is fenced
// by the ledger; a dry run writes nothing, so it must read the stored
// ledgers rather than answer from memory. The chaos suite (seed 1206134)
// saw a dry run for a /28 committed 12 s earlier answered "free".
func TestADryRunIsAnsweredFromTheStoredLedgers(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.0.0.0/28")
	ctx := context.Background()
	a, b := NewManager(s, nil), NewManager(s, nil)
	if _, err := a.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("ns"), ID: "first"}); err != nil {
		t.Fatal(err)
	}
	x := netip.MustParsePrefix("10.0.0.8/30")
	if _, err := b.Allocate(ctx, Request{Pool: pool, CIDR: x, Bits: 30, Holder: ClaimHolder("ns"), ID: "at-b"}); err != nil {
		t.Fatal(err)
	}
	p, err := a.Allocate(ctx, Request{Pool: pool, CIDR: x, Bits: 30, Holder: ClaimHolder("ns"), ID: "dry", DryRun: true})
	if !errors.Is(err, allocator.ErrOverlap) {
		t.Fatalf("a dry run for %s, which the stored ledger records, answered %v, %v; want it taken", x, p, err)
	}
	free := netip.MustParsePrefix("10.0.0.4/30")
	if p, err := a.Allocate(ctx, Request{Pool: pool, CIDR: free, Bits: 30, Holder: ClaimHolder("ns"), ID: "dry", DryRun: true}); err != nil || p != free {
		t.Fatalf("a dry run for the free %s answered %v, %v", free, p, err)
	}
	if _, ok := recorded(t, NewManager(s, nil), pool, free); ok {
		t.Fatalf("a dry run recorded %s", free)
	}
}

// TestAReleaseLooksInTheStoredLedgers: the release of an entry that another
// replica committed, at a replica whose allocator has not seen it, frees
// it. It used to answer "not freed" from memory, writing nothing, and the
// orphan sweep that asked took the entry for gone and left it for ever:
// the chaos suite's kill-only run (seed 1206135) and a two-minute
// reject-creates run (seed 7) each ended with such an entry.
func TestAReleaseLooksInTheStoredLedgers(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.0.0.0/28")
	ctx := context.Background()
	a, b := NewManager(s, nil), NewManager(s, nil)
	if _, err := a.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("ns"), ID: "first"}); err != nil {
		t.Fatal(err)
	}
	x := netip.MustParsePrefix("10.0.0.8/30")
	if _, err := b.Allocate(ctx, Request{Pool: pool, CIDR: x, Bits: 30, Holder: ClaimHolder("ns"), ID: "at-b"}); err != nil {
		t.Fatal(err)
	}
	if freed, err := a.Release(ctx, pool, x, ClaimHolder("ns"), "at-b", 0, nil); err != nil || !freed {
		t.Fatalf("releasing %s, which the stored ledger records, at a replica that had not seen it: freed %v, %v", x, freed, err)
	}
	if _, ok := recorded(t, NewManager(s, nil), pool, x); ok {
		t.Fatalf("the stored ledger still records %s", x)
	}
	// A release of what nobody holds still frees nothing.
	if freed, err := a.Release(ctx, pool, x, ClaimHolder("ns"), "at-b", 0, nil); err != nil || freed {
		t.Fatalf("releasing %s again: freed %v, %v", x, freed, err)
	}
}
