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

// A second adversarial review of retained prefixes: randomized batches
// (sticky and anonymous claims, dry runs, exact requests, releases with and
// without retention, namespace limits, small ledgers, write conflicts,
// failovers, two owners at once, clock jumps) checked after every batch,
// and the three sequences it found: forwarded requests lost their identity
// and retention, a retained denial lost its kind on the wire, and a
// reservation plus a failover left a kept line over an entry.

package ipam

// Second adversarial review of retained prefixes (commit e20c77b): multi-op
// batches, conflicts and retries, failovers, shards.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"go4.org/netipx"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
)

// r2live is an entry the test believes is recorded.
type r2live struct {
	holder, id, ident string
}

type r2world struct {
	t      *testing.T
	rnd    *rand.Rand
	store  *memStore
	pool   *ipamv1alpha1.IPPool
	now    time.Time
	m      *Manager
	live   map[netip.Prefix]r2live
	bits   []int
	idents []string
	log    []string
	// conflict is the chance that an update meets a concurrent write.
	conflict float64
	extra    bool
	maxBytes int64
	// lenientKept skips the check that kept prefixes overlap nothing.
	lenientKept bool
	// staleOK accepts what a stale owner answers from memory without a
	// write: a release that frees nothing, a dry run.
	staleOK bool
}

func (w *r2world) clock() time.Time { return w.now }

func (w *r2world) logf(format string, args ...any) {
	w.log = append(w.log, fmt.Sprintf("[%s] ", w.now.Format("15:04:05.000"))+fmt.Sprintf(format, args...))
}

func (w *r2world) fail(format string, args ...any) {
	w.t.Helper()
	tail := w.log
	if len(tail) > 60 {
		tail = tail[len(tail)-60:]
	}
	var dump strings.Builder
	for name, l := range w.store.ledgers {
		fmt.Fprintf(&dump, "== %s rv=%s sealed=%v shard=%s root=%s shards=%q\n%s-- released\n%s", name, l.ResourceVersion, l.Spec.Sealed, l.Spec.Shard, l.Spec.Root, l.Spec.Shards, l.Spec.Allocations, l.Spec.Released)
	}
	if st := w.m.state(w.pool.Name); st.alloc != nil {
		fmt.Fprintf(&dump, "== owner allocator:")
		for p := range st.alloc.All() {
			fmt.Fprintf(&dump, " %s", p)
		}
		fmt.Fprintf(&dump, "\n== owner docs:")
		for _, d := range st.ledger.docs() {
			fmt.Fprintf(&dump, " %s(dead=%v,%d allocs)", d.name, d.dead, d.allocs.len())
		}
	}
	w.t.Fatalf("%s\n--- last ops:\n%s\n--- store:\n%s", fmt.Sprintf(format, args...), strings.Join(tail, "\n"), dump.String())
}

func (w *r2world) overlapsLive(p netip.Prefix) (netip.Prefix, bool) {
	for q := range w.live {
		if q.Overlaps(p) {
			return q, true
		}
	}
	return netip.Prefix{}, false
}

// check compares the stored ledger with what the test holds: the same
// entries, disjoint, and kept prefixes overlapping nothing.
func (w *r2world) check() {
	w.t.Helper()
	l := w.store.ledger(w.t)
	for p := range l.Allocations {
		if _, ok := w.live[p]; !ok {
			w.fail("LEAK: the ledger records %s (%+v), which no live holder holds", p, l.Allocations[p])
		}
	}
	for p, h := range w.live {
		e, ok := l.Allocations[p]
		if !ok || !e.Is(h.holder, h.id) {
			w.fail("LOST: the test holds %s as %+v, the ledger records %+v (%v)", p, h, e, ok)
		}
	}
	var b netipx.IPSetBuilder
	add := func(p netip.Prefix, what string) {
		set, _ := b.IPSet()
		if set.OverlapsPrefix(p) {
			w.fail("OVERLAP in the stored ledger: %s %s overlaps another allocation or kept prefix\n%v", what, p, l)
		}
		b.AddPrefix(p)
	}
	ps := l.Prefixes()
	for _, p := range ps {
		add(p, "allocation")
	}
	var kept []netip.Prefix
	for p := range l.Released {
		if _, k := l.Kept(p, w.now); k {
			kept = append(kept, p)
		}
	}
	slices.SortFunc(kept, comparePrefix)
	if w.lenientKept {
		return
	}
	for _, p := range kept {
		add(p, "kept prefix")
	}
}

