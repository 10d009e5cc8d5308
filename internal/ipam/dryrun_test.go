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
	"fmt"
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
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

// TestAnExhaustedDenialIsCheckedAgainstTheStoredLedgers: a replica whose
// memory has its pool full, while another replica released a prefix since,
// does not deny for want of room: the denial wrote nothing, so no
// compare-and-swap fenced it, and the stored ledgers have room. (It used
// to be answered from memory: issue 16's "none is answered from stale
// state".)
//
// A pool of at most maxVersionGets ledgers has their versions read by
// name, a larger one by a list: both are checked.
func TestAnExhaustedDenialIsCheckedAgainstTheStoredLedgers(t *testing.T) {
	// A /30 records its entries in its root; a /25's and a /24's /32s go
	// to /26 shards, so the release elsewhere writes a shard and leaves the
	// root as it was.
	for cidr, byName := range map[string]bool{"10.0.0.0/30": true, "10.0.2.0/25": false, "10.0.1.0/24": false} {
		t.Run(cidr, func(t *testing.T) {
			s := newMemStore()
			pool := testPool(cidr)
			ctx := context.Background()
			a, b := NewManager(s, nil), NewManager(s, nil)
			var held []netip.Prefix
			for i := range addresses(netip.MustParsePrefix(cidr)).Int64() {
				p, err := a.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("ns"), ID: fmt.Sprint("c", i)})
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, p)
			}
			if _, err := a.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("ns"), ID: "full"}); !errors.As(err, new(*allocator.ExhaustedError)) {
				t.Fatalf("one /32 more than %s holds: %v, want exhausted", cidr, err)
			}
			if (s.versionNames != nil) != byName {
				t.Fatalf("the denial read the versions of %v by name, want by name: %v", s.versionNames, byName)
			}
			i := len(held) / 2
			root, _ := s.Get(ctx, pool.Name)
			if freed, err := b.Release(ctx, pool, held[i], ClaimHolder("ns"), fmt.Sprint("c", i), 0, nil); err != nil || !freed {
				t.Fatalf("releasing %s at the other replica: freed %v, %v", held[i], freed, err)
			}
			if after, _ := s.Get(ctx, pool.Name); (root.Spec.Shards == "") != (after.ResourceVersion != root.ResourceVersion) {
				t.Fatalf("the release wrote the root: %v (the pool has shards: %v)", after.ResourceVersion != root.ResourceVersion, root.Spec.Shards != "")
			}
			p, err := a.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("ns"), ID: "after"})
			if err != nil || p != held[i] {
				t.Fatalf("after %s was released elsewhere, the replica whose memory had the pool full answered %v, %v; want %s", held[i], p, err, held[i])
			}
		})
	}
}

// TestAnswersThatWroteNothingCostOneVersionRead: on a replica whose memory
// is the stored ledgers, a denial, a dry run, an Adopt and a release that
// finds nothing each read the ledgers' resourceVersions once, and nothing
// else: no ledger is read whole, no allocator rebuilt. (An Adopt used to
// rebuild from every ledger of its pool, which made each IPAddressClaim
// cost a read of every entry.) An answer that wrote something reads
// nothing: its write is its fence.
func TestAnswersThatWroteNothingCostOneVersionRead(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.1.0.0/30")
	ctx := context.Background()
	m := NewManager(s, nil)
	held, err := m.Allocate(ctx, Request{Pool: pool, Bits: 31, Holder: ClaimHolder("ns"), ID: "held"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("ns"), ID: "written"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		answer func() error
	}{
		{"a commit", func() error {
			_, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("ns"), ID: "another"})
			return err
		}},
		{"an exhausted denial", func() error {
			if _, err := m.Allocate(ctx, Request{Pool: pool, Bits: 31, Holder: ClaimHolder("ns"), ID: "no-room"}); !errors.As(err, new(*allocator.ExhaustedError)) {
				return fmt.Errorf("want exhausted, got %v", err)
			}
			return nil
		}},
		{"a dry run", func() error {
			_, err := m.Allocate(ctx, Request{Pool: pool, CIDR: held, Bits: 31, Holder: ClaimHolder("ns"), ID: "dry", DryRun: true})
			if !errors.Is(err, allocator.ErrOverlap) {
				return fmt.Errorf("want overlap, got %v", err)
			}
			return nil
		}},
		{"an Adopt that finds its entry", func() error {
			p, err := m.Allocate(ctx, Request{Pool: pool, Bits: 31, Holder: ClaimHolder("ns"), ID: "held", Adopt: true})
			if err == nil && p != held {
				err = fmt.Errorf("adopted %s, want %s", p, held)
			}
			return err
		}},
		{"a release that finds nothing", func() error {
			_, err := m.Release(ctx, pool, held, ClaimHolder("ns"), "not-its-id", 0, nil)
			return err
		}},
	} {
		ledgers, versions := s.ledgerReads, s.versionReads
		if err := c.answer(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want := 1
		if c.name == "a commit" {
			want = 0
		}
		if s.ledgerReads != ledgers || s.versionReads-versions != want {
			t.Errorf("%s read %d ledgers whole and their versions %d times; want 0 and %d", c.name, s.ledgerReads-ledgers, s.versionReads-versions, want)
		}
	}
}

