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

package allocator

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
)

// The steady-state benchmarks fill a pool with `live` allocations, then
// repeat one operation pair that leaves the count at `live`: release a
// random allocation and allocate again, so first fit lands in the hole just
// made somewhere in the pool. One op is that pair: an allocation and a
// release. They report the heap the allocator holds per live allocation,
// measured after a GC, as B/alloc.

var liveCounts = []int{0, 1_000, 10_000, 100_000, 1_000_000}

// meterCPU locks the benchmark to its thread and returns a function to call
// after b.Loop that reports the thread's CPU time per op as cpu-ns/op. On
// a shared machine it leaves out the time the OS gave other processes,
// which ns/op counts (not the cache lines they evicted).
func meterCPU(b *testing.B) (stop func()) {
	runtime.LockOSThread()
	c0, ok := threadCPU()
	return func() {
		c1, ok1 := threadCPU()
		runtime.UnlockOSThread()
		if ok && ok1 && b.N > 0 {
			b.ReportMetric(float64(c1-c0)/float64(b.N), "cpu-ns/op")
		}
	}
}

type allocFunc func(a *Allocator, i int) (netip.Prefix, error)

func next(bits int) allocFunc {
	return func(a *Allocator, _ int) (netip.Prefix, error) { return a.AllocateNext(bits) }
}

func random(bits int) allocFunc {
	return func(a *Allocator, _ int) (netip.Prefix, error) { return a.AllocateRandom(bits) }
}

// mixed cycles through lengths: mostly hosts, some small and some /24 blocks.
func mixed() allocFunc {
	lengths := [...]int{32, 32, 32, 32, 32, 32, 31, 30, 28, 24}
	return func(a *Allocator, i int) (netip.Prefix, error) { return a.AllocateNext(lengths[i%len(lengths)]) }
}

