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
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// sightings is when this replica first saw each entry of each ledger, on
// its own clock. Every replica records them as its informer of IPLedgers
// sees each version of a ledger (watchSightings), leader or not, so that a
// replica that becomes leader measures the orphan grace from when it first
// saw an entry, not from when it became leader. The zero value is ready to
// use.
type sightings struct {
	mu sync.Mutex
	// seen is, per ledger, a sight of each entry, sorted (compareSights)
	// and sized to what record or of last put there: every replica keeps
	// one per entry of every ledger, so a slice of values, not a map and an
	// object per entry (TestSightingsCost).
	seen map[string][]sight
	// base is the time every sight's first is an offset from (8 bytes,
	// where a time is 24): the first sight's now. An offset from a time
	// that carries the monotonic reading compares on the monotonic clock,
	// as the time itself would, so a wall clock set meanwhile moves no
	// grace.
	base time.Time
	// aged is, per pool, what the versions of its status.unconfirmed this
	// replica saw say of each entry they list.
	aged map[string]map[agedKey]aged
}

// aged is what a pool's status.unconfirmed says of an entry.
type aged struct {
	// since is the earliest sight it implies: when this replica saw the
	// version, less the entry's seenFor.
	since time.Time
	// sent is when overdue last gave the entry's ledger to the backup
	// sweep.
	sent time.Time
}

// agedKey names an entry of a pool's status.unconfirmed: its ledger and
// the entry.
type agedKey struct {
	ledger string
	entryKey
}

// sighting is what a sweep is told of an entry (sightings.of): when this
// replica first saw it, and whether its sweep has seen a stored claim
// carry it since (an IPAddressClaim's entry: whether its last sweep saw
// one carry it, and settled, whether one has been seen answered with it,
// which it stays for as long as the claim lives). It is the sweep's own
// copy: what the sweep learns of carried and settled it hands back with
// sightings.mark, for its next sweep.
type sighting struct {
	first            time.Time
	carried, settled bool
}

// sight is how sightings keep an entry's sighting: the entry (its
// prefix's address in 16 bytes, its length and family; its holder, ID and
// time) and first as an offset from sightings.base. 72 bytes.
type sight struct {
	addr       [16]byte
	holder, id string
	at         int64
	first      time.Duration
	bits       uint8
	is4        bool
	carried    bool
	settled    bool
}

// sightOf is the sight of entry k, first seen at first.
func sightOf(k entryKey, first time.Duration) sight {
	a := k.cidr.Addr()
	return sight{addr: a.As16(), holder: k.holder, id: k.id, at: k.at, first: first, bits: uint8(k.cidr.Bits()), is4: a.Is4()}
}

// compareSights orders the sights of a ledger by their entries: prefix
// (address, family, length), holder, ID and time.
func compareSights(a, b sight) int {
	if c := bytes.Compare(a.addr[:], b.addr[:]); c != 0 {
		return c
	}
	if a.is4 != b.is4 {
		if a.is4 {
			return -1
		}
		return 1
	}
	return cmp.Or(cmp.Compare(a.bits, b.bits), strings.Compare(a.holder, b.holder), strings.Compare(a.id, b.id), cmp.Compare(a.at, b.at))
}

// find returns the sight of entry k among sights, sorted, or nil.
func find(sights []sight, k entryKey) *sight {
	i, ok := slices.BinarySearchFunc(sights, sightOf(k, 0), compareSights)
	if !ok {
		return nil
	}
	return &sights[i]
}

// entryKey tells a ledger's entries apart: its prefix, holder and ID.
type entryKey struct {
	cidr       netip.Prefix
	holder, id string
	// at is the entry's time: an entry renewed by a create that took it
	// over (ipam.Request.Reclaim) is seen afresh.
	at int64
}

func key(p netip.Prefix, e ipam.Entry) entryKey { return entryKey{p, e.Holder, e.ID, e.At.Unix()} }