// TestAdoptKnownReadsTheLedgersOnlyForAHit: an AdoptKnown whose entry
// memory records is answered as an Adopt's, once the ledgers' versions say
// memory is the stored ledgers; one memory records nothing for commits a
// new entry, fenced by its write, without reading them (every
// IPAddressClaim's allocation is one: a read of the versions ahead of
// every batch of a burst had cost more than the batch's write).
func TestAdoptKnownReadsTheLedgersOnlyForAHit(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.1.0.0/29")
	ctx := context.Background()
	m := NewManager(s, nil)
	held, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: AddressClaimHolder("ns"), ID: "held"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name     string
		id       string
		want     func(netip.Prefix) bool
		versions int
	}{
		{"a hit", "held", func(p netip.Prefix) bool { return p == held }, 1},
		{"a miss", "new", func(p netip.Prefix) bool { return p.IsValid() && p != held }, 0},
		{"the miss's entry, a hit now", "new", func(p netip.Prefix) bool { return p.IsValid() && p != held }, 1},
	} {
		ledgers, versions := s.ledgerReads, s.versionReads
		p, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: AddressClaimHolder("ns"), ID: c.id, AdoptKnown: true})
		if err != nil || !c.want(p) {
			t.Fatalf("%s answered %v, %v", c.name, p, err)
		}
		if s.ledgerReads != ledgers || s.versionReads-versions != c.versions {
			t.Errorf("%s read %d ledgers whole and their versions %d times; want 0 and %d", c.name, s.ledgerReads-ledgers, s.versionReads-versions, c.versions)
		}
	}
	if l := s.ledger(t); len(l.Allocations) != 2 {
		t.Errorf("the pool records %v, want two entries: one an id", l.Allocations)
	}
}

// TestByNameReadsOnlyAFewStoredLedgers: versions are read by name only
// for a pool of at most maxVersionGets ledgers that are all stored; reads
// by name show one moment only for ledgers that are stored (byName), so a
// pool with a listed shard not created yet, or a dead one, is listed.
func TestByNameReadsOnlyAFewStoredLedgers(t *testing.T) {
	stored := func(name string) *doc {
		return &doc{name: name, obj: &ipamv1alpha1.IPLedger{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "1"}}}
	}
	some := func(n int) []*doc {
		var out []*doc
		for i := range n {
			out = append(out, stored(fmt.Sprint("l", i)))
		}
		return out
	}
	absent, dead := some(1), some(1)
	absent[0].obj = nil
	dead[0].dead = true
	for _, c := range []struct {
		name   string
		docs   []*doc
		byName bool
	}{
		{"the root alone", some(1), true},
		{"as many stored as are read by name", some(maxVersionGets), true},
		{"one more", some(maxVersionGets + 1), false},
		{"a listed shard not created", absent, false},
		{"a dead shard", dead, false},
	} {
		names := byName(c.docs)
		if (names != nil) != c.byName || (names != nil && len(names) != len(c.docs)) {
			t.Errorf("%s: by name %v, want by name: %v", c.name, names, c.byName)
		}
	}
}
