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
	"runtime"
	"strings"
	"testing"
	"time"

	"go4.org/netipx"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
)

// stickyPool is a /29 (eight hosts) that keeps released prefixes for an
// hour, with a minute of reuse grace, on a clock the test moves.
type stickyPool struct {
	t     *testing.T
	store *memStore
	pool  *ipamv1alpha1.IPPool
	now   time.Time
	held  map[string]held // by identity
}

type held struct {
	p  netip.Prefix
	id string
}

func newStickyPool(t *testing.T) *stickyPool {
	sp := &stickyPool{t: t, store: newMemStore(), pool: testPool("10.0.0.0/29"), now: time.Unix(1_800_000_000, 0), held: map[string]held{}}
	sp.pool.Spec.RetainReleased = &metav1.Duration{Duration: time.Hour}
	sp.pool.Spec.ReuseGracePeriodSeconds = ptr.To[int64](60)
	return sp
}

func (sp *stickyPool) clock() time.Time { return sp.now }

// manager is a replica that starts from the stored ledgers: a restart or a
// failover.
func (sp *stickyPool) manager() *Manager { return NewManager(sp.store, sp.clock) }

func (sp *stickyPool) claim(m *Manager, name string) (netip.Prefix, error) {
	sp.t.Helper()
	id := NewEntryID()
	p, err := m.Allocate(context.Background(), Request{Pool: sp.pool, Bits: 32, Holder: ClaimHolder("ns"), ID: id,
		Sticky: &Identity{Namespace: "ns", Name: name}})
	if err == nil {
		sp.held[name] = held{p, id}
	}
	sp.disjoint()
	return p, err
}

func (sp *stickyPool) mustClaim(m *Manager, name string) netip.Prefix {
	sp.t.Helper()
	p, err := sp.claim(m, name)
	if err != nil {
		sp.t.Fatalf("claim %s: %v", name, err)
	}
	return p
}

func (sp *stickyPool) release(m *Manager, name string) netip.Prefix {
	sp.t.Helper()
	h := sp.held[name]
	freed, err := m.Release(context.Background(), sp.pool, h.p, ClaimHolder("ns"), h.id, Grace(sp.pool),
		RetainOf(&ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: "uid-" + "name"}}, sp.pool))
	if err != nil || !freed {
		sp.t.Fatalf("release %s of %s: freed %v, %v", h.p, name, freed, err)
	}
	delete(sp.held, name)
	sp.disjoint()
	return h.p
}

// disjoint checks the stored ledger: its allocations and the prefixes it
// keeps never overlap, and the allocations are exactly what the test holds.
func (sp *stickyPool) disjoint() {
	sp.t.Helper()
	l := sp.store.ledger(sp.t)
	var b netipx.IPSetBuilder
	check := func(p netip.Prefix, what string) {
		set, _ := b.IPSet()
		if set.OverlapsPrefix(p) {
			sp.t.Fatalf("%s %s overlaps another allocation or kept prefix: %v", what, p, l)
		}
		b.AddPrefix(p)
	}
	for p := range l.Allocations {
		check(p, "allocation")
	}
	for p := range l.Released {
		if _, kept := l.Kept(p, sp.now); kept {
			check(p, "kept prefix")
		}
	}
	if len(l.Allocations) != len(sp.held) {
		sp.t.Fatalf("the ledger records %d allocations, the test holds %d", len(l.Allocations), len(sp.held))
	}
}

func TestStickyClaimGetsItsPrefixBackAndOthersDoNot(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	p0 := sp.mustClaim(m, "web-0")
	sp.mustClaim(m, "web-1")
	sp.release(m, "web-0")

	// Within the reuse grace and after it, with room elsewhere, another
	// identity never gets web-0's prefix.
	for _, name := range []string{"other-a", "other-b"} {
		if p := sp.mustClaim(m, name); p == p0 {
			t.Fatalf("%s got %s, kept for web-0", name, p)
		}
		sp.now = sp.now.Add(90 * time.Second)
	}
	// web-0 comes back (a StatefulSet pod created again): the same prefix,
	// whatever the reuse grace says.
	if p := sp.mustClaim(m, "web-0"); p != p0 {
		t.Fatalf("web-0 came back to %s, want %s", p, p0)
	}
	// Who held it before stays on record while the window lasts.
	l := sp.store.ledger(t)
	r, ok := l.Released[p0]
	if !ok || r.Identity != "web-0" || r.Namespace != "ns" || r.Released.IsZero() || r.Bound.After(r.Released) || !r.Until.After(r.Released) {
		t.Fatalf("record of %s: %+v, %v", p0, r, ok)
	}
	if _, kept := l.Kept(p0, sp.now); kept {
		t.Fatalf("%s is held again and still kept", p0)
	}
}