type r2planned struct {
	o     *op
	ident string
	bits  int
}

func (w *r2world) step() {
	rnd := w.rnd
	n := 1 + rnd.IntN(5)
	var batch []*op
	var plans []r2planned
	// releasable: live entries plus entries planned earlier in this batch.
	type relCand struct {
		p     netip.Prefix
		h     r2live
		alloc *op // planned in this batch, p unknown yet
	}
	var cands []relCand
	for p, h := range w.live {
		cands = append(cands, relCand{p: p, h: h})
	}
	slices.SortFunc(cands, func(a, b relCand) int { return comparePrefix(a.p, b.p) })
	for range n {
		switch x := rnd.IntN(10); {
		case x < 5: // allocate
			ident := ""
			if rnd.IntN(4) != 0 {
				ident = w.idents[rnd.IntN(len(w.idents))]
			}
			bits := w.bits[rnd.IntN(len(w.bits))]
			ns := "ns"
			if rnd.IntN(5) == 0 {
				ns = "other"
			}
			req := &Request{Pool: w.pool, Bits: bits, Holder: ClaimHolder(ns), ID: NewEntryID(), DryRun: rnd.IntN(6) == 0}
			if ident != "" {
				req.Sticky = &Identity{Namespace: ns, Name: ident}
			}
			if w.extra && rnd.IntN(4) == 0 {
				base := netip.MustParsePrefix(w.pool.Spec.CIDR)
				span := 1 << (bits - base.Bits())
				a := base.Addr().As4()
				off := uint32(rnd.IntN(span)) << (32 - bits)
				v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
				v += off
				req.CIDR = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bits)
			}
			o := &op{alloc: req, done: make(chan struct{})}
			batch = append(batch, o)
			plans = append(plans, r2planned{o: o, ident: ident, bits: bits})
			if !req.DryRun {
				cands = append(cands, relCand{h: r2live{holder: req.Holder, id: req.ID, ident: ident}, alloc: o})
			}
		case x < 9: // release
			if len(cands) == 0 {
				continue
			}
			c := cands[rnd.IntN(len(cands))]
			grace := time.Duration(0)
			if rnd.IntN(2) == 0 {
				grace = Grace(w.pool)
			}
			var retain *Retain
			if c.h.ident != "" && rnd.IntN(3) != 0 && Retains(w.pool) {
				ns := strings.TrimPrefix(c.h.holder, ClaimHolderPrefix)
				retain = &Retain{Namespace: ns, Identity: c.h.ident, UID: "u-" + c.h.id, For: w.pool.Spec.RetainReleased.Duration}
			}
			p := c.p
			o := &op{release: p, expect: Entry{Holder: c.h.holder, ID: c.h.id}, grace: grace, retain: retain, done: make(chan struct{})}
			if c.alloc != nil {
				// Release of an entry allocated earlier in this batch: the
				// prefix is known only once the batch ran, so fill it in a
				// hook below.
				o.release = netip.Prefix{}
			}
			batch = append(batch, o)
			plans = append(plans, r2planned{o: o})
			if c.alloc != nil {
				// resolved in apply order: we cannot know p in advance, so
				// drop this op instead (keep batch semantics simple).
				batch = batch[:len(batch)-1]
				plans = plans[:len(plans)-1]
			}
		default: // dry run anonymous on possibly exhausted pool
			req := &Request{Pool: w.pool, Bits: w.bits[rnd.IntN(len(w.bits))], Holder: ClaimHolder("ns"), ID: NewEntryID(), DryRun: true}
			o := &op{alloc: req, done: make(chan struct{})}
			batch = append(batch, o)
			plans = append(plans, r2planned{o: o})
		}
	}
	if len(batch) == 0 {
		return
	}
	st := w.m.state(w.pool.Name)
	w.m.commit(st, w.pool, batch)
	// Releases first: an op retried after a conflict runs after the
	// batch's durable releases, whatever their order in the batch.
	for _, pl := range plans {
		o := pl.o
		if o.alloc != nil {
			continue
		}
		ret := "-"
		if o.retain != nil {
			ret = o.retain.Identity
		}
		w.logf("release %s %s id=%s grace=%v retain=%s -> freed=%v %v", o.release, o.expect.Holder, o.expect.ID, o.grace, ret, o.result.IsValid(), o.err)
		if o.err == nil && o.result.IsValid() {
			delete(w.live, o.release)
		} else if o.err == nil {
			if h, ok := w.live[o.release]; ok && h.holder == o.expect.Holder && h.id == o.expect.ID && !w.staleOK {
				w.fail("LEAK: the release of live entry %s %+v freed nothing and failed not", o.release, h)
			}
		}
	}
	for _, pl := range plans {
		o := pl.o
		if o.alloc == nil {
			continue
		}
		req := o.alloc
		kind := "alloc"
		if req.DryRun {
			kind = "dry"
		}
		sticky := "-"
		if req.Sticky != nil {
			sticky = req.Sticky.Namespace + "/" + req.Sticky.Name
		}
		w.logf("%s /%d %s sticky=%s id=%s -> %s %v", kind, req.Bits, req.Holder, sticky, req.ID, o.result, o.err)
		if o.err != nil {
			continue
		}
		if q, ok := w.overlapsLive(o.result); ok && !(req.DryRun && w.staleOK) {
			w.fail("DOUBLE ALLOCATION: %s %s got %s, which overlaps %s held by %+v", kind, req.ID, o.result, q, w.live[q])
		}
		if !req.DryRun {
			w.live[o.result] = r2live{holder: req.Holder, id: req.ID, ident: pl.ident}
		}
	}
	w.check()
}

