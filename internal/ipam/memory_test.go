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
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// shardEntryMap is n claim entries of namespace ns, hosts from first on.
func shardEntryMap(first netip.Addr, n int, ns string) map[netip.Prefix]Entry {
	m := make(map[netip.Prefix]Entry, n)
	for a := first; len(m) < n; a = a.Next() {
		m[netip.PrefixFrom(a, a.BitLen())] = Entry{Holder: ClaimHolder(ns), At: time.Unix(1765000000, 0), ID: NewEntryID()}
	}
	return m
}

// within reports whether s's bytes lie inside text's.
func within(s, text string) bool {
	if s == "" || text == "" {
		return false
	}
	p, lo := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(text)))
	return p >= lo && p < lo+uintptr(len(text))
}

// TestParsedLedgerKeepsNoText: what is parsed from a ledger shares no
// memory with the object's text, and a doc keeps the object without it,
// but with everything its next write sends back as it was read: the
// resourceVersion (the fence), labels, owners, finalizers, the rest of the
// spec. A parsed entry cut from the text would keep that version of the
// ledger's text alive as long as it is kept (docs/design.md, "Memory per
// claim").
func TestParsedLedgerKeepsNoText(t *testing.T) {
	obj := &ipamv1alpha1.IPLedger{
		ObjectMeta: metav1.ObjectMeta{Name: "mem.0", ResourceVersion: "7", UID: "uid-shard",
			Labels:          map[string]string{ipamv1alpha1.LabelPool: "mem"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "ipam.kipam.dev/v1alpha1", Kind: "IPPool", Name: "mem", UID: "uid-mem"}},
			Finalizers:      []string{ipamv1alpha1.LedgerFinalizer}},
		Spec: ipamv1alpha1.IPLedgerSpec{Pool: "mem", PoolUID: "uid-mem", Shard: "10.77.0.0/26", Root: "uid-root",
			// Eight entries that pack, and one that does not: a claim's uid.
			Allocations: formatEntriesPlainly(shardEntryMap(netip.MustParseAddr("10.77.0.0"), 8, "tenant")) +
				"10.77.0.50/32 " + ClaimHolder("other") + " 1765000000 0f8fad5b-d9cb-469f-a165-70867728950e\n",
			Holds:    "10.77.0.60/32 1765000100\n",
			Released: "10.77.0.61/32 tenant web uid-web 1765000000 1765000050 1765000200 kept\n"},
	}
	want := obj.DeepCopy()
	d, err := newDoc(obj)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.allocs.packed) != 8 || len(d.allocs.odd) != 1 || len(d.holds) != 1 || len(d.released) != 1 {
		t.Fatalf("parsed %d packed and %d odd entries, %d holds, %d released lines; want 8, 1, 1, 1",
			len(d.allocs.packed), len(d.allocs.odd), len(d.holds), len(d.released))
	}
	for _, v := range d.allocs.packed {
		if within(v.holder.Value(), obj.Spec.Allocations) {
			t.Errorf("the holder of %s is cut from the ledger's text: it keeps the whole text alive", v.prefix())
		}
	}
	for p, e := range d.allocs.odd {
		if within(e.Holder, obj.Spec.Allocations) || within(e.ID, obj.Spec.Allocations) {
			t.Errorf("the entry of %s (%s %s) is cut from the ledger's text: it keeps the whole text alive", p, e.Holder, e.ID)
		}
	}
	for p, r := range d.released {
		for _, s := range []string{r.Namespace, r.Identity, r.UID} {
			if within(s, obj.Spec.Released) {
				t.Errorf("the released line of %s keeps %q cut from the ledger's text", p, s)
			}
		}
	}
	if s := d.obj.Spec; s.Allocations != "" || s.Holds != "" || s.Released != "" || s.Shards != "" {
		t.Errorf("the doc keeps the ledger's text beside its parsed maps: %+v", s)
	}
	kept := d.obj.DeepCopy()
	kept.Spec.Allocations, kept.Spec.Holds, kept.Spec.Released = want.Spec.Allocations, want.Spec.Holds, want.Spec.Released
	if !reflect.DeepEqual(kept, want) {
		t.Errorf("the doc keeps %+v of the ledger, want all but its text: %+v", kept, want)
	}
	if !reflect.DeepEqual(obj, want) {
		t.Errorf("newDoc changed the object it read")
	}
}

// TestParsedLedgerCost reports the heap a Manager's doc keeps per entry,
// parsed from a shard of 64 entries, and fails when it keeps more than
// a map of Entry (built here from copies of the entries): the ledger's
// text, which an entry cut from it, or the doc's copy of the object,
// would keep alive; or when its entries no longer pack (entries: 139 B
// an entry, where a map of Entry keeps 216).
//
//	go test ./internal/ipam -run TestParsedLedgerCost -v
func TestParsedLedgerCost(t *testing.T) {
	const shards = 200
	objs := func() []*ipamv1alpha1.IPLedger {
		out := make([]*ipamv1alpha1.IPLedger, shards)
		for i := range out {
			all := shardEntryMap(netip.AddrFrom4([4]byte{10, 78, byte(i / 4), byte(i % 4 * 64)}), shardEntries, "tenant")
			out[i] = &ipamv1alpha1.IPLedger{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("mem.%d", i), ResourceVersion: "1"},
				Spec: ipamv1alpha1.IPLedgerSpec{Pool: "mem", Allocations: formatEntriesPlainly(all)}}
		}
		return out
	}
	// What the doc keeps, the objects it was read from dropped.
	kept := keptBy(func() any {
		in := objs()
		docs := make([]*doc, shards)
		for i, obj := range in {
			d, err := newDoc(obj)
			if err != nil {
				t.Fatal(err)
			}
			docs[i] = d
		}
		return docs
	})
	// The same maps, of entries that own their strings.
	alone := keptBy(func() any {
		in := objs()
		maps := make([]map[netip.Prefix]Entry, shards)
		for i, obj := range in {
			allocs, err := Entries(obj)
			if err != nil {
				t.Fatal(err)
			}
			m := make(map[netip.Prefix]Entry, len(allocs))
			for p, e := range allocs {
				e.Holder, e.ID = strings.Clone(e.Holder), strings.Clone(e.ID)
				m[p] = e
			}
			maps[i] = m
		}
		return maps
	})

	n := int64(shards * shardEntries)
	t.Logf("a doc keeps %d B an entry; a map of Entry, %d B", kept/n, alone/n)
	// A line of text is about 50 bytes an entry; a shared holder saves
	// the doc up to 16.
	if kept > alone+20*n {
		t.Errorf("a doc keeps %d B an entry, %d B more than its parsed maps: it keeps the ledger's text alive", kept/n, (kept-alone)/n)
	}
	if kept/n > 80 {
		t.Errorf("a doc keeps %d B an entry: are its entries packed, in a slice?", kept/n)
	}
}

// keptBy is the heap that what build returns keeps, once what build
// dropped is collected: the median of five builds, because the
// goroutines that earlier tests of the package left (their Managers'
// timers) allocate and free beside it.
func keptBy(build func() any) int64 {
	heap := func() int64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	var got [5]int64
	for i := range got {
		before := heap()
		v := build()
		got[i] = heap() - before
		runtime.KeepAlive(v)
	}
	slices.Sort(got[:])
	return got[len(got)/2]
}