func TestStickyKeepSurvivesRestartAndFailover(t *testing.T) {
	sp := newStickyPool(t)
	first := sp.manager()
	p := sp.mustClaim(first, "db-0")
	sp.release(first, "db-0")
	// Another replica takes the pool over from the ledgers alone.
	second := sp.manager()
	for i := range 6 {
		if q := sp.mustClaim(second, fmt.Sprintf("fill-%d", i)); q == p {
			t.Fatalf("fill-%d got %s, kept for db-0", i, q)
		}
	}
	if q := sp.mustClaim(sp.manager(), "db-0"); q != p {
		t.Fatalf("db-0 got %s after a failover, want %s", q, p)
	}
}

func TestKeptPrefixesGoToOthersOnlyWhenNothingElseFitsOldestFirst(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	for i := range 8 {
		sp.mustClaim(m, fmt.Sprintf("web-%d", i))
	}
	older := sp.release(m, "web-3")
	sp.now = sp.now.Add(10 * time.Second)
	newer := sp.release(m, "web-5")

	// Within the reuse grace of both: exhausted, saying when one frees.
	_, err := sp.claim(m, "new-a")
	if !errors.Is(err, allocator.ErrExhausted) || !strings.Contains(err.Error(), "2 prefixes are retained") ||
		!strings.Contains(err.Error(), "after the reuse grace") {
		t.Fatalf("new-a within the grace: %v", err)
	}
	// Past the older one's grace only: new-a gets the older.
	sp.now = sp.now.Add(55 * time.Second)
	if p := sp.mustClaim(m, "new-a"); p != older {
		t.Fatalf("new-a got %s, want the oldest kept prefix %s", p, older)
	}
	if _, err := sp.claim(m, "new-b"); !errors.Is(err, allocator.ErrExhausted) {
		t.Fatalf("new-b while the newer is in its grace: %v", err)
	}
	sp.now = sp.now.Add(10 * time.Second)
	if p := sp.mustClaim(m, "new-b"); p != newer {
		t.Fatalf("new-b got %s, want %s", p, newer)
	}
	// web-3's prefix went to someone else: web-3 waits like anyone.
	if _, err := sp.claim(m, "web-3"); !errors.Is(err, allocator.ErrExhausted) {
		t.Fatalf("web-3 after its prefix went to new-a: %v", err)
	}
}

func TestKeptPrefixIsFreeForAnyoneAfterTheWindow(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	p := sp.mustClaim(m, "web-0") // 10.0.0.0, first fit
	sp.release(m, "web-0")
	if q := sp.mustClaim(m, "a"); q == p {
		t.Fatalf("a got %s inside the window", q)
	}
	sp.now = sp.now.Add(time.Hour + time.Second)
	if q := sp.mustClaim(m, "b"); q != p {
		t.Fatalf("b got %s after the window, want the first free %s", q, p)
	}
	// And a new replica agrees: nothing is kept any more.
	if _, kept := sp.store.ledger(t).Kept(p, sp.now); kept {
		t.Fatalf("%s still kept after the window", p)
	}
}

func TestKeptPrefixRefusesASpecificRequestAndAStaleRelease(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	p := sp.mustClaim(m, "web-0")
	stale := sp.held["web-0"]
	sp.release(m, "web-0")
	_, err := m.Allocate(context.Background(), Request{Pool: sp.pool, CIDR: p, Bits: 32, Holder: ClaimHolder("ns"), Sticky: &Identity{"ns", "x"}})
	if err == nil || !strings.Contains(err.Error(), "retained for ns/web-0") {
		t.Fatalf("a specific request for the kept %s: %v", p, err)
	}
	// A release retried (or a sweep) naming the old entry frees nothing.
	freed, err := m.Release(context.Background(), sp.pool, p, ClaimHolder("ns"), stale.id, 0, nil)
	if err != nil || freed {
		t.Fatalf("stale release of a kept prefix: freed %v, %v", freed, err)
	}
	if q := sp.mustClaim(m, "web-0"); q != p {
		t.Fatalf("web-0 got %s after a stale release, want %s", q, p)
	}
}

// BenchmarkReleasedLines measures what a retained prefix's record costs: its
// line in the ledger's text (etcd) and its parsed form in the owner's heap.
//
//	go test ./internal/ipam -run '^$' -bench ReleasedLines -benchtime 3x
func BenchmarkReleasedLines(b *testing.B) {
	const n = 10000
	var text strings.Builder
	for i := range n {
		fmt.Fprintf(&text, "10.%d.%d.%d/32 default web-%d 3a97b304-9614-4a4c-b400-8563af1b%04d 1800000000 1800000100 1800003700 kept\n",
			i>>16&255, i>>8&255, i&255, i, i)
	}
	obj := &ipamv1alpha1.IPLedger{Spec: ipamv1alpha1.IPLedgerSpec{Released: text.String()}}
	var heap uint64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r, err := parseReleased(obj)
		if err != nil || len(r) != n {
			b.Fatal(len(r), err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap = (after.HeapAlloc - before.HeapAlloc) / n
		runtime.KeepAlive(r)
	}
	b.ReportMetric(float64(len(obj.Spec.Released))/n, "text-B/line")
	b.ReportMetric(float64(heap), "heap-B/line")
}