type r2opts struct {
	noRetain, noFailover, noClockJumps bool
	// extra: short windows, small ledgers, namespace limits, exact cidrs,
	// reservations that come and go.
	extra bool
	// reserve toggles a one-address reservation now and then.
	reserve     bool
	lenientKept bool
	// twoOwners keeps two managers on the store and sends each batch to
	// either: a stale owner that still commits.
	twoOwners bool
}

func r2run(t *testing.T, seed uint64, cidr string, bits []int, steps int, conflict float64, random bool, opt ...r2opts) {
	var o r2opts
	if len(opt) > 0 {
		o = opt[0]
	}
	w := &r2world{t: t, rnd: rand.New(rand.NewPCG(seed, 7)), store: newMemStore(), pool: testPool(cidr),
		now: time.Unix(1_800_000_000, 0), live: map[netip.Prefix]r2live{}, bits: bits,
		idents: []string{"a", "b", "c", "d", "e"}, conflict: conflict}
	w.pool.Spec.RetainReleased = &metav1.Duration{Duration: 10 * time.Minute}
	w.pool.Spec.ReuseGracePeriodSeconds = ptr.To[int64](int64(w.rnd.IntN(2) * 60))
	if o.noRetain {
		w.pool.Spec.RetainReleased = nil
	}
	if random {
		w.pool.Spec.Strategy = ipamv1alpha1.Random
	}
	w.extra = o.extra
	var others []*Manager
	w.staleOK = o.twoOwners
	w.lenientKept = o.lenientKept
	w.m = NewManager(w.store, w.clock)
	if o.extra {
		if w.rnd.IntN(2) == 0 {
			w.pool.Spec.RetainReleased = &metav1.Duration{Duration: time.Duration(30+w.rnd.IntN(120)) * time.Second}
		}
		if w.rnd.IntN(2) == 0 {
			w.pool.Spec.NamespaceLimit = &ipamv1alpha1.NamespaceLimit{Claims: ptr.To[int32](int32(2 + w.rnd.IntN(4)))}
		}
		w.maxBytes = int64(300 + w.rnd.IntN(700))
		w.m.SetMaxLedgerBytes(int(w.maxBytes))
	}
	w.store.beforeUpdate = func() {
		if w.rnd.Float64() >= w.conflict {
			return
		}
		// Another writer (a replica that still believes it owns the
		// pool, writing nothing new) bumps every ledger.
		w.store.mu.Lock()
		for _, l := range w.store.ledgers {
			w.store.rv++
			l.ResourceVersion = fmt.Sprint(w.store.rv)
		}
		w.store.mu.Unlock()
	}
	for i := range steps {
		switch w.rnd.IntN(12) {
		case 0:
			if o.noFailover {
				break
			}
			if o.twoOwners {
				break
			}
			w.logf("failover")
			w.m = NewManager(w.store, w.clock)
			if w.maxBytes > 0 {
				w.m.SetMaxLedgerBytes(int(w.maxBytes))
			}
		case 1:
			if o.noClockJumps {
				break
			}
			w.now = w.now.Add(time.Duration(w.rnd.IntN(700)) * time.Second)
		}
		if o.reserve && w.rnd.IntN(25) == 0 {
			np := w.pool.DeepCopy()
			np.Generation++
			if len(np.Spec.Reserved) > 0 || w.rnd.IntN(2) == 0 {
				np.Spec.Reserved = nil
			} else {
				base := netip.MustParsePrefix(np.Spec.CIDR).Addr().As4()
				x := byte(w.rnd.IntN(16))
				if np.Spec.CIDR == "10.0.0.0/24" {
					x = byte(w.rnd.IntN(256))
				}
				ip := netip.AddrFrom4([4]byte{base[0], base[1], base[2], base[3] + x}).String()
				np.Spec.Reserved = []string{ip + "-" + ip}
			}
			w.logf("reserved now %v", np.Spec.Reserved)
			w.pool = np
		}
		if o.twoOwners {
			if len(others) == 0 {
				m2 := NewManager(w.store, w.clock)
				if w.maxBytes > 0 {
					m2.SetMaxLedgerBytes(int(w.maxBytes))
				}
				others = append(others, w.m, m2)
			}
			w.m = others[w.rnd.IntN(2)]
		}
		d := time.Duration(w.rnd.IntN(40)) * time.Second
		if w.rnd.IntN(3) == 0 {
			d += time.Duration(w.rnd.IntN(1000)) * time.Millisecond
		}
		w.now = w.now.Add(d)
		_ = i
		w.step()
	}
}