// since is t as an offset from base, which the first sight sets.
func (s *sightings) since(t time.Time) time.Duration {
	if s.seen == nil {
		s.seen = map[string][]sight{}
		s.base = t
	}
	return t.Sub(s.base)
}

// record records now as the first sight of the ledger's entries not seen
// before, and forgets the entries it no longer records. It is fed every
// version of a ledger in order, by the informer.
func (s *sightings) record(ledger string, entries map[netip.Prefix]ipam.Entry, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.since(now)
	// The new entries' strings, not the old ones: they are the current
	// version's, so no older version of the ledger's text is kept.
	is := make([]sight, 0, len(entries))
	for p, e := range entries {
		is = append(is, sightOf(key(p, e), first))
	}
	slices.SortFunc(is, compareSights)
	was := s.seen[ledger]
	for i := range is {
		if j, ok := slices.BinarySearchFunc(was, is[i], compareSights); ok {
			is[i].first, is[i].carried, is[i].settled = was[j].first, was[j].carried, was[j].settled
		}
	}
	s.seen[ledger] = is
}

// of returns what this replica knows of each of a ledger's entries, by
// prefix, as a sweep read them, recording now as the first sight of those
// not seen before. It forgets nothing: the sweep may have read an older
// version of the ledger than the informer last recorded, and only the
// informer sees every version in order. A sight is moved back to what the
// pool's published ages imply, when that is earlier (sightings.published).
func (s *sightings) of(pool, ledger string, entries map[netip.Prefix]ipam.Entry, now time.Time) map[netip.Prefix]sighting {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.since(now)
	known := s.seen[ledger]
	published := s.aged[pool]
	out := make(map[netip.Prefix]sighting, len(entries))
	var added []sight
	for p, e := range entries {
		k := key(p, e)
		w := find(known, k)
		if w == nil {
			added = append(added, sightOf(k, first))
			w = &added[len(added)-1]
		}
		if a, ok := published[agedKey{ledger, k}]; ok {
			w.first = min(w.first, a.since.Sub(s.base))
		}
		out[p] = sighting{first: s.base.Add(w.first), carried: w.carried, settled: w.settled}
	}
	if len(added) > 0 {
		all := make([]sight, 0, len(known)+len(added))
		all = append(append(all, known...), added...)
		slices.SortFunc(all, compareSights)
		s.seen[ledger] = all
	}
	return out
}

// mark records what the sweep of a ledger learnt of its entry e at p:
// whether a stored claim carries it, and whether one was seen answered
// with it. Only that sweep marks an entry (one at a time per ledger on a
// replica: IPLedgerReconciler.lockOf), never the informer, and its next
// sweep is told it (of), whatever record did between: record keeps them
// for an entry it still records. An entry forgotten meanwhile is not
// marked.
func (s *sightings) mark(ledger string, p netip.Prefix, e ipam.Entry, w sighting) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := find(s.seen[ledger], key(p, e)); k != nil {
		k.carried, k.settled = w.carried, w.settled
	}
}

// published records what a version of a pool's status.unconfirmed says,
// seen by this replica's informer at now: that a replica, maybe another
// one or this one before it restarted, had seen each entry it lists for at
// least seenFor when it wrote the status. That was before this replica saw
// the version, so the entry was stored by now minus seenFor, on this
// replica's clock: its sight may move back to then. Only a duration
// crosses from one replica to another, never a time, so a clock set wrong
// on either side changes nothing; and the time from the write until the
// sweep reads it (this replica down, or not yet leader) counts, since the
// informer saw the version first. An entry the version no longer lists is
// forgotten; one it lists again keeps the earliest implied sight.
func (s *sightings) published(pool string, entries []ipamv1alpha1.UnconfirmedEntry, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.aged[pool]
	if len(entries) == 0 {
		delete(s.aged, pool)
		return
	}
	is := make(map[agedKey]aged, len(entries))
	for _, u := range entries {
		p, err := netip.ParsePrefix(u.CIDR)
		if err != nil || u.SeenFor.Duration <= 0 {
			continue
		}
		k := agedKey{u.Ledger, entryKey{p, u.Holder, u.ID, u.CommittedAt.Unix()}}
		a := aged{since: now.Add(-u.SeenFor.Duration)}
		if w, ok := was[k]; ok {
			a.sent = w.sent
			if w.since.Before(a.since) {
				a.since = w.since
			}
		}
		is[k] = a
	}
	if s.aged == nil {
		s.aged = map[string]map[agedKey]aged{}
	}
	s.aged[pool] = is
}

