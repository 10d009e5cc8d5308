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
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// randomEntry draws an entry of the kinds a ledger holds, and the odd
// ones: IDs of NewEntryID's form (with leading zeros, and the largest),
// claims' uids, none, the same digits in upper case; times with and
// without nanoseconds, before 1970 and past 2106.
func randomEntry(r *rand.Rand) Entry {
	holders := []string{ClaimHolder("tenant-a"), ClaimHolder("b"), PoolHolder("child"), "IPAddressClaim/x"}
	e := Entry{Holder: holders[r.IntN(len(holders))]}
	switch r.IntN(7) {
	case 0:
		e.ID = ""
	case 1:
		e.ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
	case 2:
		e.ID = "3W5E11264SGSF"
	case 3:
		e.ID = "3w5e11264sgsf" // math.MaxUint64
	case 4:
		e.ID = fmt.Sprintf("%013s", "1") // leading zeros
	default:
		e.ID = NewEntryID()
	}
	switch r.IntN(6) {
	case 0:
		e.At = time.Unix(-1, 0)
	case 1:
		e.At = time.Unix(math.MaxUint32+1, 0)
	case 2:
		e.At = time.Unix(math.MaxUint32, 0)
	case 3:
		e.At = time.Unix(0, 0)
	default:
		e.At = time.Unix(1_765_000_000+r.Int64N(1e6), r.Int64N(1e9))
	}
	return e
}

// FuzzEntries puts and removes random entries, and checks entries against
// a map of Entry (the doc's maps before entries), each entry's time cut to
// the second as the ledger's text keeps it: what get, has, len, all and
// find answer, and the text format writes, which parseEntries and
// parseDoc read back.
//
//	go test ./internal/ipam -run '^$' -fuzz FuzzEntries -fuzztime 30s
func FuzzEntries(f *testing.F) {
	for seed := range uint64(8) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		r := rand.New(rand.NewPCG(seed, 0))
		es, want := newEntries(0), map[netip.Prefix]Entry{}
		prefix := func() netip.Prefix {
			switch r.IntN(5) {
			case 0, 1:
				return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(32))}), 32-r.IntN(2)*8)
			case 2:
				// The same addresses mapped into IPv6: other prefixes.
				return netip.PrefixFrom(netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 10, 15: byte(r.IntN(32))}), 128)
			}
			return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(r.IntN(32))}), 64+r.IntN(2)*64)
		}
		for range r.IntN(200) {
			p := prefix()
			if r.IntN(4) == 0 {
				es.remove(p)
				delete(want, p)
				continue
			}
			e := randomEntry(r)
			es.put(p, e)
			e.At = time.Unix(e.At.Unix(), 0)
			want[p] = e
		}
		if es.len() != len(want) {
			t.Fatalf("len %d, want %d", es.len(), len(want))
		}
		for range 64 {
			p := prefix()
			got, ok := es.get(p)
			w, wok := want[p]
			if ok != wok || got != w || es.has(p) != wok {
				t.Fatalf("get(%s) = %+v %v, has %v; want %+v %v", p, got, ok, es.has(p), w, wok)
			}
		}
		all := map[netip.Prefix]Entry{}
		for p, e := range es.all() {
			if _, dup := all[p]; dup {
				t.Fatalf("all yields %s twice", p)
			}
			all[p] = e
		}
		if fmt.Sprint(all) != fmt.Sprint(want) {
			t.Fatalf("all yields %v, want %v", all, want)
		}
		for p, e := range want {
			// IDs repeat among the entries drawn: any prefix of the same
			// holder and ID will do.
			got, ok := es.find(e.Holder, e.ID)
			if w, wok := want[got]; !ok || !wok || !w.Is(e.Holder, e.ID) {
				t.Fatalf("find(%s, %s) = %s %v, want one recorded so, such as %s", e.Holder, e.ID, got, ok, p)
			}
		}
		if p, ok := es.find(ClaimHolder("nobody"), NewEntryID()); ok {
			t.Fatalf("find of an entry nobody holds = %s", p)
		}

		text := es.format()
		if w := formatEntriesPlainly(want); text != w {
			t.Fatalf("format writes\n%s\nwant\n%s", text, w)
		}
		obj := &ipamv1alpha1.IPLedger{ObjectMeta: metav1.ObjectMeta{Name: "fuzz"}, Spec: ipamv1alpha1.IPLedgerSpec{Allocations: text}}
		back, claims, err := parseEntries(obj)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := Entries(obj)
		if err != nil {
			t.Fatal(err)
		}
		wantClaims := 0
		for _, e := range want {
			if isClaim(e) {
				wantClaims++
			}
		}
		if back.format() != text || fmt.Sprint(parsed) != fmt.Sprint(want) || claims != wantClaims {
			t.Fatalf("read back: %q (%d claims) and %v, want %q (%d claims)", back.format(), claims, parsed, text, wantClaims)
		}
	})
}

