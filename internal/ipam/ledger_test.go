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
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// checkShards fails unless the store obeys the ledger's rules: each prefix
// sits in the ledger its length says, a listed shard overlaps no prefix the
// root records, and a sealed shard records nothing.
func checkShards(t *testing.T, s *memStore) {
	t.Helper()
	root, err := s.Get(context.Background(), "p")
	if err != nil {
		t.Fatal(err)
	}
	bits := int(root.Spec.ShardBits)
	rootAllocs, _, err := parseDoc(root)
	if err != nil {
		t.Fatal(err)
	}
	listed, err := parseShards(root)
	if err != nil {
		t.Fatal(err)
	}
	for p := range rootAllocs {
		if bits != 0 && p.Bits() > bits {
			t.Errorf("root records %s, longer than its shards' /%d", p, bits)
		}
		for sh := range listed {
			if p.Overlaps(sh) {
				t.Errorf("root records %s over its listed shard %s", p, sh)
			}
		}
	}
	shards, _ := s.List(context.Background(), "p")
	for i := range shards {
		sh := &shards[i]
		if sh.Name == "p" {
			continue
		}
		allocs, _, err := parseDoc(sh)
		if err != nil {
			t.Fatal(err)
		}
		if sh.Spec.Sealed && (len(allocs) > 0 || sh.Spec.Holds != "") {
			t.Errorf("sealed shard %s records %v", sh.Name, allocs)
		}
		cidr := netip.MustParsePrefix(sh.Spec.Shard)
		for p := range allocs {
			if p.Bits() <= bits || !cidr.Contains(p.Addr()) {
				t.Errorf("shard %s (%s) records %s", sh.Name, cidr, p)
			}
		}
		if len(allocs) > 1<<(32-bits) {
			t.Errorf("shard %s records %d prefixes", sh.Name, len(allocs))
		}
	}
}

// Current reports whether the snapshot reflects exactly these ledgers of
// its pool (as a cache holds them), what the tests check a Manager's
// snapshot against: the root at the same version and every shard it
// lists at the same version.
func (s *Snapshot) Current(ledgers []ipamv1alpha1.IPLedger) bool {
	seen := 0
	for i := range ledgers {
		l := &ledgers[i]
		v, ok := s.Versions[l.Name]
		if !ok {
			continue // a sealed shard no longer listed: it records nothing
		}
		if v != l.ResourceVersion {
			return false
		}
		seen++
	}
	for _, v := range s.Versions {
		if v == "" {
			seen++ // listed, never created: nothing to find
		}
	}
	return seen == len(s.Versions)
}

// checkSnapshot fails unless m's snapshot of the pool is current with the
// store and equals the usage rebuilt from it.
func checkSnapshot(t *testing.T, s *memStore, m *Manager, pool *ipamv1alpha1.IPPool, now func() time.Time) {
	t.Helper()
	snap, ok := m.Snapshot(pool.Name)
	if !ok {
		t.Fatal("no snapshot of a pool the manager serves")
	}
	ledgers, _ := s.List(context.Background(), pool.Name)
	if !snap.Current(ledgers) {
		t.Fatalf("the snapshot %v is not current with the store", snap.Versions)
	}
	a, err := Build(pool, s.ledger(t), now)
	if err != nil {
		t.Fatal(err)
	}
	want := a.Usage()
	got := snap.Usage
	if got.Allocated.Cmp(want.Allocated) != 0 || got.Available.Cmp(want.Available) != 0 || got.LargestFree != want.LargestFree {
		t.Fatalf("snapshot usage %+v, rebuilt %+v", got, want)
	}
	if int(snap.Claims) != len(s.ledger(t).Allocations) {
		t.Fatalf("snapshot counts %d claims, the ledger holds %d", snap.Claims, len(s.ledger(t).Allocations))
	}
}

