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
	"iter"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unique"
)

// entries is a doc's spec.allocations as a Manager keeps it: every entry a
// replica's pools record, in every replica, so its size is paid once per
// claim (docs/design.md, "Memory per claim"). An entry in NewEntryID's form
// is packed in 24 bytes, its holder a shared handle, its time in seconds
// and its ID in the 64 bits it spells; a map of Entry took 56 and a string
// for the ID besides. Entries that do not pack exactly are kept as they
// are (odd). What get and all give back is what put was given, but for the
// time, which is kept to the second, as the ledger's text keeps it.
type entries struct {
	packed map[netip.Prefix]packedEntry
	// odd are the entries whose ID or time a packedEntry cannot spell
	// back exactly: a claim's uid (a waiting claim bound later, a prefix
	// recorded by the repair path), no ID (an entry written before kipam
	// recorded IDs), or a time before 1970 or after 2106 (an edited line).
	// Nil until one is put.
	odd map[netip.Prefix]Entry
}

// packedEntry is an Entry whose ID is in NewEntryID's form and whose time
// is a whole number of seconds from 1970 to 2106.
type packedEntry struct {
	holder unique.Handle[string]
	id     uint64
	at     uint32
}

// idDigits is the length of NewEntryID's IDs: 64 bits in base 36.
const idDigits = 13

func newEntries(n int) entries {
	return entries{packed: make(map[netip.Prefix]packedEntry, n)}
}

// pack returns e packed, and false when a packedEntry cannot give e back
// (to the second).
func pack(e Entry) (packedEntry, bool) {
	at := e.At.Unix()
	id, ok := packID(e.ID)
	if !ok || at < 0 || at > math.MaxUint32 {
		return packedEntry{}, false
	}
	return packedEntry{holder: unique.Make(e.Holder), id: id, at: uint32(at)}, true
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

func (v packedEntry) entry() Entry {
	var b [idDigits]byte
	return Entry{Holder: v.holder.Value(), At: time.Unix(int64(v.at), 0), ID: string(appendID(b[:0], v.id))}
}

func (es *entries) len() int { return len(es.packed) + len(es.odd) }

// get returns the entry of exactly p.
func (es *entries) get(p netip.Prefix) (Entry, bool) {
	if v, ok := es.packed[p]; ok {
		return v.entry(), true
	}
	e, ok := es.odd[p]
	return e, ok
}

// has reports whether an entry holds exactly p.
func (es *entries) has(p netip.Prefix) bool {
	if _, ok := es.packed[p]; ok {
		return true
	}
	_, ok := es.odd[p]
	return ok
}

// put records e as p's entry, in place of any other.
func (es *entries) put(p netip.Prefix, e Entry) {
	es.remove(p)
	if v, ok := pack(e); ok {
		es.packed[p] = v
		return
	}
	if es.odd == nil {
		es.odd = map[netip.Prefix]Entry{}
	}
	e.Holder, e.At, e.ID = intern(e.Holder), time.Unix(e.At.Unix(), 0), strings.Clone(e.ID)
	es.odd[p] = e
}

// remove forgets p's entry.
func (es *entries) remove(p netip.Prefix) {
	delete(es.packed, p)
	delete(es.odd, p)
}

// all yields every entry, in no order.
func (es *entries) all() iter.Seq2[netip.Prefix, Entry] {
	return func(yield func(netip.Prefix, Entry) bool) {
		for p, v := range es.packed {
			if !yield(p, v.entry()) {
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
		for p, v := range es.packed {
			if v.holder == h && v.id == want {
				return p, true
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
	keys := make([]netip.Prefix, 0, es.len())
	for p := range es.packed {
		keys = append(keys, p)
	}
	for p := range es.odd {
		keys = append(keys, p)
	}
	slices.SortFunc(keys, comparePrefix)
	b := make([]byte, 0, len(keys)*64)
	var idb [idDigits]byte
	for _, p := range keys {
		var holder string
		var at int64
		var id []byte
		if v, ok := es.packed[p]; ok {
			holder, at, id = v.holder.Value(), int64(v.at), appendID(idb[:0], v.id)
		} else {
			e := es.odd[p]
			holder, at, id = e.Holder, e.At.Unix(), append(idb[:0], e.ID...)
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