// formatEntriesPlainly is what a ledger's spec.allocations says of m, one
// line a prefix in address order, written without entries.
func formatEntriesPlainly(m map[netip.Prefix]Entry) string {
	keys := slices.SortedFunc(func(yield func(netip.Prefix) bool) {
		for p := range m {
			if !yield(p) {
				return
			}
		}
	}, comparePrefix)
	var b strings.Builder
	for _, p := range keys {
		e := m[p]
		fmt.Fprintf(&b, "%s %s %d", p, e.Holder, e.At.Unix())
		if e.ID != "" {
			fmt.Fprintf(&b, " %s", e.ID)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// TestEntriesPackWhatNewEntryIDMints: every ID kipam mints, and a time of
// its clock, take the packed form; what the packed form cannot spell back
// exactly does not.
func TestEntriesPackWhatNewEntryIDMints(t *testing.T) {
	for range 1000 {
		if e := (Entry{Holder: ClaimHolder("a"), At: time.Now(), ID: NewEntryID()}); !packs(e) {
			t.Fatalf("%+v does not pack", e)
		}
	}
	for _, e := range []Entry{
		{Holder: "h", At: time.Unix(1, 0), ID: ""},
		{Holder: "h", At: time.Unix(1, 0), ID: "0f8fad5b-d9cb-469f-a165-70867728950e"},
		{Holder: "h", At: time.Unix(1, 0), ID: "3W5E11264SGSF"},
		{Holder: "h", At: time.Unix(1, 0), ID: "3w5e11264sgsg"}, // past 64 bits
		{Holder: "h", At: time.Unix(1, 0), ID: "+000000000001"},
		{Holder: "h", At: time.Unix(-1, 0), ID: NewEntryID()},
		{Holder: "h", At: time.Unix(math.MaxUint32+1, 0), ID: NewEntryID()},
	} {
		if packs(e) {
			t.Errorf("%+v packs: it would not be spelt back as it was", e)
		}
	}
}

func packs(e Entry) bool {
	es := newEntries(1)
	es.put(netip.MustParsePrefix("10.0.0.1/32"), e)
	return len(es.packed) == 1
}

// BenchmarkEntries is what a doc's entries cost the commit path: a new
// entry put and removed again, and a look-up, in a shard's 64 entries
// and in a root of 16,384, the most a root ledger's 1 MiB holds of the
// shortest lines:
//
//	go test ./internal/ipam -run '^$' -bench Entries -benchmem
func BenchmarkEntries(b *testing.B) {
	for _, n := range []int{shardEntries, 1 << 14} {
		es := newEntries(n)
		for i := range n {
			es.put(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32),
				Entry{Holder: "tenant", At: time.Unix(1765000000, 0), ID: NewEntryID()})
		}
		mid := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n / 2 >> 16), byte(n / 2 >> 8), byte(n / 2)}), 31) // no entry's
		e := Entry{Holder: "tenant", At: time.Unix(1765000001, 0), ID: NewEntryID()}
		b.Run(fmt.Sprintf("put+remove/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				es.put(mid, e)
				es.remove(mid)
			}
		})
		held := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n / 3 >> 16), byte(n / 3 >> 8), byte(n / 3)}), 32)
		b.Run(fmt.Sprintf("get/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := es.get(held); !ok {
					b.Fatal("not found")
				}
			}
		})
	}
}
