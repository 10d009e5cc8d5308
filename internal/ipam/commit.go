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
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"go4.org/netipx"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/metrics"
	"github.com/kipam/kipam/internal/netutil"
)

// A pool's ledger is a root object and shards (docs/design.md, "The
// ledger"). The rules that keep two writers from committing overlapping
// prefixes, whatever they believe:
//
//  1. A prefix longer than the root's shardBits is committed by a
//     compare-and-swap on its shard; any other prefix, by one on the root.
//  2. A shard counts only while the root lists it and it is not sealed; a
//     sealed shard is never written again, and its name is never reused
//     (the root numbers shards from nextShard).
//  3. The root lists a shard only if no prefix it records overlaps the
//     shard's range; it records a prefix only if it lists no shard inside
//     it, so a shard is sealed (empty) before the root drops it.
//
// A prefix in shard S and a larger one covering S would need the root to
// drop S while S still records the first: S was sealed before, so the write
// that committed the first (fenced on S's resourceVersion) came before the
// seal, and the seal, fenced on the same version, found S empty.

// doc is one ledger object and what it records.
type doc struct {
	name string
	// n is a shard's number.
	n int64
	// cidr is a shard's range; invalid for the root.
	cidr netip.Prefix
	// obj is the object as last read or written, without the text the
	// maps below hold parsed (withoutText); nil for a listed shard not
	// created yet. Its resourceVersion fences the next write.
	obj    *ipamv1alpha1.IPLedger
	allocs entries
	holds  map[netip.Prefix]time.Time
	// released are who last held prefixes released in the retention
	// window; those no entry holds are kept allocated in the allocator for
	// their identity (Release).
	released map[netip.Prefix]Release
	// claims counts the allocs held by claims.
	claims int
	// size is the length of the text the object records (allocations,
	// holds, shards) as last read or written, plus the entries put since.
	size int
	// dead is a listed shard that may not be written: sealed, or a name
	// taken by something else.
	dead bool

	// per attempt
	dirty   bool
	seal    bool
	written bool
}

// ledgerState is a pool's root and listed shards, as this process last
// read or wrote them.
type ledgerState struct {
	root   *doc
	bits   int
	next   int64
	listed map[netip.Prefix]*doc
	// closing are shards dropped from the list in the attempt under way,
	// to be sealed before the root is written.
	closing []*doc
	// held is what each claim holder (namespace) holds in the live docs,
	// for spec.namespaceLimit; nil until first needed.
	held map[string]*NamespaceUse
	// reserved is the pool's reserved space (ReservedSet) at the
	// generation the allocator was built for.
	reserved *netipx.IPSet
}

// A NamespaceUse is what one namespace holds from a pool: the prefixes of
// its claims, IPClaims and IPAddressClaims alike (an entry committed for
// a create not yet stored included), and their addresses. It is what the
// pool's spec.namespaceLimit counts.
type NamespaceUse struct {
	Claims    int
	Addresses big.Int
}

// countUse adds (sign 1) or removes (sign -1) p, recorded as e, to what
// e's namespace holds in uses, if a claim holds it.
func countUse(uses map[string]*NamespaceUse, p netip.Prefix, e Entry, sign int) {
	ns, ok := HolderNamespace(e.Holder)
	if !ok {
		return
	}
	u := uses[ns]
	if u == nil {
		u = &NamespaceUse{}
		uses[ns] = u
	}
	u.Claims += sign
	if sign > 0 {
		u.Addresses.Add(&u.Addresses, addresses(p))
	} else {
		u.Addresses.Sub(&u.Addresses, addresses(p))
	}
}

// NamespaceUses returns what each namespace holds, as l records it.
func (l *Ledger) NamespaceUses() map[string]*NamespaceUse {
	uses := map[string]*NamespaceUse{}
	for p, e := range l.Allocations {
		countUse(uses, p, e, 1)
	}
	return uses
}

// commit applies a batch to the allocator and writes the ledgers it
// touched. Ops whose ledgers were all written are done; on a conflict the
// allocator is rebuilt from the ledgers as they now are and the rest of the
// batch is tried again.
func (m *Manager) commit(st *poolState, pool *ipamv1alpha1.IPPool, batch []*op) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	t := commitTimes{start: time.Now()}
	defer t.logIfSlow(pool.Name, len(batch))
	pending := batch
	// verify asks, before memory answers the batch, whether the stored
	// ledgers are still the ones memory holds (current); reread rebuilds
	// memory from them whatever the answer.
	verify, reread := false, false
	for _, o := range batch {
		switch {
		// A drain decides from what is stored, read whole: it seals what
		// it finds. So does a request that knows memory may hold what the
		// ledgers lost (Fresh).
		case o.drain || (o.alloc != nil && o.alloc.Fresh):
			reread = true
		// A release that names its entry's time (ReleaseAsOf) decides on
		// what is stored: another writer may have renewed the entry. So
		// does a dry run: it writes nothing, so no ledger write fences an
		// answer computed on an allocator that has not seen another
		// replica's commits (a replica serving a pool whose owner it
		// cannot reach). So does an Adopt: a miss commits a new entry in
		// whichever shard its answer falls, a write that does not fence
		// the shard where another replica may have committed the entry
		// meanwhile, and a hit writes nothing, though another replica may
		// have released the entry since.
		case (o.alloc != nil && (o.alloc.DryRun || o.alloc.Adopt)) || !o.expect.At.IsZero():
			verify = true
		// An AdoptKnown that memory answers with an entry found writes
		// nothing, and is decided as an Adopt's; a miss commits, fenced
		// by its write, and may make a second entry its caller releases.
		// Memory not built yet is rebuilt from the ledgers anyway.
		case o.alloc != nil && o.alloc.AdoptKnown && st.builtFor(pool) && st.ledger.knows(o.alloc.Holder, o.alloc.ID):
			verify = true
		}
	}
	if reread || (verify && !m.current(ctx, st, pool)) {
		st.alloc = nil
	}
	var lastErr error
	ambiguous := false
	for range maxAttempts {
		// restored (or verified: current) says that memory was the stored
		// ledgers at a moment after the batch was queued.
		restored := verify
		verify = false
		if !st.builtFor(pool) {
			restored = true
			t0 := time.Now()
			err := m.restore(ctx, st, pool, slices.ContainsFunc(pending, func(o *op) bool { return o.drain }))
			t.restores, t.restoring = t.restores+1, t.restoring+time.Since(t0)
			if err != nil {
				lastErr = err
				st.alloc = nil
				if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
					continue
				}
				if errors.Is(err, ErrPoolDeleted) {
					closed(pending, err)
					return
				}
				if bad := (*BadLineError)(nil); errors.As(err, &bad) {
					// Final: no retry reads the line differently.
					for _, o := range pending {
						o.result, o.err = netip.Prefix{}, fmt.Errorf("pool %s cannot be served: %w", pool.Name, err)
					}
					return
				}
				break
			}
		}
		m.apply(st, pool, pending)
		t0 := time.Now()
		err := m.write(ctx, st.ledger, pool)
		t.writes, t.writing = t.writes+1, t.writing+time.Since(t0)
		t.err = err
		if err != nil && !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			// A write that failed otherwise (a timeout) may still have
			// been stored: what the batch allocated or released is unknown.
			ambiguous = true
		}
		var rest []*op
		recheck := false
		for _, o := range pending {
			// An op that changed nothing (a denial, a dry run) is final
			// only if every write of the attempt took: its answer was
			// computed on top of the others.
			if !o.durable() || (err != nil && len(o.deps) == 0) {
				rest = append(rest, o)
				continue
			}
			// An answer that wrote nothing was fenced by no compare-and-swap
			// (answeredFromMemory): it looks again in the stored ledgers.
			if err == nil && !restored && answeredFromMemory(o) {
				rest = append(rest, o)
				recheck = true
			}
		}
		pending = rest
		if err == nil && recheck {
			if !m.current(ctx, st, pool) {
				st.alloc = nil
				continue
			}
			// Memory was the stored ledgers after the answers: they stand.
			pending = slices.DeleteFunc(pending, answeredFromMemory)
		}
		if err == nil && len(pending) == 0 {
			if st.ledger.root.dead {
				st.alloc = nil // drained: the next commit finds the root sealed
				return
			}
			st.snapshot(m.now())
			metrics.LedgerBytes.WithLabelValues(pool.Name).Set(float64(st.snap.Load().LedgerBytes))
			if st.rebuild {
				// The allocator disagreed with the ledger (apply): the next
				// commit rebuilds it from the ledgers.
				st.alloc, st.rebuild = nil, false
			}
			return
		}
		// Lost a race (or a write failed): the allocator may hold changes
		// that are not in etcd, so throw it away.
		st.alloc = nil
		if err == nil {
			err = errors.New("a ledger write did not take")
		}
		lastErr = err
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			break
		}
		m.conflicts.Add(1)
	}
	outcome := "nothing was changed"
	if ambiguous {
		outcome = "the outcome is unknown"
	}
	for _, o := range pending {
		o.result = netip.Prefix{}
		o.err = fmt.Errorf("%w: pool %s: could not commit to its ledger (%s): %w", ErrBusy, pool.Name, outcome, lastErr)
	}
}

