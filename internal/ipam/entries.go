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
	"encoding/binary"
	"iter"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unique"
)

// entries is a doc's spec.allocations as a Manager keeps it: every entry
// the pools a replica owns record, so its size is paid once per claim
// (docs/design.md, "Memory per claim"). An entry in NewEntryID's form is
// packed in 40 bytes with its prefix, its holder a shared handle, its time
// in seconds and its ID in the 64 bits it spells, in a slice sorted by
// prefix: a map by prefix took 56 bytes a slot and kept up to twice the
// slots it held, and a map of Entry 88 bytes a slot and a string for the
// ID besides. A doc holds a shard's few dozen entries, or a root's few
// thousand at most (--max-ledger-bytes): a look-up is a binary search, a
// new entry a copy of those after it. Entries that do not pack exactly
// are kept as they are (odd). What get and all give back is what put was
// given, but for the time, which is kept to the second, as the ledger's
// text keeps it.
type entries struct {
	// packed is in comparePrefix's order, each prefix once.
	packed []packedEntry
	// odd are the entries whose ID or time a packedEntry cannot spell
	// back exactly: a claim's uid (a waiting claim bound later, a prefix
	// recorded by the repair path), no ID (an entry written before kipam
	// recorded IDs), or a time before 1970 or after 2106 (an edited line).
	// Nil until one is put.
	odd map[netip.Prefix]Entry
}

// packedEntry is a prefix and its Entry, whose ID is in NewEntryID's form
// and whose time is a whole number of seconds from 1970 to 2106.
type packedEntry struct {
	// hi and lo are the prefix's address as As16 spells it, big-endian:
	// compared as numbers, they order as its bytes do.
	hi, lo uint64
	at     uint32
	bits   uint8
	is4    bool
	holder unique.Handle[string]
	id     uint64
}

// prefix is v's prefix.
func (v *packedEntry) prefix() netip.Prefix {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	a := netip.AddrFrom16(b)
	if v.is4 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, int(v.bits))
}

// idDigits is the length of NewEntryID's IDs: 64 bits in base 36.
const idDigits = 13

func newEntries(n int) entries {
	return entries{packed: make([]packedEntry, 0, n)}
}

// pack returns p and e packed, and false when a packedEntry cannot give
// them back (e to the second).
func pack(p netip.Prefix, e Entry) (packedEntry, bool) {
	at := e.At.Unix()
	id, ok := packID(e.ID)
	if !ok || at < 0 || at > math.MaxUint32 || !p.IsValid() {
		return packedEntry{}, false
	}
	v := keyOf(p)
	v.holder, v.id, v.at = unique.Make(e.Holder), id, uint32(at)
	return v, true
}

// keyOf is a packedEntry of p and no entry: what search compares.
func keyOf(p netip.Prefix) packedEntry {
	b := p.Addr().As16()
	return packedEntry{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:]), is4: p.Addr().Is4(), bits: uint8(p.Bits())}
}

// packID returns the 64 bits an ID in NewEntryID's form spells.
func packID(s string) (uint64, bool) {
	if len(s) != idDigits {
		return 0, false
	}
	id, err := strconv.ParseUint(s, 36, 64)
	if err != nil {
		return 0, false
	}
	var b [idDigits]byte
	return id, string(appendID(b[:0], id)) == s // not in upper case
}

// appendID appends id as NewEntryID spells it.
func appendID(b []byte, id uint64) []byte {
	var digits [idDigits]byte
	s := strconv.AppendUint(digits[:0], id, 36)
	for range idDigits - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}

func (v *packedEntry) entry() Entry {
	var b [idDigits]byte
	return Entry{Holder: v.holder.Value(), At: time.Unix(int64(v.at), 0), ID: string(appendID(b[:0], v.id))}
}

func (es *entries) len() int { return len(es.packed) + len(es.odd) }

// search returns where p's packed entry is, or would be, in es.packed,
// and whether it is there.
func (es *entries) search(p netip.Prefix) (int, bool) {
	if !p.IsValid() {
		return 0, false // never packed
	}
	k := keyOf(p)
	lo, hi := 0, len(es.packed)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if comparePacked(&es.packed[m], &k) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(es.packed) && comparePacked(&es.packed[lo], &k) == 0
}

