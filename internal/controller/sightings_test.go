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

package controller

import (
	"fmt"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

func TestSightings(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	a, b, c := netip.MustParsePrefix("10.0.0.0/32"), netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("10.0.0.2/32")
	ea := ipam.Entry{Holder: ipam.ClaimHolder("ns"), ID: "a", At: time.Unix(10, 0)}
	eb := ipam.Entry{Holder: ipam.PoolHolder("p"), ID: "b", At: time.Unix(10, 0)}
	ec := ipam.Entry{Holder: ipam.ClaimHolder("ns"), ID: "c", At: time.Unix(10, 0)}
	renewed := eb
	renewed.At = time.Unix(20, 0)

	var s sightings
	first := func(p netip.Prefix, e ipam.Entry) (time.Time, bool) {
		t.Helper()
		w := find(s.seen["l"], key(p, e))
		if w == nil {
			return time.Time{}, false
		}
		return s.base.Add(w.first), true
	}
	want := func(p netip.Prefix, e ipam.Entry, at time.Time, why string) {
		t.Helper()
		if got, ok := first(p, e); !ok || !got.Equal(at) {
			t.Errorf("%s: first sight of %s %s is %v (recorded %t), want %v", why, p, e.ID, got, ok, at)
		}
	}
	gone := func(p netip.Prefix, e ipam.Entry, why string) {
		t.Helper()
		if _, ok := first(p, e); ok {
			t.Errorf("%s: %s %s is still recorded", why, p, e.ID)
		}
	}

	s.record("l", map[netip.Prefix]ipam.Entry{a: ea, b: eb}, t0)
	s.record("l", map[netip.Prefix]ipam.Entry{a: ea, b: renewed}, t0.Add(time.Second))
	want(a, ea, t0, "an entry seen again")
	want(b, renewed, t0.Add(time.Second), "an entry renewed by a take-over (a new time)")
	gone(b, eb, "the entry before its renewal")

	s.record("l", map[netip.Prefix]ipam.Entry{a: ea}, t0.Add(2*time.Second))
	gone(b, renewed, "an entry the ledger no longer records")

	// A sweep that read an older version than the informer last saw
	// adds what it had not seen and forgets nothing.
	seen := s.of("p", "l", map[netip.Prefix]ipam.Entry{c: ec}, t0.Add(3*time.Second))
	if w, ok := seen[c]; !ok || !w.first.Equal(t0.Add(3*time.Second)) {
		t.Errorf("the sweep's own sight of c: got %v (told %t)", w, ok)
	}
	want(a, ea, t0, "an entry a sweep's older read lacks")
	s.record("l", map[netip.Prefix]ipam.Entry{a: ea, c: ec}, t0.Add(4*time.Second))
	want(c, ec, t0.Add(3*time.Second), "an entry the sweep saw before the informer")
	s.mark("l", c, ec, sighting{carried: true})
	s.record("l", map[netip.Prefix]ipam.Entry{a: ea, c: ec}, t0.Add(5*time.Second))
	if w := s.of("p", "l", map[netip.Prefix]ipam.Entry{c: ec}, t0.Add(6*time.Second))[c]; !w.carried || !w.first.Equal(t0.Add(3*time.Second)) {
		t.Errorf("what the sweep learnt of an entry is lost when the informer records the ledger again: %+v", w)
	}

	s.forget("l")
	if _, ok := s.seen["l"]; ok {
		t.Errorf("a ledger that is gone is still recorded")
	}
}

// TestSightingsMark: what a sweep learns of an entry, handed back with
// mark, is what its next sweep is told, whatever versions the informer
// recorded between; an entry the sweep added itself is kept and marked
// alike; an entry forgotten is not marked back into being.
func TestSightingsMark(t *testing.T) {
	t0 := time.Now() // with the monotonic reading, as the manager's clock
	entries := map[netip.Prefix]ipam.Entry{}
	for i := range 64 {
		entries[netip.MustParsePrefix(fmt.Sprintf("10.0.0.%d/32", i))] = ipam.Entry{Holder: ipam.ClaimHolder("ns"), ID: fmt.Sprint(i), At: time.Unix(10, 0)}
	}
	// An IPv4 prefix and an unmasked IPv6 one of the same 16 bytes and
	// length are two entries (the IPv6 one comes with the next version).
	v4, mapped := netip.MustParsePrefix("10.0.1.0/32"), netip.PrefixFrom(netip.MustParseAddr("::ffff:10.0.1.0"), 32)
	entries[v4] = ipam.Entry{Holder: ipam.ClaimHolder("ns"), ID: "v4", At: time.Unix(10, 0)}
	p, e := netip.MustParsePrefix("10.0.0.7/32"), entries[netip.MustParsePrefix("10.0.0.7/32")]
	var s sightings
	s.record("l", entries, t0)
	seen := s.of("p", "l", entries, t0.Add(time.Second))
	if len(seen) != len(entries) {
		t.Fatalf("told of %d entries, want %d", len(seen), len(entries))
	}
	for q := range entries {
		if w := seen[q]; !w.first.Equal(t0) || w.carried || w.settled {
			t.Errorf("%s: told %+v, want first seen at %v, nothing learnt", q, w, t0)
		}
	}
	if !strings.Contains(seen[p].first.String(), " m=") {
		t.Errorf("the first sight %v lost its monotonic reading: a wall clock set would move the grace", seen[p].first)
	}

	// The informer records a newer version between two sweeps: one entry
	// more, one renewed. What the sweep marked stays.
	s.mark("l", p, e, sighting{carried: true, settled: true})
	renewed := entries[netip.MustParsePrefix("10.0.0.8/32")]
	renewed.At = time.Unix(20, 0)
	newer := maps.Clone(entries)
	newer[netip.MustParsePrefix("10.0.0.8/32")] = renewed
	newer[mapped] = entries[v4]
	s.record("l", newer, t0.Add(2*time.Second))
	seen = s.of("p", "l", newer, t0.Add(3*time.Second))
	if w := seen[p]; !w.carried || !w.settled || !w.first.Equal(t0) {
		t.Errorf("the marked entry after a newer version: %+v, want carried and settled, first seen at %v", w, t0)
	}
	if w := seen[netip.MustParsePrefix("10.0.0.8/32")]; !w.first.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("the renewed entry: first seen at %v, want afresh at %v", w.first, t0.Add(2*time.Second))
	}
	if w, u := seen[v4], seen[mapped]; !w.first.Equal(t0) || !u.first.Equal(t0.Add(2*time.Second)) {
		t.Errorf("an IPv4 prefix first seen at %v and an IPv6 one of the same bytes at %v, want %v and %v", w.first, u.first, t0, t0.Add(2*time.Second))
	}

	// An entry the sweep read before the informer saw it: added, marked,
	// then kept by the version that records it.
	q := netip.MustParsePrefix("10.0.0.200/32")
	eq := ipam.Entry{Holder: ipam.ClaimHolder("ns"), ID: "early", At: time.Unix(30, 0)}
	if w := s.of("p", "l", map[netip.Prefix]ipam.Entry{q: eq}, t0.Add(4*time.Second))[q]; !w.first.Equal(t0.Add(4*time.Second)) || w.carried {
		t.Errorf("an entry the sweep read first: told %+v, want first seen at %v", w, t0.Add(4*time.Second))
	}
	s.mark("l", q, eq, sighting{carried: true})
	if w := find(s.seen["l"], key(p, e)); w == nil || !w.carried {
		t.Errorf("the entry marked before the sweep added another lost its mark")
	}
	newer[q] = eq
	s.record("l", newer, t0.Add(5*time.Second))
	if w := s.of("p", "l", newer, t0.Add(6*time.Second))[q]; !w.carried || !w.first.Equal(t0.Add(4*time.Second)) {
		t.Errorf("an entry the sweep read first, once recorded: %+v, want carried, first seen at %v", w, t0.Add(4*time.Second))
	}
	if got, want := len(s.seen["l"]), len(newer); got != want || cap(s.seen["l"]) != want {
		t.Errorf("%d sights kept in room for %d, want %d in exactly that", got, cap(s.seen["l"]), want)
	}

	// An entry gone from the ledger before its sweep marks it.
	delete(newer, p)
	s.record("l", newer, t0.Add(7*time.Second))
	s.mark("l", p, e, sighting{carried: true})
	if find(s.seen["l"], key(p, e)) != nil {
		t.Errorf("marking an entry the ledger no longer records recorded it again")
	}
}