// slowCommit is how long a batch may take before its commit is logged
// with where the time went.
const slowCommit = time.Second

// commitTimes is where one batch's commit spent its time, wall clock
// (not kipam's clock, which a test may shift).
type commitTimes struct {
	start              time.Time
	restores, writes   int
	restoring, writing time.Duration
	err                error
}

func (t *commitTimes) logIfSlow(pool string, ops int) {
	if d := time.Since(t.start); d >= slowCommit {
		logf.Log.WithName("ipam").Info("slow commit", "pool", pool, "ops", ops, "took", d.Round(time.Millisecond),
			"restores", t.restores, "restoring", t.restoring.Round(time.Millisecond),
			"writes", t.writes, "writing", t.writing.Round(time.Millisecond), "lastWriteErr", t.err)
	}
}

// answeredFromMemory reports whether o's answer changed no ledger, so no
// compare-and-swap fenced it: computed on memory that has not seen another
// replica's commits (a replica serving a pool whose owner it could not
// reach), it may be wrong in a way a caller acts on. A release that found
// nothing to free (the orphan sweep takes "not freed" for "released
// since", and would leave an entry another replica committed for ever); a
// denial for want of room, or of a prefix that another replica released
// since; an Adopt that found its entry. Such an answer stands only if the
// stored ledgers are still memory's after it (current), and is answered
// again on an allocator rebuilt from them if not. A drain reads the
// ledgers whole before it answers.
func answeredFromMemory(o *op) bool {
	return !o.drain && len(o.deps) == 0
}

// closed ends the ops of a batch for a pool whose ledger is sealed: a
// drain or a release finds nothing left to do, anything else is refused.
func closed(batch []*op, err error) {
	for _, o := range batch {
		o.result, o.err = netip.Prefix{}, nil
		if o.alloc != nil {
			o.err = err
		}
	}
}

// durable reports whether every ledger o changed was written.
func (o *op) durable() bool {
	for _, d := range o.deps {
		if !d.written {
			return false
		}
	}
	return true
}

// apply runs every op against the allocator, in order, and records the
// outcome in the ledger docs it touches.
func (m *Manager) apply(st *poolState, pool *ipamv1alpha1.IPPool, batch []*op) {
	now := m.now()
	l := st.ledger
	for _, d := range l.docs() {
		d.dirty, d.seal, d.written = false, false, false
	}
	l.closing = nil
	l.expireKept(st.alloc, now)
	drained := false
	for _, o := range batch {
		o.result, o.id, o.at, o.err, o.deps = netip.Prefix{}, "", time.Time{}, nil, nil
		if o.drain {
			o.err = l.drain(o, pool, now)
			drained = drained || o.err == nil
			continue
		}
		if drained && o.alloc != nil {
			// The ledgers this batch writes are sealed: nothing after the
			// drain may be recorded in them.
			o.err = fmt.Errorf("%w: pool %s is being deleted: it takes no new claims", ErrPoolDeleted, pool.Name)
			continue
		}
		if o.alloc == nil {
			o.err = l.release(st.alloc, o, now, m.maxLedgerBytes.Load())
			continue
		}
		// A dry run adopts too (it writes nothing either way): asked
		// whether a claim's bind would succeed, it answers with the
		// entry the bind would adopt.
		if o.alloc.Adopt || o.alloc.AdoptKnown {
			if p, ok := l.find(o.alloc.Holder, o.alloc.ID); ok {
				if c := o.alloc.CIDR; c.IsValid() && c != p {
					o.err = fmt.Errorf("%s cannot be recorded for %s: its entry %s records %s", c, o.alloc.Holder, o.alloc.ID, p)
					continue
				}
				o.result = p
				continue
			}
		}
		if o.alloc.Reclaim && !o.alloc.DryRun && l.reclaim(o, now) {
			continue
		}
		// taken are the kept prefixes the answer takes or covers: given
		// back to their identity, or evicted. Their lines change only once
		// the answer is recorded; until then the allocator can be put back
		// as it was.
		var taken []keptPrefix
		p, back := l.keptFor(st.alloc, o.alloc, now)
		if back.d != nil {
			taken = append(taken, back)
		} else {
			var err error
			if p, err = allocateOne(st.alloc, o.alloc); err != nil {
				if p, taken, err = l.evict(st.alloc, o.alloc, now, err); err != nil {
					o.err = err
					continue
				}
			}
		}
		undo := func() {
			if back.d == nil {
				_ = st.alloc.Release(p)
			}
			for _, k := range taken {
				if k.p != p || back.d == nil {
					_ = st.alloc.Allocate(k.p) // kept again
				}
			}
		}
		e := Entry{Holder: o.alloc.Holder, At: now, ID: o.alloc.ID}
		err := l.checkLimit(pool, p, e)
		d := l.docOf(p)
		if err == nil && d != nil && int64(d.size+entryLen(p, e)) > m.maxLedgerBytes.Load() {
			err = l.fullErr(pool, d, p, m.maxLedgerBytes.Load())
		}
		if _, dup := d.entry(p); err == nil && dup {
			// The allocator and the ledger disagree: never record over an
			// entry. A rebuild from the ledgers settles it.
			err = fmt.Errorf("%w: %s is already recorded in ledger %s", ErrBusy, p, d.name)
			st.rebuild = true
		}
		if err != nil {
			undo()
			o.err = err
			continue
		}
		o.result = p
		if o.alloc.DryRun {
			undo()
			continue
		}
		l.retire(taken, p)
		l.record(pool, p, e, o)
		o.at = e.At
	}
}

