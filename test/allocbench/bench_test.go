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

package allocbench

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
)

// Every benchmark starts each allocator from the same fixture: N live
// allocations at random places in the pool. One op is one call of the
// operation named by the benchmark (AllocateNext, a specific Allocate, or
// Release) and nothing else. To keep the live count at N, every `batch`
// ops the timer stops and the last ops are undone (released, or allocated
// again), so the pool goes back to the fixture's state; the live count
// stays between N and N±batch. Setup and undo are not timed and their
// allocations are not counted. The Next benchmarks also report the heap
// each allocator holds per live allocation (B/live), measured after setup.
//
// Each allocator is driven through a closure, which costs the same one
// indirect call for all of them.

var liveCounts = []int{1_000, 10_000, 100_000}

// batch is the most ops between two undos; ring holds their results.
const batch = 1024

// impl is one allocator on one workload: setup builds it from the fixture
// and returns the timed operation and its inverse. Op i's result, if any,
// is kept in slot i%batch of a ring until it is undone.
type impl struct {
	name  string
	setup func(tb testing.TB, fx *fixture) (do, undo func(i int))
}

// run benchmarks each impl at each live count, undoing every batchFor(n) ops.
func run(b *testing.B, fixtureFor func(n int) *fixture, batchFor func(n int) int, heap bool, impls []impl) {
	for _, im := range impls {
		for _, n := range liveCounts {
			b.Run(fmt.Sprintf("impl=%s/live=%d", im.name, n), func(b *testing.B) {
				fx := fixtureFor(n)
				var do, undo func(int)
				perLive := heapDelta(func() { do, undo = im.setup(b, fx) }) / float64(n)
				k := batchFor(n)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					do(i)
					i++
					if i%k == 0 {
						b.StopTimer()
						for j := i - k; j < i; j++ {
							undo(j)
						}
						b.StartTimer()
					}
				}
				// b.Loop drops metrics reported before it, so report after.
				if heap {
					b.ReportMetric(perLive, "B/live")
				}
			})
		}
	}
}

func fullBatch(int) int { return batch }

// releaseBatch keeps releases to a tenth of the live allocations.
func releaseBatch(n int) int { return min(batch, n/10) }

// heapDelta returns how much the live heap grew across f.
func heapDelta(f func()) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.GC()
	runtime.ReadMemStats(&after)
	return float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
}

// The do and undo closures, one pair per allocator API shape.

// nextPrefix allocates with next and releases with release, netip style.
func nextPrefix(tb testing.TB, next func() (netip.Prefix, error), release func(netip.Prefix) error) (do, undo func(int)) {
	ring := make([]netip.Prefix, batch)
	do = func(i int) {
		p, err := next()
		if err != nil {
			tb.Fatal(err)
		}
		ring[i%batch] = p
	}
	undo = func(i int) {
		if err := release(ring[i%batch]); err != nil {
			tb.Fatal(err)
		}
	}
	return do, undo
}

// specific applies do to ps[i%len(ps)] and undo to the same prefix.
func specific[T any](tb testing.TB, ps []T, do, undo func(T) error) (func(int), func(int)) {
	return func(i int) {
			if err := do(ps[i%len(ps)]); err != nil {
				tb.Fatal(err)
			}
		}, func(i int) {
			if err := undo(ps[i%len(ps)]); err != nil {
				tb.Fatal(err)
			}
		}
}

// BenchmarkNextHost allocates the next free address of a /12 Service range.
// ipallocator's AllocateNext is not first fit: it scans from a random offset
// for a free bit, so kipam's AllocateRandom (uniform over the free
// addresses) is the like-for-like comparison; kipam-next and naive are first
// fit.
func BenchmarkNextHost(b *testing.B) {
	run(b, hostFixture, fullBatch, true, []impl{
		{"kipam-next", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			a := newKipam(tb, hostPool, hostReserved, fx.live)
			return nextPrefix(tb, func() (netip.Prefix, error) { return a.AllocateNext(32) }, a.Release)
		}},
		{"kipam-random", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			a := newKipam(tb, hostPool, hostReserved, fx.live)
			return nextPrefix(tb, func() (netip.Prefix, error) { return a.AllocateRandom(32) }, a.Release)
		}},
		{"ipallocator", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			r := newIPAllocator(tb, fx)
			ring := make([]net.IP, batch)
			return func(i int) {
					ip, err := r.AllocateNext()
					if err != nil {
						tb.Fatal(err)
					}
					ring[i%batch] = ip
				}, func(i int) {
					if err := r.Release(ring[i%batch]); err != nil {
						tb.Fatal(err)
					}
				}
		}},
		{"naive", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			n := newNaive(tb, hostPool, hostReserved, fx.live)
			return nextPrefix(tb, func() (netip.Prefix, error) { return n.AllocateNext(32) }, n.Release)
		}},
	})
}