func TestShardsKeepEachLedgerSmall(t *testing.T) {
	s := newMemStore()
	m := NewManager(s, nil)
	pool := testPool("10.0.0.0/20") // hosts by default: /26 shards of 64
	got := allocateConcurrently(t, m, pool, 1000)
	if len(got) != 1000 {
		t.Fatalf("got %d of 1000 hosts from a /20", len(got))
	}
	checkLedger(t, s, netip.MustParsePrefix(pool.Spec.CIDR), got)
	checkShards(t, s)
	root, _ := s.Get(context.Background(), "p")
	if root.Spec.ShardBits != 26 || root.Spec.Allocations != "" {
		t.Errorf("root: shardBits %d, allocations %q; want /26 shards and no host in the root", root.Spec.ShardBits, root.Spec.Allocations)
	}
	if n := strings.Count(root.Spec.Shards, "\n"); n != 16 {
		t.Errorf("root lists %d shards for 1000 hosts, want 16", n)
	}
	t.Logf("%d allocations in %d ledger writes", len(got), s.writes)
}

// TestShardLifecycle runs random allocations of sizes on both sides of the
// shard length and random releases, so that shards open, empty and are
// sealed under larger prefixes; after every step the ledger is exactly what
// was reported, and a new owner restored from it agrees.
func TestShardLifecycle(t *testing.T) {
	s := newMemStore()
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	m := NewManager(s, clock)
	pool := testPool("10.0.0.0/22")
	prefix := netip.MustParsePrefix(pool.Spec.CIDR)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	live := map[netip.Prefix]bool{}
	sealed := 0
	for step := range 2000 {
		if len(live) > 0 && rng.IntN(3) == 0 {
			var victim netip.Prefix
			for p := range live {
				victim = p
				break
			}
			grace := time.Duration(0)
			if rng.IntN(4) == 0 {
				grace = time.Duration(1+rng.IntN(3)) * time.Second
			}
			if err := releaseRecorded(ctx, m, pool, victim, grace); err != nil {
				t.Fatalf("step %d: release %s: %v", step, victim, err)
			}
			delete(live, victim)
		} else {
			bits := []int{32, 32, 31, 29, 26, 25, 24}[rng.IntN(7)]
			if p, err := m.Allocate(ctx, Request{Pool: pool, Bits: bits, Holder: "IPClaim/t"}); err == nil {
				live[p] = true
			}
		}
		if step%50 == 0 {
			var reported []netip.Prefix
			for p := range live {
				reported = append(reported, p)
			}
			checkLedger(t, s, prefix, reported)
			checkShards(t, s)
			checkSnapshot(t, s, m, pool, clock)
			// A new owner sees the same pool: it cannot get what is live.
			fresh := NewManager(s, clock)
			for p := range live {
				if _, err := fresh.Allocate(ctx, Request{Pool: pool, CIDR: p, Holder: "IPClaim/t", DryRun: true}); err == nil {
					t.Fatalf("step %d: a restored owner would hand out the live %s", step, p)
				}
			}
		}
		now = now.Add(time.Second)
	}
	for _, l := range s.ledgers {
		if l.Spec.Sealed {
			sealed++
		}
	}
	if sealed == 0 {
		t.Error("no shard was ever sealed: the test does not reach the seal path")
	}
	t.Logf("%d live, %d sealed shards, %d ledger writes", len(live), sealed, s.writes)
}