// reclaim answers o (Request.Reclaim) with the entry a live doc records
// for o's holder at exactly o's CIDR, if there is one, and renews the
// entry's time in the same write, at least a second past the time it
// had: a sweep that judged the entry orphaned before names the old time,
// and its release then frees nothing (ReleaseAsOf).
func (l *ledgerState) reclaim(o *op, now time.Time) bool {
	p := o.alloc.CIDR
	d := l.docOf(p)
	e, ok := d.entry(p)
	if !p.IsValid() || !ok || e.Holder != o.alloc.Holder {
		return false
	}
	at := now.Truncate(time.Second)
	if prev := e.At.Truncate(time.Second); !at.After(prev) {
		at = prev.Add(time.Second)
	}
	renewed := Entry{Holder: e.Holder, At: at, ID: e.ID}
	d.size += entryLen(p, renewed) - entryLen(p, e)
	d.allocs.put(p, renewed)
	d.dirty = true
	o.deps = append(o.deps, d)
	o.result, o.id, o.at = p, e.ID, at
	return true
}

// keptFor returns the prefix kept for req's identity (Request.Sticky), if
// one of the length req asks for is, and the latest released of them. A
// line keeps its prefix only while the allocator holds it for the line: a
// reservation added since, for one, leaves it free of the line.
func (l *ledgerState) keptFor(a *allocator.Allocator, req *Request, now time.Time) (netip.Prefix, keptPrefix) {
	var best keptPrefix
	if req.Sticky == nil {
		return netip.Prefix{}, best
	}
	// On every claim of a retaining pool: a scan, not kept's sorted list.
	for _, d := range l.docs() {
		if d.dead {
			continue
		}
		for p, r := range d.released {
			if !d.keeps(p, r, now) || r.Namespace != req.Sticky.Namespace || r.Identity != req.Sticky.Name || p.Bits() != req.Bits ||
				req.CIDR.IsValid() && req.CIDR != p || !a.IsAllocated(p) {
				continue
			}
			if best.d == nil || r.Released.After(best.r.Released) {
				best = keptPrefix{p, r, d}
			}
		}
	}
	return best.p, best
}

// retire changes the lines of the kept prefixes an answer p took: a
// prefix taken whole keeps its line as who held it before, no longer
// keeping it; one p covers loses its line.
func (l *ledgerState) retire(taken []keptPrefix, p netip.Prefix) {
	for _, k := range taken {
		r := k.d.released[k.p]
		if k.p == p {
			r.Kept = false
			k.d.released[k.p] = r
		} else {
			delete(k.d.released, k.p)
			k.d.size -= releasedLen(k.p, r)
		}
		k.d.dirty = true
	}
}

// kept lists the prefixes kept for their identities, oldest release
// first.
func (l *ledgerState) kept(now time.Time) []keptPrefix {
	var out []keptPrefix
	for _, d := range l.docs() {
		if d.dead {
			continue
		}
		for p, r := range d.released {
			if d.keeps(p, r, now) {
				out = append(out, keptPrefix{p, r, d})
			}
		}
	}
	slices.SortFunc(out, func(a, b keptPrefix) int {
		return cmp.Or(a.r.Released.Compare(b.r.Released), comparePrefix(a.p, b.p))
	})
	return out
}

type keptPrefix struct {
	p netip.Prefix
	r Release
	d *doc
}