// TestStickyReviewFuzzBatches runs random batches of sticky and anonymous
// claims, dry runs and releases (with and without retention) against a
// retaining pool, with concurrent-writer conflicts and failovers, and checks
// after every batch that no answer overlaps a live entry, that the stored
// ledger records exactly the live entries, and that kept prefixes overlap
// nothing.
func TestStickyReviewFuzzBatches(t *testing.T) {
	for seed := range uint64(150) {
		t.Run(fmt.Sprintf("small-%d", seed), func(t *testing.T) {
			r2run(t, seed, "10.0.0.0/28", []int{32, 32, 32, 31, 30}, 200, 0.15, seed%3 == 0)
		})
	}
	for seed := range uint64(60) {
		t.Run(fmt.Sprintf("sharded-%d", seed), func(t *testing.T) {
			r2run(t, 1000+seed, "10.0.0.0/24", []int{26, 27, 28, 30, 32, 32}, 200, 0.15, seed%3 == 0)
		})
	}
}

func TestStickyReviewFuzzExtra(t *testing.T) {
	for seed := range uint64(300) {
		t.Run(fmt.Sprintf("small-%d", seed), func(t *testing.T) {
			r2run(t, 5000+seed, "10.0.0.0/28", []int{32, 32, 32, 31, 30}, 200, 0.1, seed%3 == 0, r2opts{extra: true})
		})
	}
	for seed := range uint64(100) {
		t.Run(fmt.Sprintf("sharded-%d", seed), func(t *testing.T) {
			r2run(t, 9000+seed, "10.0.0.0/24", []int{26, 27, 28, 30, 32, 32}, 200, 0.1, seed%3 == 0, r2opts{extra: true})
		})
	}
}