// BenchmarkSightingsRecord is what every replica does on each change to a
// full shard: parse it and record its entries.
func BenchmarkSightingsRecord(b *testing.B) {
	var text strings.Builder
	for i := range 64 {
		fmt.Fprintf(&text, "10.1.0.%d/32 %s %d %s\n", i, ipam.ClaimHolder("tenant-a"), 1_765_000_000+i, fmt.Sprintf("0f8fad5b-d9cb-469f-a165-70867728%04d", i))
	}
	l := &ipamv1alpha1.IPLedger{ObjectMeta: metav1.ObjectMeta{Name: "pool.3"}, Spec: ipamv1alpha1.IPLedgerSpec{Allocations: text.String()}}
	var s sightings
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		entries, err := ipam.Entries(l)
		if err != nil {
			b.Fatal(err)
		}
		s.record(l.Name, entries, now)
	}
}

// TestSightingsCost reports the heap sightings keep per ledger entry,
// recorded as the informer records them: each version of a full shard
// parsed from its text, the second renewing one entry, the text and the
// parsed entries dropped (docs/design.md, "Memory per claim"). It fails
// well above what they keep, so that a map and an object per entry again
// shows.
//
//	go test ./internal/controller -run TestSightingsCost -v
func TestSightingsCost(t *testing.T) {
	const ledgers, per = 100, 64
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	text := func(l, version int) string {
		var b strings.Builder
		for i := range per {
			at := 1_765_000_000 + i
			if i == 0 {
				at += version
			}
			fmt.Fprintf(&b, "10.%d.%d.%d/32 %s %d 0f8fad5b-d9cb-469f-a165-7086%04d%04d\n", l/256, l%256, i, ipam.ClaimHolder("tenant-a"), at, l, i)
		}
		return b.String()
	}
	now := time.Now()
	before := heap()
	s := &sightings{}
	for version := range 2 {
		for l := range ledgers {
			obj := &ipamv1alpha1.IPLedger{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pool.%d", l)},
				Spec: ipamv1alpha1.IPLedgerSpec{Allocations: text(l, version)}}
			entries, err := ipam.Entries(obj)
			if err != nil {
				t.Fatal(err)
			}
			s.record(obj.Name, entries, now.Add(time.Duration(version)*time.Second))
		}
	}
	kept := heap() - before
	runtime.KeepAlive(s)
	cost := kept / (ledgers * per)
	t.Logf("sightings keep %d B an entry (%d ledgers of %d entries, with the entries' IDs)", cost, ledgers, per)
	if cost > 160 {
		t.Errorf("sightings keep %d B an entry: a map and an object per entry again?", cost)
	}
}

