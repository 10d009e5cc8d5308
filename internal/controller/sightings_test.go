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
	"net/netip"
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
		w, ok := s.seen["l"][key(p, e)]
		if !ok {
			return time.Time{}, false
		}
		return w.first, true
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
	if w := seen[key(c, ec)]; w == nil || !w.first.Equal(t0.Add(3*time.Second)) {
		t.Errorf("the sweep's own sight of c: got %v", w)
	}
	want(a, ea, t0, "an entry a sweep's older read lacks")
	s.record("l", map[netip.Prefix]ipam.Entry{a: ea, c: ec}, t0.Add(4*time.Second))
	want(c, ec, t0.Add(3*time.Second), "an entry the sweep saw before the informer")
	seen[key(c, ec)].carried = true
	s.record("l", map[netip.Prefix]ipam.Entry{a: ea, c: ec}, t0.Add(5*time.Second))
	if w := s.seen["l"][key(c, ec)]; !w.carried {
		t.Errorf("what the sweep learnt of an entry is lost when the informer records the ledger again")
	}

	s.forget("l")
	if _, ok := s.seen["l"]; ok {
		t.Errorf("a ledger that is gone is still recorded")
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
	if got := now.Sub(seen[key(a, ea)].first); got != 100*time.Second {
		t.Errorf("a: seen for %s, want the 1m30s published plus the 10s since", got)
	}
	if got := now.Sub(seen[key(b, eb)].first); got != time.Minute {
		t.Errorf("b: seen for %s, want this replica's own 1m0s", got)
	}

	// A later version that gives a smaller age moves nothing forward; one
	// that no longer lists the entry forgets its age, not the sight.
	s.published("p", published[:1], now)
	s.published("p", nil, now.Add(time.Second))
	if got := now.Sub(s.of("p", "l", map[netip.Prefix]ipam.Entry{a: ea}, now)[key(a, ea)].first); got != 100*time.Second {
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