func TestStickyReviewFuzzReservedLenient(t *testing.T) {
	for seed := range uint64(400) {
		t.Run(fmt.Sprintf("small-%d", seed), func(t *testing.T) {
			r2run(t, 20000+seed, "10.0.0.0/28", []int{32, 32, 32, 31, 30}, 200, 0.1, seed%3 == 0, r2opts{extra: true, reserve: true, lenientKept: true})
		})
	}
	for seed := range uint64(100) {
		t.Run(fmt.Sprintf("sharded-%d", seed), func(t *testing.T) {
			r2run(t, 30000+seed, "10.0.0.0/24", []int{26, 27, 28, 30, 32, 32}, 200, 0.1, seed%3 == 0, r2opts{extra: true, reserve: true, lenientKept: true})
		})
	}
}

func TestStickyReviewFuzzTwoOwners(t *testing.T) {
	for seed := range uint64(300) {
		t.Run(fmt.Sprintf("small-%d", seed), func(t *testing.T) {
			r2run(t, 40000+seed, "10.0.0.0/28", []int{32, 32, 32, 31, 30}, 200, 0.05, seed%3 == 0, r2opts{extra: true, twoOwners: true})
		})
	}
	for seed := range uint64(100) {
		t.Run(fmt.Sprintf("sharded-%d", seed), func(t *testing.T) {
			r2run(t, 50000+seed, "10.0.0.0/24", []int{26, 27, 28, 30, 32, 32}, 200, 0.05, seed%3 == 0, r2opts{extra: true, twoOwners: true})
		})
	}
}

func TestStickyReviewFuzzIsolate(t *testing.T) {
	for _, c := range []struct {
		name     string
		conflict float64
		o        r2opts
	}{
		{"plain", 0, r2opts{noRetain: true, noFailover: true}},
		{"retain", 0, r2opts{noFailover: true}},
		{"retain-failover", 0, r2opts{}},
		{"noretain-conflict", 0.15, r2opts{noRetain: true, noFailover: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fails := 0
			for seed := range uint64(60) {
				ok := t.Run(fmt.Sprint(seed), func(t *testing.T) {
					r2run(t, 1000+seed, "10.0.0.0/24", []int{26, 27, 28, 30, 32, 32}, 200, c.conflict, seed%3 == 0, c.o)
				})
				if !ok {
					fails++
				}
			}
			t.Logf("%s: %d of 60 seeds failed", c.name, fails)
		})
	}
}

var _ = context.Background