func TestPublishedAgesMoveSightsBackNeverForward(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	a, b := netip.MustParsePrefix("10.0.0.0/32"), netip.MustParsePrefix("10.0.0.1/32")
	ea := ipam.Entry{Holder: ipam.ClaimHolder("ns"), ID: "a", At: time.Unix(10, 0)}
	eb := ipam.Entry{Holder: ipam.ClaimHolder("ns"), ID: "b", At: time.Unix(10, 0)}
	var s sightings
	s.record("l", map[netip.Prefix]ipam.Entry{a: ea, b: eb}, now.Add(-time.Minute))
	published := []ipamv1alpha1.UnconfirmedEntry{
		{Ledger: "l", CIDR: a.String(), Holder: ea.Holder, ID: "a", CommittedAt: metav1.NewTime(ea.At), SeenFor: metav1.Duration{Duration: 90 * time.Second}},
		// Seen for less than this replica saw it: no change.
		{Ledger: "l", CIDR: b.String(), Holder: eb.Holder, ID: "b", CommittedAt: metav1.NewTime(eb.At), SeenFor: metav1.Duration{Duration: 30 * time.Second}},
		// Another ledger's, another ID, another time: not these entries.
		{Ledger: "m", CIDR: b.String(), Holder: eb.Holder, ID: "b", CommittedAt: metav1.NewTime(eb.At), SeenFor: metav1.Duration{Duration: time.Hour}},
		{Ledger: "l", CIDR: b.String(), Holder: eb.Holder, ID: "x", CommittedAt: metav1.NewTime(eb.At), SeenFor: metav1.Duration{Duration: time.Hour}},
		{Ledger: "l", CIDR: b.String(), Holder: eb.Holder, ID: "b", CommittedAt: metav1.NewTime(eb.At.Add(time.Second)), SeenFor: metav1.Duration{Duration: time.Hour}},
	}
	// The informer sees the status 10 s before the sweep reads the ledger:
	// those 10 s count too.
	s.published("p", published, now.Add(-10*time.Second))
	seen := s.of("p", "l", map[netip.Prefix]ipam.Entry{a: ea, b: eb}, now)
	if got := now.Sub(seen[a].first); got != 100*time.Second {
		t.Errorf("a: seen for %s, want the 1m30s published plus the 10s since", got)
	}
	if got := now.Sub(seen[b].first); got != time.Minute {
		t.Errorf("b: seen for %s, want this replica's own 1m0s", got)
	}

	// A later version that gives a smaller age moves nothing forward; one
	// that no longer lists the entry forgets its age, not the sight.
	s.published("p", published[:1], now)
	s.published("p", nil, now.Add(time.Second))
	if got := now.Sub(s.of("p", "l", map[netip.Prefix]ipam.Entry{a: ea}, now)[a].first); got != 100*time.Second {
		t.Errorf("a: seen for %s after later versions, want 1m40s still", got)
	}
	if len(s.aged) != 0 {
		t.Errorf("ages of a pool whose status lists none are kept: %v", s.aged)
	}
}