// overdue returns the ledgers holding an entry that the status of their
// pool still lists as unconfirmed, and that this replica has known for more
// than after, by its own sight or by an age published: the leader's sweep
// would have released it by then, unless no leader serves (killed, frozen,
// or not yet elected). Only an entry this replica's sightings still hold
// counts, and one not given again within resend of the last time: an entry
// a sweep found held, in a pool whose status nobody refreshes (one being
// deleted, or no leader), costs a sweep per resend, not one per tick.
func (s *sightings) overdue(now time.Time, after, resend time.Duration) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, published := range s.aged {
		for k, a := range published {
			w := find(s.seen[k.ledger], k.entryKey)
			if w == nil || (!a.sent.IsZero() && now.Sub(a.sent) < resend) {
				continue
			}
			since := a.since
			if first := s.base.Add(w.first); first.Before(since) {
				since = first
			}
			if now.Sub(since) <= after {
				continue
			}
			a.sent = now
			published[k] = a
			if !slices.Contains(out, k.ledger) {
				out = append(out, k.ledger)
			}
		}
	}
	return out
}

// forget drops what this replica knows of a ledger that is gone.
func (s *sightings) forget(ledger string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.seen, ledger)
}

// watchSightings records in s, on the clock now, every entry of every
// ledger that informers' IPLedger informer sees, and the ages every pool's
// status publishes that its IPPool informer sees. The manager's cache runs
// on every replica, leader or not (only the controllers wait for
// leadership), and an informer asked for before the cache starts is
// started with it.
func watchSightings(ctx context.Context, informers cache.Informers, s *sightings, now func() time.Time) error {
	pools, err := informers.GetInformer(ctx, &ipamv1alpha1.IPPool{})
	if err != nil {
		return fmt.Errorf("getting the informer of IPPools: %w", err)
	}
	_, err = pools.AddEventHandler(handlerOf(
		func(p *ipamv1alpha1.IPPool) { s.published(p.Name, p.Status.Unconfirmed, now()) },
		func(p *ipamv1alpha1.IPPool) { s.published(p.Name, nil, now()) }))
	if err != nil {
		return fmt.Errorf("watching IPPools for the orphan sweep's published ages: %w", err)
	}
	inf, err := informers.GetInformer(ctx, &ipamv1alpha1.IPLedger{})
	if err != nil {
		return fmt.Errorf("getting the informer of IPLedgers: %w", err)
	}
	_, err = inf.AddEventHandler(handlerOf(
		func(l *ipamv1alpha1.IPLedger) {
			entries, err := ipam.Entries(l)
			if err != nil {
				return // the sweep of this ledger reports it
			}
			s.record(l.Name, entries, now())
		},
		func(l *ipamv1alpha1.IPLedger) { s.forget(l.Name) }))
	if err != nil {
		return fmt.Errorf("watching IPLedgers for the orphan sweep's sightings: %w", err)
	}
	return nil
}

// handlerOf calls see with each version of an object of kind T that an
// informer sees, and gone with the last it saw of one deleted.
func handlerOf[T any](see, gone func(T)) toolscache.ResourceEventHandlerFuncs {
	on := func(f func(T)) func(any) {
		return func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if t, ok := o.(T); ok {
				f(t)
			}
		}
	}
	return toolscache.ResourceEventHandlerFuncs{AddFunc: on(see), UpdateFunc: func(_, o any) { on(see)(o) }, DeleteFunc: on(gone)}
}