// TestStaleWriterCannotWriteASealedShard: a writer keeps a shard it opened
// in memory while another owner seals it under a larger prefix. The stale
// writer's next host must not land inside that prefix.
func TestStaleWriterCannotWriteASealedShard(t *testing.T) {
	s := newMemStore()
	stale, fresh := NewManager(s, nil), NewManager(s, nil)
	pool := testPool("10.0.0.0/24") // /26 shards
	ctx := context.Background()
	host, err := stale.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"})
	if err != nil {
		t.Fatal(err)
	}
	if err := releaseRecorded(ctx, stale, pool, host, 0); err != nil {
		t.Fatal(err)
	}
	// The shard 10.0.0.0/26 is open and empty; the new owner covers it.
	big, err := fresh.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.0/25"), Holder: "IPPool/child"})
	if err != nil {
		t.Fatal(err)
	}
	if snap, _ := stale.Snapshot(pool.Name); snap.Current(mustList(t, s)) || !snap.Ahead(mustList(t, s)) {
		t.Error("the stale writer's snapshot claims to be current, or the ledgers not ahead of it, after another owner wrote")
	}
	sealedShard, err := s.Get(ctx, ShardName("p", 0))
	if err != nil || !sealedShard.Spec.Sealed {
		t.Fatalf("shard 0: %v, sealed %v; want it sealed", err, sealedShard != nil && sealedShard.Spec.Sealed)
	}
	p, err := stale.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"})
	if err != nil {
		t.Fatal(err)
	}
	if big.Overlaps(p) {
		t.Fatalf("the stale writer handed out %s inside %s", p, big)
	}
	if stale.Conflicts() == 0 {
		t.Error("the stale writer never learned it lost")
	}
	checkLedger(t, s, netip.MustParsePrefix(pool.Spec.CIDR), []netip.Prefix{big, p})
	checkShards(t, s)
}

func TestShardBits(t *testing.T) {
	ptr := func(v int32) *int32 { return &v }
	for _, tc := range []struct {
		cidr string
		def  *int32
		want int
	}{
		{"10.0.0.0/8", nil, 26},
		{"10.0.0.0/26", nil, 0},
		{"10.0.0.0/25", nil, 26},
		{"10.0.0.0/8", ptr(24), 18},
		{"2001:db8::/32", ptr(64), 58},
		{"2001:db8::/64", nil, 122},
		{"2001:db8::/122", nil, 0},
	} {
		pool := &ipamv1alpha1.IPPool{Spec: ipamv1alpha1.IPPoolSpec{CIDR: tc.cidr, DefaultPrefixLength: tc.def}}
		if got := ShardBits(pool); got != tc.want {
			t.Errorf("ShardBits(%s, default %v) = %d, want %d", tc.cidr, tc.def, got, tc.want)
		}
	}
}

func mustList(t *testing.T, s *memStore) []ipamv1alpha1.IPLedger {
	t.Helper()
	l, err := s.List(context.Background(), "p")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestHoldsEndLateRatherThanEarly(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.1/32")
	end := time.Unix(1_800_000_000, 400_000_000)
	if got := formatHolds(map[netip.Prefix]time.Time{p: end}); got != "10.0.0.1/32 1800000001\n" {
		t.Errorf("a hold ending at %s is written %q, want it rounded up to the next second", end, got)
	}
	if got := formatHolds(map[netip.Prefix]time.Time{p: time.Unix(1_800_000_000, 0)}); got != "10.0.0.1/32 1800000000\n" {
		t.Errorf("a hold ending on a second is written %q", got)
	}
}

// TestASnapshotIsAheadOfACacheThatLagsItsOwnWrites: ledgers as a cache
// holds them a commit behind the owner's snapshot are not Current, but
// not Ahead either: the snapshot is newer, and the pool's status is
// published from it, not rebuilt from every ledger. A version that is
// not a number counts as ahead.
func TestASnapshotIsAheadOfACacheThatLagsItsOwnWrites(t *testing.T) {
	s := newMemStore()
	m := NewManager(s, nil)
	pool := testPool("10.0.0.0/24") // /26 shards
	ctx := context.Background()
	if _, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"}); err != nil {
		t.Fatal(err)
	}
	behind := mustList(t, s)
	if _, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"}); err != nil {
		t.Fatal(err)
	}
	snap, _ := m.Snapshot(pool.Name)
	if snap.Current(behind) || snap.Ahead(behind) {
		t.Errorf("ledgers a commit behind the snapshot: current %t, ahead %t; want neither", snap.Current(behind), snap.Ahead(behind))
	}
	now := mustList(t, s)
	if !snap.Current(now) || snap.Ahead(now) {
		t.Errorf("the ledgers as written: current %t, ahead %t; want current", snap.Current(now), snap.Ahead(now))
	}
	now[0].ResourceVersion = "not-a-revision"
	if !snap.Ahead(now) {
		t.Error("a version that is not a number is not ahead")
	}
}