func TestUnconfirmedStatus(t *testing.T) {
	entry := func(ledger string, i int) ipamv1alpha1.UnconfirmedEntry {
		return ipamv1alpha1.UnconfirmedEntry{Ledger: ledger, CIDR: fmt.Sprintf("10.0.%d.%d/32", i/256, i%256), Holder: ipam.ClaimHolder("ns"),
			ID: fmt.Sprint(i), SeenFor: metav1.Duration{Duration: time.Duration(i) * time.Second}}
	}
	u := newUnconfirmed()
	var swept []ipamv1alpha1.UnconfirmedEntry
	for i := range 70 {
		swept = append(swept, entry("swept", i))
	}
	u.set("p", "swept", 3, swept)
	pool := &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
	pool.Status.Unconfirmed = []ipamv1alpha1.UnconfirmedEntry{entry("swept", 1000), entry("unswept", 100), entry("gone", 200)}
	u.status(pool, func(ledger string) bool { return ledger != "gone" })

	if pool.Status.Pending != 3 {
		t.Errorf("pending %d, want 3", pool.Status.Pending)
	}
	got := pool.Status.Unconfirmed
	if len(got) != maxUnconfirmed {
		t.Fatalf("%d entries, want the cap, %d", len(got), maxUnconfirmed)
	}
	// The swept ledger's entries as the sweep found them, not as the status
	// had them; the unswept ledger's kept; the gone ledger's dropped; the
	// oldest first.
	if got[0] != entry("unswept", 100) || got[1] != entry("swept", 69) || got[63] != entry("swept", 7) {
		t.Errorf("first %v, second %v, last %v", got[0], got[1], got[63])
	}
}

func TestOverdueLedgers(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	a, b := netip.MustParsePrefix("10.0.0.0/32"), netip.MustParsePrefix("10.0.0.1/32")
	ea := ipam.Entry{Holder: ipam.ClaimHolder("ns"), ID: "a", At: time.Unix(10, 0)}
	eb := ipam.Entry{Holder: ipam.ClaimHolder("ns"), ID: "b", At: time.Unix(10, 0)}
	published := func(ledger string, p netip.Prefix, e ipam.Entry, d time.Duration) ipamv1alpha1.UnconfirmedEntry {
		return ipamv1alpha1.UnconfirmedEntry{Ledger: ledger, CIDR: p.String(), Holder: e.Holder, ID: e.ID, CommittedAt: metav1.NewTime(e.At),
			SeenFor: metav1.Duration{Duration: d}}
	}
	var s sightings
	s.record("l1", map[netip.Prefix]ipam.Entry{a: ea}, now.Add(-50*time.Second))
	s.record("l2", map[netip.Prefix]ipam.Entry{b: eb}, now)
	s.record("l3", map[netip.Prefix]ipam.Entry{}, now)
	s.published("p", []ipamv1alpha1.UnconfirmedEntry{
		published("l1", a, ea, 10*time.Second), // seen 50 s ago here: older than published
		published("l2", b, eb, 70*time.Second), // seen just now here, 70 s by the status
		published("l3", b, eb, time.Hour),      // no longer in its ledger
	}, now)
	if got := s.overdue(now, 2*time.Minute, time.Minute); len(got) != 0 {
		t.Errorf("overdue after two minutes: %v, want none", got)
	}
	if got := s.overdue(now, time.Minute, time.Minute); !slices.Equal(got, []string{"l2"}) {
		t.Errorf("overdue after a minute: %v, want [l2]", got)
	}
	// l2 was given 15 s ago: not again within the minute, whatever the
	// status says since.
	s.published("p", []ipamv1alpha1.UnconfirmedEntry{published("l1", a, ea, 10*time.Second), published("l2", b, eb, 70*time.Second)},
		now.Add(15*time.Second))
	if got := s.overdue(now.Add(15*time.Second), time.Minute, time.Minute); !slices.Equal(got, []string{"l1"}) {
		t.Errorf("overdue 15 s later: %v, want [l1]", got)
	}
	got := s.overdue(now.Add(76*time.Second), time.Minute, time.Minute)
	slices.Sort(got)
	if !slices.Equal(got, []string{"l1", "l2"}) {
		t.Errorf("overdue a minute after each was given: %v, want [l1 l2]", got)
	}
}