// TestStickyReviewReservationBeforeReleaseLeavesKeptLineOverAnEntry: a
// reservation added while a prefix is held (allowed: "a reservation added
// after prefixes were handed out does not evict them"), then the claim is
// released with retention. The owner keeps the prefix; a failover's Build
// reserves the range first (reservedSpace subtracts entries, not kept
// lines), so the kept prefix is not allocated and part of it goes to
// another claim. The line still says "kept" (until an hour later) and no
// entry holds exactly its prefix: the stored ledger now has a kept prefix
// overlapping an entry, which Ledger.Kept reports as kept and
// internal/inspect's checkEntryOverlaps reports as an Overlap ("the same
// addresses are committed twice"). Which of the two the pool honours
// depends on whether the owner restarted.
func TestStickyReviewReservationBeforeReleaseLeavesKeptLineOverAnEntry(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	ctx := context.Background()
	id := NewEntryID()
	p, err := m.Allocate(ctx, Request{Pool: sp.pool, Bits: 30, Holder: ClaimHolder("ns"), ID: id, Sticky: &Identity{"ns", "web-0"}})
	if err != nil || p != netip.MustParsePrefix("10.0.0.0/30") {
		t.Fatalf("web-0: %s %v", p, err)
	}
	// An admin reserves 10.0.0.1 while web-0 holds 10.0.0.0/30.
	res := sp.pool.DeepCopy()
	res.Generation++
	res.Spec.Reserved = []string{"10.0.0.1-10.0.0.1"}
	sp.pool = res
	if freed, err := m.Release(ctx, sp.pool, p, ClaimHolder("ns"), id, Grace(sp.pool),
		&Retain{Namespace: "ns", Identity: "web-0", UID: "u", For: time.Hour}); err != nil || !freed {
		t.Fatalf("release: %v %v", freed, err)
	}
	// The owner used to keep it (and would give it back to web-0), while a
	// failover's Build does not: a reservation added over it wins on the
	// owner too now, so both agree.
	if _, kept := sp.store.ledger(t).Kept(p, sp.now); kept {
		t.Fatalf("%s kept after the release, though the pool reserves part of it", p)
	}
	sp.now = sp.now.Add(61 * time.Second)
	failover := sp.manager()
	q, err := failover.Allocate(ctx, Request{Pool: sp.pool, Bits: 32, Holder: ClaimHolder("other"), ID: NewEntryID()})
	if err != nil {
		t.Fatal(err)
	}
	l := sp.store.ledger(t)
	r, kept := l.Kept(p, sp.now)
	if kept && p.Overlaps(q) {
		t.Fatalf("the stored ledger records %s for %s and keeps %s for %s/%s until %v (line %q): a kept prefix overlaps an entry",
			q, l.Allocations[q].Holder, p, r.Namespace, r.Identity, r.Until, releasedLine(r))
	}
}

// TestStickyReviewCraftedLedgerKeptLineOverExactEntry: a ledger whose line says
// "kept" for a prefix an entry holds (as an older writer or a hand edit
// could leave it). Restore honours the entry; its release without
// retention must not leave the line keeping the prefix; no identity gets a
// prefix someone holds.
func TestStickyReviewCraftedLedgerKeptLineOverExactEntry(t *testing.T) {
	sp := newStickyPool(t)
	m := sp.manager()
	ctx := context.Background()
	p := sp.mustClaim(m, "x")
	root, _ := sp.store.Get(ctx, "p")
	root.Spec.Released = fmt.Sprintf("%s ns web-0 u 1799999000 1799999900 1800003600 kept\n", p)
	if err := sp.store.Update(ctx, root); err != nil {
		t.Fatal(err)
	}
	m = sp.manager()
	if q, err := m.Allocate(ctx, Request{Pool: sp.pool, Bits: 32, Holder: ClaimHolder("ns"), Sticky: &Identity{"ns", "web-0"}, DryRun: true}); err != nil || q == p {
		t.Fatalf("web-0 (dry run) got %s, held by x: %v", q, err)
	}
	h := sp.held["x"]
	if freed, err := m.Release(ctx, sp.pool, p, ClaimHolder("ns"), h.id, 0, nil); err != nil || !freed {
		t.Fatal(freed, err)
	}
	delete(sp.held, "x")
	if _, kept := sp.store.ledger(t).Kept(p, sp.now); kept {
		t.Fatalf("%s released without retention is kept again", p)
	}
	got := sp.mustClaim(m, "y")
	if got2, err := sp.claim(sp.manager(), "web-0"); err == nil && got2 == got {
		t.Fatalf("double: %s", got)
	}
}

// r2forwarder is a Router whose owner for every pool is owner, reached in
// process (the JSON wire format, without TLS).
type r2forwarder struct{ owner *Manager }

func (f r2forwarder) RoundTrip(req *http.Request) (*http.Response, error) {
	var w wireOp
	if err := json.NewDecoder(req.Body).Decode(&w); err != nil {
		return nil, err
	}
	body, _ := json.Marshal(f.owner.serve(req.Context(), &w))
	return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(bytes.NewReader(body)), Header: http.Header{}}, nil
}

