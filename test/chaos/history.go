//go:build chaos

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

package chaos

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// record is one prefix a client was told it holds: a claim's spec.cidr in
// the object its create returned, or a pool's (a carved child's, or a
// top-level pool's own). It is live, from the client's point of view, from
// Told until End: when the client sent the delete (zero while it never
// did).
type record struct {
	Kind   string       `json:"kind"`   // IPClaim or IPPool
	Object string       `json:"object"` // namespace/name of a claim, name of a pool
	UID    string       `json:"uid"`
	Pool   string       `json:"pool"` // the pool it was allocated from; "" for a top-level pool (its family's space)
	CIDR   netip.Prefix `json:"cidr"`
	Told   time.Time    `json:"told"`
	End    time.Time    `json:"end,omitzero"`
	How    string       `json:"how"` // create (the response), lookup (read after an ambiguous create), discovered (found at the end)
	Op     string       `json:"op"`
	// Faults active when the client was told, and when it sent the delete.
	FaultsAtTold []string `json:"faultsAtTold,omitempty"`
	FaultsAtEnd  []string `json:"faultsAtEnd,omitempty"`
}

func (r *record) String() string {
	end := "live"
	if !r.End.IsZero() {
		end = "delete sent " + r.End.Format("15:04:05.000")
	}
	from := r.Pool
	if from == "" {
		from = "the address space"
	}
	return fmt.Sprintf("%s %s (uid %s) %s from %s, told %s by %s (op %s, faults %v), %s (faults %v)",
		r.Kind, r.Object, r.UID, r.CIDR, from, r.Told.Format("15:04:05.000"), r.How, r.Op, r.FaultsAtTold, end, r.FaultsAtEnd)
}

// history is everything clients were told, in the order they were told.
type history struct {
	mu      sync.Mutex
	records []*record
	byKey   map[string]*record // kind/object/uid
}

func newHistory() *history { return &history{byKey: map[string]*record{}} }

func key(kind, object, uid string) string { return kind + "/" + object + "/" + uid }

// add records r unless the same object (by uid) was recorded already; it
// returns the record kept.
func (h *history) add(r *record) *record {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := key(r.Kind, r.Object, r.UID)
	if old, ok := h.byKey[k]; ok {
		return old
	}
	h.byKey[k] = r
	h.records = append(h.records, r)
	return r
}

func (h *history) lookup(kind, object, uid string) *record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byKey[key(kind, object, uid)]
}

// end marks r deleted from the client's view at t, unless it was already.
func (h *history) end(r *record, t time.Time, faults []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.End.IsZero() {
		r.End, r.FaultsAtEnd = t, faults
	}
}

func (h *history) snapshot() []record {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]record, len(h.records))
	for i, r := range h.records {
		out[i] = *r
	}
	return out
}

// write saves the history as JSON lines.
func (h *history) write(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, r := range h.snapshot() {
		if err := enc.Encode(r); err != nil {
			_ = f.Close()
			return err
		}
	}
	return f.Close()
}

// overlap is two records whose prefixes overlap while both were live from
// the clients' view, and that are not a pool and what was carved from it.
type overlap struct{ a, b record }

// overlaps finds every pair of told prefixes that overlap in address and
// in time ([Told, End)), except a pool's prefix and a prefix allocated from
// that pool or one of its descendants (ancestors gives a pool's chain of
// parents by name; a pool recreated under its name keeps its parent). It
// sweeps the records in the order they were told, keeping those still
// live: with no bug, that is at most the few hundred live prefixes.
func overlaps(records []record, ancestors func(pool string) []string) []overlap {
	recs := slices.Clone(records)
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Told.Before(recs[j].Told) })
	var active []record
	var out []overlap
	for _, r := range recs {
		kept := active[:0]
		for _, a := range active {
			if a.End.IsZero() || a.End.After(r.Told) {
				kept = append(kept, a)
			}
		}
		active = kept
		for _, a := range active {
			if a.CIDR.Overlaps(r.CIDR) && !carvedFrom(a, r, ancestors) && !carvedFrom(r, a, ancestors) {
				out = append(out, overlap{a: a, b: r})
			}
		}
		if r.End.IsZero() || r.End.After(r.Told) {
			active = append(active, r)
		}
	}
	return out
}

// carvedFrom reports whether inner was allocated from the pool outer (or
// from a pool below it) and lies inside outer's prefix.
func carvedFrom(outer, inner record, ancestors func(string) []string) bool {
	if outer.Kind != "IPPool" || !outer.CIDR.Contains(inner.CIDR.Addr()) || outer.CIDR.Bits() > inner.CIDR.Bits() {
		return false
	}
	if inner.Pool == "" {
		return false
	}
	return inner.Pool == outer.Object || slices.Contains(ancestors(inner.Pool), outer.Object)
}

// describe is a short account of an overlap for the report.
func (o overlap) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %s\n  %s\n", o.a.String(), o.b.String())
	return b.String()
}