// comparePacked orders packed entries by their prefixes as comparePrefix
// does, without making them: IPv4 before IPv6, then by address, then by
// length.
func comparePacked(a, b *packedEntry) int {
	if a.is4 != b.is4 {
		if a.is4 {
			return -1
		}
		return 1
	}
	return cmp.Or(cmp.Compare(a.hi, b.hi), cmp.Compare(a.lo, b.lo), cmp.Compare(a.bits, b.bits))
}

// get returns the entry of exactly p.
func (es *entries) get(p netip.Prefix) (Entry, bool) {
	if i, ok := es.search(p); ok {
		return es.packed[i].entry(), true
	}
	e, ok := es.odd[p]
	return e, ok
}

// has reports whether an entry holds exactly p.
func (es *entries) has(p netip.Prefix) bool {
	if _, ok := es.search(p); ok {
		return true
	}
	_, ok := es.odd[p]
	return ok
}

// put records e as p's entry, in place of any other.
func (es *entries) put(p netip.Prefix, e Entry) {
	i, found := es.search(p)
	if v, ok := pack(p, e); ok {
		delete(es.odd, p)
		if found {
			es.packed[i] = v
		} else {
			es.packed = slices.Insert(es.packed, i, v)
		}
		return
	}
	if found {
		es.packed = slices.Delete(es.packed, i, i+1)
	}
	if es.odd == nil {
		es.odd = map[netip.Prefix]Entry{}
	}
	e.Holder, e.At, e.ID = intern(e.Holder), time.Unix(e.At.Unix(), 0), strings.Clone(e.ID)
	es.odd[p] = e
}

// remove forgets p's entry.
func (es *entries) remove(p netip.Prefix) {
	if i, ok := es.search(p); ok {
		es.packed = slices.Delete(es.packed, i, i+1)
	}
	delete(es.odd, p)
}

// all yields every entry: the packed ones in address order, then the odd
// ones in no order.
func (es *entries) all() iter.Seq2[netip.Prefix, Entry] {
	return func(yield func(netip.Prefix, Entry) bool) {
		for i := range es.packed {
			if !yield(es.packed[i].prefix(), es.packed[i].entry()) {
				return
			}
		}
		for p, e := range es.odd {
			if !yield(p, e) {
				return
			}
		}
	}
}

// find returns the prefix recorded as the entry id of holder, looking at
// every entry without spelling any out.
func (es *entries) find(holder, id string) (netip.Prefix, bool) {
	if want, ok := packID(id); ok {
		h := unique.Make(holder)
		for i := range es.packed {
			if v := &es.packed[i]; v.holder == h && v.id == want {
				return v.prefix(), true
			}
		}
	}
	for p, e := range es.odd {
		if e.Is(holder, id) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// format is the doc's spec.allocations: a line a prefix, in address
// order, its holder, its time in unix seconds and its ID.
func (es *entries) format() string {
	odd := slices.SortedFunc(maps.Keys(es.odd), comparePrefix)
	b := make([]byte, 0, es.len()*64)
	var idb [idDigits]byte
	for i, j := 0, 0; i < len(es.packed) || j < len(odd); {
		var p netip.Prefix
		var holder string
		var at int64
		var id []byte
		if i < len(es.packed) {
			p = es.packed[i].prefix()
		}
		// The two are merged in address order; a prefix is in one only.
		if i < len(es.packed) && (j == len(odd) || comparePrefix(p, odd[j]) < 0) {
			v := &es.packed[i]
			holder, at, id = v.holder.Value(), int64(v.at), appendID(idb[:0], v.id)
			i++
		} else {
			e := es.odd[odd[j]]
			p, holder, at, id = odd[j], e.Holder, e.At.Unix(), append(idb[:0], e.ID...)
			j++
		}
		b = append(p.AppendTo(b), ' ')
		b = strconv.AppendInt(append(append(b, holder...), ' '), at, 10)
		if len(id) > 0 {
			b = append(append(b, ' '), id...)
		}
		b = append(b, '\n')
	}
	return string(b)
}