// evict makes room for req, which the allocator refused with err, from the
// prefixes kept for other identities: oldest release first, only those
// past the reuse grace, as few as it takes. It returns the answer and the
// kept prefixes the answer takes or covers, whose lines the caller retires
// once the answer is recorded (or puts back in the allocator if it is not);
// the others are kept as before. It returns err, explained, when that does
// not make room either.
func (l *ledgerState) evict(a *allocator.Allocator, req *Request, now time.Time, err error) (netip.Prefix, []keptPrefix, error) {
	kept := l.kept(now)
	if len(kept) == 0 {
		return netip.Prefix{}, nil, err
	}
	if req.CIDR.IsValid() {
		for _, k := range kept {
			if k.p.Overlaps(req.CIDR) {
				return netip.Prefix{}, nil, &RetainedError{Prefix: k.p, Release: k.r, Err: err}
			}
		}
		return netip.Prefix{}, nil, err
	}
	if !errors.Is(err, allocator.ErrExhausted) {
		return netip.Prefix{}, nil, err
	}
	grace := Grace(req.Pool)
	var freed []keptPrefix
	for _, k := range kept {
		if k.r.inGrace(grace, now) || !a.IsAllocated(k.p) {
			continue
		}
		if a.Release(k.p) != nil {
			continue
		}
		freed = append(freed, k)
		p, aerr := allocateOne(a, req)
		if aerr != nil {
			continue
		}
		var taken []keptPrefix
		for _, f := range freed {
			if f.p.Overlaps(p) {
				taken = append(taken, f)
			} else {
				_ = a.Allocate(f.p) // kept again
			}
		}
		return p, taken, nil
	}
	for _, f := range freed {
		_ = a.Allocate(f.p)
	}
	var next time.Time // when the first kept prefix still in its grace leaves it
	for _, k := range kept {
		if t := k.r.Released.Add(grace); k.r.inGrace(grace, now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if next.IsZero() {
		return netip.Prefix{}, nil, fmt.Errorf("%w; the %d prefixes retained for the claims that released them (spec.retainReleased) would not make room either",
			err, len(kept))
	}
	return netip.Prefix{}, nil, fmt.Errorf("%w; %d prefixes are retained for the claims that released them (spec.retainReleased), "+
		"the next of them free for others at %s, after the reuse grace", err, len(kept), next.UTC().Format(time.RFC3339))
}

// RetainedError refuses a prefix kept for the identity that released it.
type RetainedError struct {
	Prefix  netip.Prefix
	Release Release
	// Err is the allocator's error.
	Err error
}

func (e *RetainedError) Error() string {
	return fmt.Sprintf("%v: %s is retained for %s/%s, which released it, until %s (the pool's spec.retainReleased)",
		e.Err, e.Prefix, e.Release.Namespace, e.Release.Identity, e.Release.Until.UTC().Format(time.RFC3339))
}

func (e *RetainedError) Unwrap() error { return e.Err }

// Grace is how long pool holds a released prefix before it is handed out
// again (spec.reuseGracePeriodSeconds).
func Grace(pool *ipamv1alpha1.IPPool) time.Duration {
	if g := pool.Spec.ReuseGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 0
}

// inGrace reports whether r's prefix is still within the pool's reuse grace
// at now. A pool without a grace has none to wait out, even though a release
// restored from its ledger line is rounded up to the next second.
func (r Release) inGrace(grace time.Duration, now time.Time) bool {
	return grace > 0 && r.Released.Add(grace).After(now)
}

// expireKept frees the kept prefixes whose window ended and forgets who
// held them, and who held the prefixes taken since. Their lines go with the
// next write of their ledger (a restore before that does not keep them
// either). A line that keeps what the allocator does not hold stops
// keeping it.
func (l *ledgerState) expireKept(a *allocator.Allocator, now time.Time) {
	for _, d := range l.docs() {
		if d.dead {
			continue
		}
		for p, r := range d.released {
			held := d.allocs.has(p)
			if r.Until.After(now) {
				if r.Kept && !held && !a.IsAllocated(p) {
					// The allocator does not hold it for the line: a
					// reservation added over it won when the pool was
					// rebuilt. The line stops keeping it, in this batch's
					// write, so that no replica and no reader counts it.
					r.Kept = false
					d.released[p] = r
					d.dirty = true
				}
				continue
			}
			if r.Kept && !held && a.IsAllocated(p) && a.Release(p) == nil {
				l.reserveAgain(a, p)
			}
			delete(d.released, p)
			d.size -= releasedLen(p, r)
		}
	}
}

// keeps reports whether d's line r keeps p for r's identity at now.
func (d *doc) keeps(p netip.Prefix, r Release, now time.Time) bool {
	held := d.allocs.has(p)
	return r.Kept && !held && r.Until.After(now)
}

// entry returns what d records for exactly p; a nil d records nothing.
func (d *doc) entry(p netip.Prefix) (Entry, bool) {
	if d == nil {
		return Entry{}, false
	}
	return d.allocs.get(p)
}

// knows reports whether the live docs record an entry id of holder.
func (l *ledgerState) knows(holder, id string) bool {
	_, ok := l.find(holder, id)
	return ok
}

// find returns the prefix the live docs record as the entry id of holder.
// It looks at every entry: adopting requests (every IPAddressClaim's,
// AdoptKnown) pay for it in the pool's commit queue, a few tens of
// microseconds at 5,000 entries.
func (l *ledgerState) find(holder, id string) (netip.Prefix, bool) {
	for _, d := range l.docs() {
		if d.dead {
			continue
		}
		if p, ok := d.allocs.find(holder, id); ok {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func (l *ledgerState) docs() []*doc {
	out := make([]*doc, 0, len(l.listed)+1)
	out = append(out, l.root)
	for _, d := range l.listed {
		out = append(out, d)
	}
	return out
}

// shardOf is the shard range p belongs in, or false when p belongs in the
// root.
func (l *ledgerState) shardOf(p netip.Prefix) (netip.Prefix, bool) {
	if l.bits == 0 || p.Bits() <= l.bits {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(p.Addr(), l.bits).Masked(), true
}

// docOf is the doc p would be recorded in: the root, an open shard, or nil
// for a shard not opened yet.
func (l *ledgerState) docOf(p netip.Prefix) *doc {
	s, ok := l.shardOf(p)
	if !ok {
		return l.root
	}
	if d := l.listed[s]; d != nil && !d.dead {
		return d
	}
	return nil
}

// fullErr says why d cannot record p, and what to do about it.
func (l *ledgerState) fullErr(pool *ipamv1alpha1.IPPool, d *doc, p netip.Prefix, limit int64) error {
	where := fmt.Sprintf("the pool's root ledger, where prefixes of /%d or larger are recorded,", l.bits)
	if l.bits == 0 {
		where = "the pool's ledger"
	} else if d != l.root {
		where = fmt.Sprintf("the ledger %s, where prefixes longer than /%d inside %s are recorded,", d.name, l.bits, d.cidr)
	}
	return fmt.Errorf("%w: pool %s cannot record another /%d: %s holds %d bytes of entries, "+
		"and one more would pass %d; a release there makes room, and a pool whose spec.defaultPrefixLength "+
		"is close to the size its claims ask for spreads them over many ledgers", ErrLedgerFull, pool.Name, p.Bits(), where, d.size, limit)
}

// releasedLen is the length of p's line in a ledger's spec.released.
func releasedLen(p netip.Prefix, r Release) int { return len(p.String()) + 2 + len(releasedLine(r)) }

// entryLen is the length of p's line in a ledger's allocations.
func entryLen(p netip.Prefix, e Entry) int {
	var b [64]byte
	n := len(p.AppendTo(b[:0])) + 1 + len(e.Holder) + 1 + len(strconv.AppendInt(b[:0], e.At.Unix(), 10)) + 1
	if e.ID != "" {
		n += 1 + len(e.ID)
	}
	return n
}

// record writes p into the doc it belongs in, opening a shard or closing
// the empty shards p covers as rules 2 and 3 require.
func (l *ledgerState) record(pool *ipamv1alpha1.IPPool, p netip.Prefix, e Entry, o *op) {
	if s, ok := l.shardOf(p); ok {
		d := l.listed[s]
		switch {
		case d == nil || d.dead:
			d = l.open(pool.Name, s)
			o.deps = append(o.deps, l.root)
		case d.obj == nil:
			// Listed, never created as this writer saw it: the shard may
			// have been created, sealed and deleted since, so its create is
			// fenced on the root too, which dropped it when it was sealed.
			l.root.dirty = true
			o.deps = append(o.deps, l.root)
		}
		d.put(p, e)
		l.count(p, e, 1)
		o.deps = append(o.deps, d)
		return
	}
	for s, d := range l.listed {
		if !p.Contains(s.Addr()) || s.Bits() < p.Bits() {
			continue
		}
		// The allocator handed out p, so the shard records nothing live.
		if !d.dead {
			d.seal = true
			l.closing = append(l.closing, d)
			o.deps = append(o.deps, d)
		}
		delete(l.listed, s)
		l.root.dirty = true
	}
	l.root.put(p, e)
	l.count(p, e, 1)
	o.deps = append(o.deps, l.root)
}

// addresses returns the number of addresses in p.
func addresses(p netip.Prefix) *big.Int {
	return new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
}

// holdings returns what each namespace's claims hold in the live docs, counting
// it on first use.
func (l *ledgerState) holdings() map[string]*NamespaceUse {
	if l.held == nil {
		l.held = map[string]*NamespaceUse{}
		for _, d := range l.docs() {
			if d.dead {
				continue
			}
			for p, e := range d.allocs.all() {
				l.count(p, e, 1)
			}
		}
	}
	return l.held
}

// count adds (sign 1) or removes (sign -1) p, recorded as e, to what its
// holder holds, once holdings are counted. A namespace's IPClaims and
// IPAddressClaims share its limit.
func (l *ledgerState) count(p netip.Prefix, e Entry, sign int) {
	if l.held != nil {
		countUse(l.held, p, e, sign)
	}
}

// checkLimit denies p, to be recorded as e, if that would take e's
// namespace past the pool's spec.namespaceLimit, counting what this batch
// already took.
func (l *ledgerState) checkLimit(pool *ipamv1alpha1.IPPool, p netip.Prefix, e Entry) error {
	lim := pool.Spec.NamespaceLimit
	if lim == nil || !isClaim(e) {
		return nil
	}
	ns, _ := HolderNamespace(e.Holder)
	h := l.holdings()[ns]
	if h == nil {
		h = &NamespaceUse{}
	}
	if lim.Claims != nil && h.Claims >= int(*lim.Claims) {
		return fmt.Errorf("%w: namespace %s holds %d claims from pool %s, which its spec.namespaceLimit.claims allows at most; "+
			"a release there makes room", ErrNamespaceLimit, ns, h.Claims, pool.Name)
	}
	if lim.AddressSpace != nil {
		want := addresses(p)
		limit := addresses(netip.PrefixFrom(p.Addr(), min(int(*lim.AddressSpace), p.Addr().BitLen())))
		if new(big.Int).Add(&h.Addresses, want).Cmp(limit) > 0 {
			return fmt.Errorf("%w: namespace %s holds %s addresses from pool %s and a /%d is %s more, past its "+
				"spec.namespaceLimit.addressSpace of a /%d (%s); a release there makes room",
				ErrNamespaceLimit, ns, h.Addresses.String(), pool.Name, p.Bits(), want, *lim.AddressSpace, limit)
		}
	}
	return nil
}

// put records p in d.
func (d *doc) put(p netip.Prefix, e Entry) {
	d.allocs.put(p, e)
	d.size += entryLen(p, e)
	if isClaim(e) {
		d.claims++
	}
	d.dirty = true
}

// open lists a new shard for range s in the root.
func (l *ledgerState) open(pool string, s netip.Prefix) *doc {
	d := &doc{name: ShardName(pool, l.next), n: l.next, cidr: s, allocs: newEntries(0), holds: map[netip.Prefix]time.Time{}, released: map[netip.Prefix]Release{}}
	l.next++
	l.listed[s] = d
	l.root.dirty = true
	return d
}

// release frees o.release in the allocator and its doc, holding it for
// o.grace, if the doc records it as o.expect (same holder, same ID).
// Releasing what is not allocated, or allocated as another entry, changes
// nothing: a release is idempotent, and one retried after the prefix went
// to someone else leaves it with them.
func (l *ledgerState) release(a *allocator.Allocator, o *op, now time.Time, limit int64) error {
	p := o.release
	if !a.IsAllocated(p) {
		return nil
	}
	d := l.root
	if s, ok := l.shardOf(p); ok {
		d = l.listed[s]
	}
	if d == nil || d.dead {
		return fmt.Errorf("%w: %s is allocated but no open ledger records it", ErrBusy, p)
	}
	e, ok := d.allocs.get(p)
	if !ok {
		if _, kept := d.released[p]; kept {
			return nil // released before, and kept for its identity
		}
		return fmt.Errorf("%w: %s is allocated but its ledger %s does not record it", ErrBusy, p, d.name)
	}
	if !e.Is(o.expect.Holder, o.expect.ID) || (!o.expect.At.IsZero() && e.At.Unix() != o.expect.At.Unix()) {
		return nil
	}
	// A reservation added over p since it was handed out wins over
	// retaining it, as in Build.
	if k := o.retain; k != nil && k.For > 0 && !l.inReserved(p) {
		r := Release{Namespace: k.Namespace, Identity: k.Identity, UID: k.UID, Bound: e.At, Released: now, Until: now.Add(max(k.For, o.grace)), Kept: true}
		grow := releasedLen(p, r)
		if old, ok := d.released[p]; ok {
			grow -= releasedLen(p, old)
		}
		if int64(d.size-entryLen(p, e)+grow) <= limit {
			// Kept: the allocator goes on holding p, for r's identity
			// (apply) or, when nothing else fits, for anyone (evict).
			d.released[p] = r
			d.size += grow
			l.drop(d, p, e, o)
			return nil
		}
		// No room to record it: released like any other, never failed.
	}
	if r, ok := d.released[p]; ok && r.Kept {
		// Cannot be while an entry holds p (retire); never let a line
		// keep what the allocator frees.
		r.Kept = false
		d.released[p] = r
	}
	if o.grace > 0 {
		until := now.Add(o.grace)
		if err := a.ReleaseUntil(p, until); err != nil {
			return err
		}
		d.holds[p] = until
	} else if err := a.Release(p); err != nil {
		return err
	}
	l.reserveAgain(a, p)
	l.drop(d, p, e, o)
	return nil
}

// inReserved reports whether p overlaps the pool's reserved space.
func (l *ledgerState) inReserved(p netip.Prefix) bool {
	return l.reserved != nil && l.reserved.OverlapsPrefix(p)
}

// reserveAgain reserves in the allocator what of p, just freed, the pool's
// reserved space covers. A reservation added over a live prefix does not
// evict it, so the allocator was built with those addresses left out of
// the reservation (reservedSpace); a rebuild from the ledgers, which no
// longer record p, reserves them, and memory must answer as that rebuild
// would: the ledgers' resourceVersions (current) cannot tell the two
// apart (TestAReleaseInsideAReservationAddedSinceReservesItAgain).
func (l *ledgerState) reserveAgain(a *allocator.Allocator, p netip.Prefix) {
	if !l.inReserved(p) {
		return
	}
	var b netipx.IPSetBuilder
	b.AddPrefix(p)
	b.Intersect(l.reserved)
	over, err := b.IPSet()
	if err != nil {
		return
	}
	for _, r := range over.Ranges() {
		_ = a.ReserveRange(r.From(), r.To())
	}
}

// drop removes entry e of p from d, for release op o.
func (l *ledgerState) drop(d *doc, p netip.Prefix, e Entry, o *op) {
	d.allocs.remove(p)
	o.result = p
	l.count(p, e, -1)
	d.size -= entryLen(p, e)
	if isClaim(e) {
		d.claims--
	}
	d.dirty = true
	o.deps = append(o.deps, d)
}

// write commits the docs apply changed: seals first, then the root, then
// the shards side by side. It stops at the first failure before the
// shards; a shard that fails leaves the others written.
func (m *Manager) write(ctx context.Context, l *ledgerState, pool *ipamv1alpha1.IPPool) error {
	now := m.now()
	for _, d := range l.closing {
		if err := m.put(ctx, l, pool, d, now); err != nil {
			return err
		}
	}
	if l.root.dirty {
		if err := m.put(ctx, l, pool, l.root, now); err != nil {
			return err
		}
	}
	var shards []*doc
	for _, d := range l.listed {
		if d.dirty {
			shards = append(shards, d)
		}
	}
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, d := range shards {
		wg.Go(func() { errs[i] = m.put(ctx, l, pool, d, now) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// put writes one doc: creates it when it does not exist yet, else updates
// it against the resourceVersion it was read or last written at.
func (m *Manager) put(ctx context.Context, l *ledgerState, pool *ipamv1alpha1.IPPool, d *doc, now time.Time) error {
	for p, until := range d.holds {
		if !until.After(now) {
			delete(d.holds, p)
		}
	}
	var obj *ipamv1alpha1.IPLedger
	if d.obj != nil {
		obj = d.obj.DeepCopy()
	} else {
		obj = &ipamv1alpha1.IPLedger{
			ObjectMeta: metav1.ObjectMeta{Name: d.name, Labels: map[string]string{ipamv1alpha1.LabelPool: pool.Name},
				OwnerReferences: l.root.obj.OwnerReferences, Finalizers: []string{ipamv1alpha1.LedgerFinalizer}},
			Spec: ipamv1alpha1.IPLedgerSpec{Pool: pool.Name, PoolUID: l.root.obj.Spec.PoolUID, Shard: d.cidr.String(), Root: string(l.root.obj.UID)},
		}
	}
	obj.Spec.Allocations = d.allocs.format()
	obj.Spec.Holds = formatHolds(d.holds)
	obj.Spec.Released = formatReleased(d.released)
	if d == l.root {
		shards := make(map[netip.Prefix]int64, len(l.listed))
		for s, sd := range l.listed {
			shards[s] = sd.n
		}
		obj.Spec.Shards = formatShards(shards)
		obj.Spec.NextShard = l.next
	}
	if d.seal {
		// A sealed ledger keeps its holds: a drain that loses its race
		// after it sealed a shard finds them there when it looks again
		// (a shard sealed because a prefix covers it holds none).
		obj.Spec.Sealed = true
		obj.Spec.Allocations, obj.Spec.Released = "", ""
	}
	var err error
	if d.obj == nil {
		err = m.store.Create(ctx, obj)
	} else {
		err = m.store.Update(ctx, obj)
	}
	if err != nil {
		return fmt.Errorf("writing ledger %s: %w", d.name, err)
	}
	d.obj, d.written = withoutText(obj), true
	d.size = recordedLen(obj)
	if d.seal {
		d.dead = true
	}
	return nil
}

// restore reads the pool's ledgers (creating the root if absent) and
// rebuilds the allocator from them.
func (m *Manager) restore(ctx context.Context, st *poolState, pool *ipamv1alpha1.IPPool, drain bool) error {
	root, err := m.store.Get(ctx, pool.Name)
	if apierrors.IsNotFound(err) {
		if drain {
			// A drain that finds no root leaves a sealed one: a writer that
			// decided to create the root before the pool was deleted then
			// meets AlreadyExists, and its next restore the seal.
			root = newRoot(pool)
			root.Spec.Sealed = true
			if err := m.store.Create(ctx, root); err != nil {
				return fmt.Errorf("sealing pool %s, which has no ledger: %w", pool.Name, err)
			}
			return fmt.Errorf("%w: pool %s is being deleted: it takes no new claims", ErrPoolDeleted, pool.Name)
		}
		// A pool being deleted never gets a root: its drain may have sealed
		// one that is gone already.
		if err := m.stillServed(ctx, st, pool, false); err != nil {
			return err
		}
		root = newRoot(pool)
		err = m.store.Create(ctx, root)
	}
	if err != nil {
		return fmt.Errorf("reading the ledger of pool %s: %w", pool.Name, err)
	}
	if root.Spec.Pool != pool.Name || root.Spec.Shard != "" {
		return fmt.Errorf("pool %s is not ready: the IPLedger %s is a shard of pool %s, not this pool's ledger: rename the pool",
			pool.Name, root.Name, root.Spec.Pool)
	}
	if uid := PoolUID(root); !Belongs(root, pool) {
		// A pool deleted and created again under the same name: its
		// ledgers belong to the old pool (uid) until the garbage collector
		// deletes them, and are never read as live nor written.
		return fmt.Errorf("%w: pool %s (uid %s) is not ready: its ledger IPLedger/%s belongs to an earlier pool of that name (uid %s), "+
			"which the garbage collector deletes; the pool serves claims once it is gone", ErrBusy, pool.Name, pool.UID, root.Name, uid)
	}
	if root.Spec.Sealed {
		return fmt.Errorf("%w: pool %s is being deleted: it takes no new claims", ErrPoolDeleted, pool.Name)
	}
	if err := m.stillServed(ctx, st, pool, true); err != nil {
		return err
	}
	var shards []ipamv1alpha1.IPLedger
	if root.Spec.Shards != "" {
		if shards, err = m.store.List(ctx, pool.Name); err != nil {
			return fmt.Errorf("reading the ledgers of pool %s: %w", pool.Name, err)
		}
		if shards, err = m.takenNames(ctx, root, shards); err != nil {
			return err
		}
	}
	l, err := loadState(root, shards)
	if err != nil {
		return err
	}
	a, err := Build(pool, l.contents(), m.now)
	if err != nil {
		return err
	}
	l.reserved = ReservedSet(pool)
	st.alloc, st.ledger, st.generation, st.uid = a, l, pool.Generation, string(pool.UID)
	st.snapshot(m.now())
	return nil
}

// current reports whether memory is the pool's stored ledgers as they are
// now: every ledger memory reads (the root and the shards it lists) is
// stored at the resourceVersion memory read or wrote it at, and none that
// memory holds absent (a listed shard not created yet, a shard's name that
// another pool's ledger holds) is stored for this pool (its spec.pool). A
// resourceVersion changes with every write, so an answer memory gives then
// is the answer an allocator rebuilt from the ledgers would give, at the
// moment of the read: for metadata-only reads (byName) instead of reading
// and parsing every entry (docs/design.md, "Answers that write nothing"). The
// root's version covers the list of shards; a shard the root does not list
// is not read by a rebuild either. A read that fails is no answer: memory
// is rebuilt, and the rebuild says why it cannot be.
func (m *Manager) current(ctx context.Context, st *poolState, pool *ipamv1alpha1.IPPool) bool {
	if !st.builtFor(pool) || st.rebuild {
		return false
	}
	docs := st.ledger.docs()
	stored, err := m.store.Versions(ctx, pool.Name, byName(docs))
	if err != nil {
		return false
	}
	for _, d := range docs {
		rv, ok := stored[d.name]
		switch {
		case d.obj == nil || (d.dead && d.obj.Spec.Pool != pool.Name):
			// Nothing memory reads: a listed shard not created yet, or
			// a name another pool's ledger holds. Neither may have
			// become a ledger of this pool since.
			if ok {
				return false
			}
		case !ok || rv != d.obj.ResourceVersion:
			// Written since, or gone
			// (then only a rebuild reads it).
			return false
		}
	}
	return true
}

// maxVersionGets is the most ledgers whose versions current reads one by
// one, by name, rather than by listing the pool's ledgers: a pool whose
// root is its only ledger (a pool of at most 64 claims of its default size
// has no shards).
// Each GET costs the API server and etcd more than the LIST does when the
// watch cache is fresh: with a root and two shards read by name, a denial
// at one worker took half again as long as with the LIST, and five at once
// twice as long (docs/benchmarks.md, "Exhaustion denials, versions read by
// name").
const maxVersionGets = 1

// byName is the names of docs, for current to read their versions by
// name: for a pool of at most maxVersionGets ledgers, all stored, or nil
// (read them by a list). Reads by name, one after the other, still show
// the ledgers as they all were at one moment, the first read's: a
// ledger's resourceVersion changes with every write and never comes back
// (a ledger deleted and created again has a new one), so a ledger read at
// the version memory holds had that version from memory's read until it
// was read again. That holds for a ledger that is stored, not for one
// memory holds absent (it may have been created and deleted between two
// reads): a pool with such a ledger is listed.
func byName(docs []*doc) []string {
	if len(docs) > maxVersionGets {
		return nil
	}
	names := make([]string, len(docs))
	for i, d := range docs {
		if d.obj == nil || d.dead {
			return nil
		}
		names[i] = d.name
	}
	return names
}

// builtFor reports whether the allocator in memory was built for pool as
// given: its generation (its reserved space, its strategy) and its uid.
func (st *poolState) builtFor(pool *ipamv1alpha1.IPPool) bool {
	return st.alloc != nil && st.generation == pool.Generation && st.uid == string(pool.UID)
}

// takenNames adds to a root's shards, as listed by their pool (spec.pool),
// the objects that hold the name of a listed shard and are another pool's
// (another pool's root named like the shard): such a shard is dead, and a
// new one is opened instead of creating it for ever against AlreadyExists.
func (m *Manager) takenNames(ctx context.Context, root *ipamv1alpha1.IPLedger, shards []ipamv1alpha1.IPLedger) ([]ipamv1alpha1.IPLedger, error) {
	listed, err := parseShards(root)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: spec.shards: %w", root.Name, err)
	}
	found := make(map[string]bool, len(shards))
	for i := range shards {
		found[shards[i].Name] = true
	}
	for _, n := range listed {
		name := ShardName(root.Spec.Pool, n)
		if found[name] {
			continue
		}
		obj, err := m.store.Get(ctx, name)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("reading ledger %s of pool %s: %w", name, root.Spec.Pool, err)
		default:
			shards = append(shards, *obj)
		}
	}
	return shards, nil
}

// stillServed reads the pool from the API server and refuses to build on
// its root unless the pool exists as given, carries its drain finalizer
// (so that its deletion will drain it), and, if deleted, has not finished
// draining (draining says whether a deleted pool is served at all: a root
// is created only for a pool not deleted). Called after the root was read
// or created: a drain seals the root before the drain finalizer goes, and
// a root goes only once its pool drained or is gone (the IPLedger's
// finalizer), so if the pool still carries its drain finalizer now, any
// drain still to finish will find this root and fence what is committed
// to it. It also requires the pool's prefix to be recorded in its parent
// (placed), once per pool uid: an entry recorded stays until the pool has
// drained or is gone, which the checks above see.
func (m *Manager) stillServed(ctx context.Context, st *poolState, pool *ipamv1alpha1.IPPool, draining bool) error {
	if IsSpace(pool.Name) {
		return nil // never deleted
	}
	live, err := m.store.Pool(ctx, pool.Name)
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: pool %s was deleted", ErrPoolDeleted, pool.Name)
	case err != nil:
		return fmt.Errorf("reading pool %s: %w", pool.Name, err)
	case pool.UID != "" && live.UID != pool.UID:
		return fmt.Errorf("%w: pool %s was deleted and created again", ErrBusy, pool.Name)
	case live.DeletionTimestamp != nil && (!draining || !controllerutil.ContainsFinalizer(live, ipamv1alpha1.PoolFinalizer)):
		return fmt.Errorf("%w: pool %s is being deleted: it takes no new claims", ErrPoolDeleted, pool.Name)
	case !controllerutil.ContainsFinalizer(live, ipamv1alpha1.PoolFinalizer):
		return fmt.Errorf("%w: pool %s is not ready yet: it does not carry its finalizer %s", ErrBusy, pool.Name, ipamv1alpha1.PoolFinalizer)
	}
	if st.placed == live.UID && live.UID != "" {
		return nil
	}
	if err := m.placed(ctx, live); err != nil {
		return err
	}
	st.placed = live.UID
	return nil
}

// placed refuses to serve a pool whose prefix its parent's ledger (the
// address space of its family for a top-level pool) does not record as
// its entry: a pool created around kipam's webhook, or before kipam
// recorded pools, until the pool controller has recorded it. Its parent
// could otherwise hand out the same addresses.
func (m *Manager) placed(ctx context.Context, pool *ipamv1alpha1.IPPool) error {
	cidr, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return nil // nothing to serve: Build says why
	}
	e, ok, err := lookup(ctx, m.store.Get, ParentOf(pool), cidr)
	switch {
	case err != nil:
		return err
	case !ok || !e.Is(PoolHolder(pool.Name), PoolEntryID(pool)):
		return fmt.Errorf("%w: pool %s is not ready: its prefix %s is not recorded in %s yet (a pool created before kipam recorded "+
			"pools, or around its webhook, until kipam records it, or a pool that overlaps another: see its Overlapping condition)",
			ErrBusy, pool.Name, cidr, ParentOf(pool))
	}
	return nil
}

// PoolUID is the uid of the pool a ledger belongs to: the one it records,
// or, for a ledger written before ledgers recorded it, its owner's.
func PoolUID(l *ipamv1alpha1.IPLedger) types.UID {
	if l.Spec.PoolUID != "" {
		return types.UID(l.Spec.PoolUID)
	}
	for _, ref := range l.OwnerReferences {
		if ref.Kind == "IPPool" {
			return ref.UID
		}
	}
	return ""
}

// drain seals the pool's ledgers if they record no allocation, the root
// last: a sealed ledger is never written again, and a listed shard not
// created yet is created sealed, so once the root is sealed nothing can be
// committed to the pool by anyone. Each seal is a compare-and-swap on the
// version this committer read, so a commit that landed meanwhile makes the
// drain fail its race and look again.
//
// The sealed root keeps one hold, over the whole pool, until the last of
// its released prefixes is free again (HeldUntil): the pool's own prefix
// goes back to its parent no sooner, so that a pool created again over it
// cannot hand out an address within its reuse grace either.
func (l *ledgerState) drain(o *op, pool *ipamv1alpha1.IPPool, now time.Time) error {
	n, claims := 0, 0
	var last time.Time
	grace := Grace(pool)
	for _, d := range l.docs() {
		for _, until := range d.holds { // sealed shards' too
			if until.After(last) {
				last = until
			}
		}
		for p, r := range d.released {
			// A kept prefix was released without a hold: the pool's
			// prefix still waits out its reuse grace.
			if d.keeps(p, r, now) && r.Released.Add(grace).After(last) {
				last = r.Released.Add(grace)
			}
		}
		if !d.dead {
			n += d.allocs.len()
			claims += d.claims
		}
	}
	if n > 0 {
		return &NotEmptyError{Allocations: n, Claims: claims, Pools: n - claims}
	}
	l.root.holds = map[netip.Prefix]time.Time{}
	if p, err := netutil.ParsePrefix(pool.Spec.CIDR); err == nil && last.After(now) {
		l.root.holds[p] = last
	}
	for _, d := range l.listed {
		if !d.dead {
			d.seal = true
			l.closing = append(l.closing, d)
			o.deps = append(o.deps, d)
		}
	}
	l.root.seal, l.root.dirty = true, true
	o.deps = append(o.deps, l.root)
	return nil
}

// HeldUntil is when the last prefix a ledger holds for its pool's reuse
// grace is free again: for a drained pool's sealed root, when the pool's
// own prefix may be handed out again. Zero when it holds none.
func HeldUntil(l *ipamv1alpha1.IPLedger) time.Time {
	_, holds, err := parseDoc(l)
	var last time.Time
	if err != nil {
		return last
	}
	for _, until := range holds {
		if until.After(last) {
			last = until
		}
	}
	return last
}

// loadState parses a root and the shards found for it.
func loadState(root *ipamv1alpha1.IPLedger, shards []ipamv1alpha1.IPLedger) (*ledgerState, error) {
	rd, err := newDoc(root)
	if err != nil {
		return nil, err
	}
	listed, err := parseShards(root)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: spec.shards: %w", root.Name, err)
	}
	byName := make(map[string]*ipamv1alpha1.IPLedger, len(shards))
	for i := range shards {
		byName[shards[i].Name] = &shards[i]
	}
	l := &ledgerState{root: rd, bits: int(root.Spec.ShardBits), next: root.Spec.NextShard, listed: make(map[netip.Prefix]*doc, len(listed))}
	for s, n := range listed {
		name := ShardName(root.Spec.Pool, n)
		obj := byName[name]
		switch {
		case obj == nil:
			l.listed[s] = &doc{name: name, n: n, cidr: s, allocs: newEntries(0), holds: map[netip.Prefix]time.Time{}, released: map[netip.Prefix]Release{}}
		case ownShard(root, obj, listed):
			d, err := newDoc(obj)
			if err != nil {
				return nil, err
			}
			d.n, d.cidr = n, s
			l.listed[s] = d
		default:
			d := &doc{name: name, n: n, cidr: s, obj: obj, dead: true}
			if obj.Spec.Sealed && obj.Spec.Pool == root.Spec.Pool && obj.Spec.Root == string(root.UID) {
				// Sealed by a drain that lost its race on the root: what it
				// held still counts (drain).
				d.holds, _ = parseHolds(obj)
			}
			l.listed[s] = d
		}
	}
	return l, nil
}

// contents is what the root and its live shards record.
func (l *ledgerState) contents() *Ledger {
	out := &Ledger{Allocations: map[netip.Prefix]Entry{}, Holds: map[netip.Prefix]time.Time{}, Released: map[netip.Prefix]Release{}}
	for _, d := range l.docs() {
		if d.dead {
			continue
		}
		for p, e := range d.allocs.all() {
			out.Allocations[p] = e
		}
		maps.Copy(out.Holds, d.holds)
		maps.Copy(out.Released, d.released)
	}
	return out
}

// recordedLen is the length of the text obj records.
func recordedLen(obj *ipamv1alpha1.IPLedger) int {
	return len(obj.Spec.Allocations) + len(obj.Spec.Holds) + len(obj.Spec.Shards) + len(obj.Spec.Released)
}

func newDoc(obj *ipamv1alpha1.IPLedger) (*doc, error) {
	allocs, claims, err := parseEntries(obj)
	if err != nil {
		return nil, err
	}
	holds, err := parseHolds(obj)
	if err != nil {
		return nil, err
	}
	released, err := parseReleased(obj)
	if err != nil {
		return nil, err
	}
	return &doc{name: obj.Name, obj: withoutText(obj), allocs: allocs, claims: claims, holds: holds, released: released, size: recordedLen(obj)}, nil
}

// withoutText is a copy of a ledger object without the text its doc holds
// parsed: its entries, holds, released lines and shards, which put
// formats again from the doc's maps. Everything else put writes back as it
// was read (the resourceVersion, the fence; labels, owners, finalizers;
// the rest of its spec) is kept. Each doc would otherwise hold a second
// copy of its ledger's text beside the informer's (docs/design.md, "Memory
// per claim").
func withoutText(obj *ipamv1alpha1.IPLedger) *ipamv1alpha1.IPLedger {
	o := *obj
	o.Spec.Allocations, o.Spec.Holds, o.Spec.Released, o.Spec.Shards = "", "", "", ""
	return &o
}

// Build returns an allocator for pool holding what ledger records, on the
// clock now (which expires its holds).
func Build(pool *ipamv1alpha1.IPPool, ledger *Ledger, now func() time.Time) (*allocator.Allocator, error) {
	prefix, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return nil, fmt.Errorf("pool %s is not ready: spec.cidr: %w", pool.Name, err)
	}
	a, err := allocator.New(prefix, allocator.WithClock(now))
	if err != nil {
		return nil, err
	}
	allocs := make([]netip.Prefix, 0, len(ledger.Allocations))
	for p := range ledger.Allocations {
		allocs = append(allocs, p)
	}
	if err := a.Restore(allocs); err != nil {
		return nil, fmt.Errorf("restoring pool %s from its ledger: %w", pool.Name, err)
	}
	for p, until := range ledger.Holds {
		if until.After(now()) {
			_ = a.Hold(p, until)
		}
	}
	for _, r := range reservedSpace(pool, prefix, allocs) {
		_ = a.ReserveRange(r.From(), r.To())
	}
	for p := range ledger.Released {
		if _, kept := ledger.Kept(p, now()); kept {
			// Kept for its last holder's identity: allocated, as the
			// allocator of the replica that released it keeps it. A
			// reservation added since wins: the prefix is then not kept.
			_ = a.Allocate(p)
		}
	}
	return a, nil
}

// reservedSpace is what pool's reserved ranges, excluded first and last
// addresses and gateway keep out of circulation: all of it but the allocations that
// overlap it. A reservation added after prefixes were handed out does not
// evict them, and holds for all the rest of its space.
func reservedSpace(pool *ipamv1alpha1.IPPool, prefix netip.Prefix, allocs []netip.Prefix) []netipx.IPRange {
	reserved := reservedSet(pool, prefix)
	if len(reserved.Ranges()) == 0 {
		return nil
	}
	var b netipx.IPSetBuilder
	b.AddSet(reserved)
	for _, p := range allocs {
		if reserved.OverlapsPrefix(p) {
			b.RemovePrefix(p)
		}
	}
	rest, err := b.IPSet()
	if err != nil {
		return nil
	}
	return rest.Ranges()
}

// ReservedSet is the space pool's reserved ranges, excluded first and
// last addresses and gateway cover inside its cidr (empty for a pool without one).
func ReservedSet(pool *ipamv1alpha1.IPPool) *netipx.IPSet {
	prefix, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return &netipx.IPSet{}
	}
	return reservedSet(pool, prefix)
}

func reservedSet(pool *ipamv1alpha1.IPPool, prefix netip.Prefix) *netipx.IPSet {
	var b netipx.IPSetBuilder
	for _, s := range pool.Spec.Reserved {
		if r, err := netutil.ParseRange(s); err == nil {
			b.AddRange(r)
		}
	}
	first, last := prefix.Masked().Addr(), netipx.PrefixLastIP(prefix)
	if n := pool.Spec.ExcludeFirst; n > 0 {
		b.AddRange(netipx.IPRangeFrom(first, netutil.Step(first, uint64(n)-1, last)))
	}
	if n := pool.Spec.ExcludeLast; n > 0 {
		b.AddRange(netipx.IPRangeFrom(netutil.Step(last, uint64(n)-1, first), last))
	}
	// The gateway is the network's, never a claim's.
	if gw, err := netip.ParseAddr(pool.Spec.Gateway); err == nil {
		b.Add(gw)
	}
	var inPool netipx.IPSetBuilder
	inPool.AddPrefix(prefix)
	if set, err := inPool.IPSet(); err == nil {
		b.Intersect(set)
	}
	reserved, err := b.IPSet()
	if err != nil {
		return &netipx.IPSet{}
	}
	return reserved
}

func allocateOne(a *allocator.Allocator, req *Request) (netip.Prefix, error) {
	if req.CIDR.IsValid() {
		if err := a.Allocate(req.CIDR); err != nil {
			return netip.Prefix{}, err
		}
		return req.CIDR, nil
	}
	if req.Pool.Spec.Strategy == ipamv1alpha1.Random {
		return a.AllocateRandom(req.Bits)
	}
	return a.AllocateNext(req.Bits)
}

// releaseOne frees o.release in the allocator and the ledger, holding it for