func r2routeTo(sp *stickyPool, replica, owner *Manager) {
	owners := &Owners{Identity: "replica-b", Address: "b:9443", Duration: time.Hour, Now: sp.clock,
		owned: map[string]*coordinationv1.Lease{}, remote: map[string]*coordinationv1.Lease{}}
	renew := metav1.NewMicroTime(sp.now)
	owners.remote[sp.pool.Name] = &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AddressAnnotation: "a:9443"}},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To("replica-a"), RenewTime: &renew, LeaseDurationSeconds: ptr.To[int32](3600)},
	}
	r := &Router{Owners: owners, client: &http.Client{Transport: r2forwarder{owner}}}
	replica.SetRouter(r)
}

// TestStickyReviewForwardedRequestsLoseTheirIdentity: with Lease routing (every
// multi-replica install that sets POD_NAMESPACE and POD_IP), a replica that
// does not own the pool forwards the change to its owner as a wireOp, which
// has no field for Request.Sticky nor for a release's Retain. A claim
// released through another replica is not kept for its identity; a sticky
// claim created through another replica is not given its kept prefix back
// (and is denied it by spec.cidr, as if it were someone else).
func TestStickyReviewForwardedRequestsLoseTheirIdentity(t *testing.T) {
	sp := newStickyPool(t)
	owner := sp.manager()
	replica := sp.manager()
	r2routeTo(sp, replica, owner)
	ctx := context.Background()

	// Release through the replica: forwarded without its Retain.
	p := sp.mustClaim(owner, "web-0")
	sp.release(replica, "web-0")
	if _, kept := sp.store.ledger(t).Kept(p, sp.now); !kept {
		t.Errorf("web-0 released %s through a replica that does not own the pool, with retention asked: the owner did not keep it (the wire op carries no Retain); ledger %+v",
			p, sp.store.ledger(t))
	}

	// Claim through the replica: released on the owner, kept; web-0 comes
	// back through the other replica.
	q := sp.mustClaim(owner, "web-1")
	sp.mustClaim(owner, "web-2")
	sp.release(owner, "web-1")
	if _, kept := sp.store.ledger(t).Kept(q, sp.now); !kept {
		t.Fatalf("%s not kept when released on the owner", q)
	}
	got, err := replica.Allocate(ctx, Request{Pool: sp.pool, Bits: 32, Holder: ClaimHolder("ns"), ID: NewEntryID(), Sticky: &Identity{"ns", "web-1"}})
	if err != nil || got != q {
		t.Errorf("web-1 came back through a replica that does not own the pool and got %s (%v), want its kept %s (the wire op carries no Sticky)", got, err, q)
	}
	_, err = replica.Allocate(ctx, Request{Pool: sp.pool, CIDR: q, Bits: 32, Holder: ClaimHolder("ns"), ID: NewEntryID(), Sticky: &Identity{"ns", "web-1"}, DryRun: true})
	if err != nil && got != q {
		t.Errorf("web-1 asking for its own kept %s by spec.cidr through the replica: %v", q, err)
	}
}

// TestStickyReviewRetainedDenialLosesItsKindOnTheWire: a claim that asks by
// spec.cidr for a prefix kept for another identity is denied with "is
// retained in pool p for ns/web-0 ... until ..." (ClaimError, RetainedError)
// when the owner serves it here, but "is already allocated" when it is
// forwarded: encodeErr knows no RetainedError, so the design's "the same
// message whichever replica served the claim" does not hold for it.
func TestStickyReviewRetainedDenialLosesItsKindOnTheWire(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.3/32")
	err := &RetainedError{Prefix: p, Release: Release{Namespace: "ns", Identity: "web-0", Until: time.Unix(1_800_003_600, 0), Kept: true},
		Err: &allocator.PrefixError{Prefix: p, Err: allocator.ErrOverlap}}
	got := decodeErr(encodeErr(err))
	var kept *RetainedError
	if !errors.As(got, &kept) || got.Error() != err.Error() {
		t.Fatalf("%q came back from the wire as %q (a RetainedError: %v)", err, got, kept != nil)
	}
}