// fill returns an allocator for pool holding live allocations made by f,
// and the heap it takes per allocation.
func fill(b *testing.B, pool string, live int, f allocFunc) (*Allocator, []netip.Prefix, float64) {
	b.Helper()
	ps := make([]netip.Prefix, live)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	a, err := New(netip.MustParsePrefix(pool), WithRand(rand.New(rand.NewPCG(1, 2))))
	if err != nil {
		b.Fatal(err)
	}
	for i := range ps {
		if ps[i], err = f(a, i); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perAlloc := 0.0
	if live > 0 {
		perAlloc = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(live)
	}
	return a, ps, perAlloc
}

// victims holds the live allocations of a steady-state benchmark, 4 bytes
// each, for the harness to pick the one to release: at 10^6 live a slice of
// 32-byte netip.Prefix is 32 MB, and reading a random entry of it is a
// cache and TLB miss that is the harness's, not the allocator's. An entry
// is the allocation's index in units of the smallest size 2^kmin; with
// several sizes, shifted left once over k-kmin trailing ones.
//
// Even at 4 MB, the list outgrows the cache at 10^6 live, so the harness
// draws its victims 64 at a time and reads their entries together: read
// one at a time, just before the release that needs it, each entry was a
// cache miss that the release waited for, ~100 ns an operation of the
// harness's own that 10^3 live does not pay. Read together, the misses
// overlap. The allocator sees the same operations in the same order.
type victims struct {
	a    *Allocator
	kmin uint
	one  bool // every allocation has size 2^kmin: no size code
	v    []uint32
}

func newVictims(b *testing.B, a *Allocator, ps []netip.Prefix, minBits int, oneSize bool) *victims {
	vs := &victims{a: a, kmin: a.w - uint(minBits), one: oneSize, v: make([]uint32, len(ps))}
	need := a.d - vs.kmin
	if !oneSize {
		need++
	}
	if need > 32 {
		b.Fatalf("%d-bit victim codes do not fit in 32 bits", need)
	}
	for j, p := range ps {
		vs.set(j, p)
	}
	return vs
}

func (vs *victims) set(j int, p netip.Prefix) {
	off := addrBits(p.Addr()).and(lowMask(vs.a.d))
	c := off.rsh(vs.kmin).lo
	if !vs.one {
		c = c<<1 | (1<<(vs.a.w-uint(p.Bits())-vs.kmin) - 1)
	}
	vs.v[j] = uint32(c)
}

func (vs *victims) get(j int) netip.Prefix {
	c := uint64(vs.v[j])
	k := uint(0)
	if !vs.one {
		k = uint(bits.TrailingZeros64(^c))
		c = c >> 1 &^ (1<<k - 1)
	}
	return vs.a.prefix(u128{0, c}.lsh(vs.kmin), k+vs.kmin)
}

// benchSteady is the steady-state benchmark for allocations that the
// harness must remember (random, or of mixed sizes): minBits is the longest
// prefix f allocates, oneSize whether it allocates only that length.
func benchSteady(b *testing.B, pool string, counts []int, f allocFunc, minBits int, oneSize bool) {
	benchSteadyFixed(b, pool, counts, f, -1-minBits, oneSize)
}

// benchSteadyFixed is benchSteady for first fit of one length, bits >= 0:
// the live allocations are then always the lowest `live` blocks, because
// first fit refills the hole just made, so the harness computes the one to
// release instead of reading it from a large slice (a cache miss that is
// not the allocator's). bits < 0 is benchSteady's: -1-bits is its minBits.
func benchSteadyFixed(b *testing.B, pool string, counts []int, f allocFunc, bits int, oneSize bool) {
	for _, live := range counts {
		b.Run(fmt.Sprintf("live=%d", live), func(b *testing.B) {
			a, ps, perAlloc := fill(b, pool, live, f)
			var nth func(j int) netip.Prefix
			var vs *victims
			if bits >= 0 {
				k := a.w - uint(bits)
				nth = func(j int) netip.Prefix { return a.prefix(u128{0, uint64(j)}.lsh(k), k) }
			} else {
				vs = newVictims(b, a, ps, -1-bits, oneSize)
				nth = vs.get
			}
			ps = nil
			r := rand.New(rand.NewPCG(3, 4))
			var js [64]int // the next victims
			var touched uint32
			b.ReportAllocs()
			i := 0
			stop := meterCPU(b)
			for b.Loop() {
				if live == 0 {
					p, err := f(a, i)
					if err != nil {
						b.Fatal(err)
					}
					if err := a.Release(p); err != nil {
						b.Fatal(err)
					}
				} else {
					if i%len(js) == 0 {
						for c := range js {
							js[c] = r.IntN(live)
							if vs != nil {
								touched += vs.v[js[c]]
							}
						}
					}
					j := js[i%len(js)]
					if err := a.Release(nth(j)); err != nil {
						b.Fatal(err)
					}
					p, err := f(a, i)
					if err != nil {
						b.Fatal(err)
					}
					if vs != nil {
						vs.set(j, p)
					} else if p != nth(j) {
						b.Fatalf("first fit gave %v, want %v", p, nth(j))
					}
				}
				i++
			}
			stop()
			benchSink = touched
			if live > 0 {
				b.ReportMetric(perAlloc, "B/alloc")
			}
		})
	}
}

// benchSink keeps the harness's reads of its victims from being optimized
// away.
var benchSink uint32

func BenchmarkNextHostV4Slash8(b *testing.B) {
	benchSteadyFixed(b, "10.0.0.0/8", liveCounts, next(32), 32, true)
}

// A /8 has room for 65536 /24s.
func BenchmarkNextSlash24FromV4Slash8(b *testing.B) {
	benchSteadyFixed(b, "10.0.0.0/8", []int{0, 1_000, 10_000, 65_000}, next(24), 24, true)
}

// Mixed lengths need more room than a /8 for 10^6 of them.
func BenchmarkNextMixedV4Slash6(b *testing.B) {
	benchSteady(b, "100.0.0.0/6", liveCounts, mixed(), 32, false)
}

func BenchmarkNextSlash64FromV6Slash32(b *testing.B) {
	benchSteadyFixed(b, "2001:db8::/32", liveCounts, next(64), 64, true)
}

func BenchmarkNextHostV6Slash64(b *testing.B) {
	benchSteadyFixed(b, "2001:db8::/64", liveCounts, next(128), 128, true)
}

func BenchmarkRandomHostV4Slash8(b *testing.B) {
	benchSteady(b, "10.0.0.0/8", liveCounts, random(32), 32, true)
}

func BenchmarkRandomSlash64FromV6Slash32(b *testing.B) {
	benchSteady(b, "2001:db8::/32", liveCounts, random(64), 64, true)
}

// BenchmarkSpecificV4Slash8 allocates and releases a given free host in the
// upper half of a /8 whose lower half holds the live allocations.
func BenchmarkSpecificV4Slash8(b *testing.B) {
	for _, live := range liveCounts {
		b.Run(fmt.Sprintf("live=%d", live), func(b *testing.B) {
			a, _, perAlloc := fill(b, "10.0.0.0/8", live, next(32))
			r := rand.New(rand.NewPCG(3, 4))
			targets := make([]netip.Prefix, 1<<12)
			for i := range targets {
				v := 0x0A800000 | r.Uint32N(1<<23)
				targets[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 32)
			}
			b.ReportAllocs()
			i := 0
			stop := meterCPU(b)
			for b.Loop() {
				p := targets[i&(len(targets)-1)]
				if err := a.Allocate(p); err != nil {
					b.Fatal(err)
				}
				if err := a.Release(p); err != nil {
					b.Fatal(err)
				}
				i++
			}
			stop()
			if live > 0 {
				b.ReportMetric(perAlloc, "B/alloc")
			}
		})
	}
}

// BenchmarkReleaseV4Slash8 releases a random live host and allocates that
// same host again.
func BenchmarkReleaseV4Slash8(b *testing.B) {
	for _, live := range liveCounts[1:] {
		b.Run(fmt.Sprintf("live=%d", live), func(b *testing.B) {
			a, ps, perAlloc := fill(b, "10.0.0.0/8", live, next(32))
			r := rand.New(rand.NewPCG(3, 4))
			b.ReportAllocs()
			stop := meterCPU(b)
			for b.Loop() {
				p := ps[r.IntN(live)]
				if err := a.Release(p); err != nil {
					b.Fatal(err)
				}
				if err := a.Allocate(p); err != nil {
					b.Fatal(err)
				}
			}
			stop()
			b.ReportMetric(perAlloc, "B/alloc")
		})
	}
}

// BenchmarkRestore loads 10^6 allocations, shuffled, into a new allocator.
func BenchmarkRestore(b *testing.B) {
	for _, tc := range []struct {
		name, pool string
		f          allocFunc
	}{
		{"hostsV4Slash8", "10.0.0.0/8", next(32)},
		{"mixedV4Slash6", "100.0.0.0/6", mixed()},
		{"slash64FromV6Slash32", "2001:db8::/32", next(64)},
	} {
		b.Run(fmt.Sprintf("%s/live=1000000", tc.name), func(b *testing.B) {
			_, ps, _ := fill(b, tc.pool, 1_000_000, tc.f)
			r := rand.New(rand.NewPCG(3, 4))
			r.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
			b.ReportAllocs()
			for b.Loop() {
				a, _ := New(netip.MustParsePrefix(tc.pool))
				if err := a.Restore(ps); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRelayout measures the pause of one relayout, which an operation
// pays when the tree has doubled or shrunk to a quarter since the last
// (see settled): at 10^6 live allocations, the latest such pause.
func BenchmarkRelayout(b *testing.B) {
	for _, tc := range []struct {
		name, pool string
		f          allocFunc
	}{
		{"hostsV4Slash8", "10.0.0.0/8", next(32)},
		{"mixedV4Slash6", "100.0.0.0/6", mixed()},
		{"randomSlash64FromV6Slash32", "2001:db8::/32", random(64)},
	} {
		b.Run(fmt.Sprintf("%s/live=1000000", tc.name), func(b *testing.B) {
			a, _, _ := fill(b, tc.pool, 1_000_000, tc.f)
			b.ReportAllocs()
			for b.Loop() {
				a.relayout()
			}
			b.ReportMetric(float64(a.nodeCount), "nodes")
		})
	}
}