// BenchmarkNextChild allocates the next free /26 of a /8. cidrset is next
// fit (it scans on from its last allocation), kipam and naive first fit.
func BenchmarkNextChild(b *testing.B) {
	run(b, childFixture, fullBatch, true, []impl{
		{"kipam-next", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			a := newKipam(tb, childPool, nil, fx.live)
			return nextPrefix(tb, func() (netip.Prefix, error) { return a.AllocateNext(childBits) }, a.Release)
		}},
		{"cidrset", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			s := newCIDRSet(tb, fx)
			ring := make([]*net.IPNet, batch)
			return func(i int) {
					n, err := s.AllocateNext()
					if err != nil {
						tb.Fatal(err)
					}
					ring[i%batch] = n
				}, func(i int) {
					if err := s.Release(ring[i%batch]); err != nil {
						tb.Fatal(err)
					}
				}
		}},
		{"naive", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			n := newNaive(tb, childPool, nil, fx.live)
			return nextPrefix(tb, func() (netip.Prefix, error) { return n.AllocateNext(childBits) }, n.Release)
		}},
	})
}

// BenchmarkAllocateHost allocates given free addresses of the /12.
func BenchmarkAllocateHost(b *testing.B) {
	run(b, hostFixture, fullBatch, false, []impl{
		{"kipam", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			a := newKipam(tb, hostPool, hostReserved, fx.live)
			return specific(tb, fx.free, a.Allocate, a.Release)
		}},
		{"ipallocator", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			r := newIPAllocator(tb, fx)
			return specific(tb, fx.freeIP, r.Allocate, r.Release)
		}},
		{"naive", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			n := newNaive(tb, hostPool, hostReserved, fx.live)
			return specific(tb, fx.free, n.Allocate, n.Release)
		}},
	})
}

// BenchmarkAllocateChild allocates given free /26s of the /8 (cidrset's
// Occupy, with which the node IPAM controller records a node's existing
// pod CIDR).
func BenchmarkAllocateChild(b *testing.B) {
	run(b, childFixture, fullBatch, false, []impl{
		{"kipam", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			a := newKipam(tb, childPool, nil, fx.live)
			return specific(tb, fx.free, a.Allocate, a.Release)
		}},
		{"cidrset", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			s := newCIDRSet(tb, fx)
			return specific(tb, fx.freeNet, s.Occupy, s.Release)
		}},
		{"naive", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			n := newNaive(tb, childPool, nil, fx.live)
			return specific(tb, fx.free, n.Allocate, n.Release)
		}},
	})
}

// BenchmarkReleaseHost releases live addresses of the /12.
func BenchmarkReleaseHost(b *testing.B) {
	run(b, hostFixture, releaseBatch, false, []impl{
		{"kipam", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			a := newKipam(tb, hostPool, hostReserved, fx.live)
			return specific(tb, fx.live, a.Release, a.Allocate)
		}},
		{"ipallocator", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			r := newIPAllocator(tb, fx)
			return specific(tb, fx.liveIP, r.Release, r.Allocate)
		}},
		{"naive", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			n := newNaive(tb, hostPool, hostReserved, fx.live)
			return specific(tb, fx.live, n.Release, n.Allocate)
		}},
	})
}

// BenchmarkReleaseChild releases live /26s of the /8.
func BenchmarkReleaseChild(b *testing.B) {
	run(b, childFixture, releaseBatch, false, []impl{
		{"kipam", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			a := newKipam(tb, childPool, nil, fx.live)
			return specific(tb, fx.live, a.Release, a.Allocate)
		}},
		{"cidrset", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			s := newCIDRSet(tb, fx)
			return specific(tb, fx.liveNet, s.Release, s.Occupy)
		}},
		{"naive", func(tb testing.TB, fx *fixture) (func(int), func(int)) {
			n := newNaive(tb, childPool, nil, fx.live)
			return specific(tb, fx.live, n.Release, n.Allocate)
		}},
	})
}
