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
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/kipam/kipam/internal/allocator"
)

// TestNaiveMatchesKipam drives the naive allocator and kipam's with the same
// random operations on a small pool with mixed prefix lengths: both are
// first fit, so they must agree on every answer and end with the same
// allocations. It checks the naive allocator more than kipam's, which has
// its own oracle tests.
func TestNaiveMatchesKipam(t *testing.T) {
	pool := netip.MustParsePrefix("10.0.0.0/20")
	reserved := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/32"), netip.MustParsePrefix("10.0.15.255/32")}
	a := newKipam(t, pool, reserved, nil)
	n := newNaive(t, pool, reserved, nil)
	r := rand.New(rand.NewPCG(7, 8))
	var live []netip.Prefix
	for range 5000 {
		bits := 22 + r.IntN(11)
		switch op := r.IntN(3); {
		case op == 0 || len(live) == 0:
			pa, errA := a.AllocateNext(bits)
			pn, errN := n.AllocateNext(bits)
			if pa != pn || (errA == nil) != (errN == nil) {
				t.Fatalf("AllocateNext(%d): kipam %v, %v; naive %v, %v", bits, pa, errA, pn, errN)
			}
			if errA == nil {
				live = append(live, pa)
			} else if !errors.Is(errA, allocator.ErrExhausted) {
				t.Fatal(errA)
			}
		case op == 1:
			p := netip.PrefixFrom(addr4(10<<24|r.Uint32N(1<<12)), bits).Masked()
			errA, errN := a.Allocate(p), n.Allocate(p)
			if (errA == nil) != (errN == nil) {
				t.Fatalf("Allocate(%v): kipam %v; naive %v", p, errA, errN)
			}
			if errA == nil {
				live = append(live, p)
			}
		default:
			i := r.IntN(len(live))
			p := live[i]
			live = slices.Delete(live, i, i+1)
			if errA, errN := a.Release(p), n.Release(p); errA != nil || errN != nil {
				t.Fatalf("Release(%v): kipam %v; naive %v", p, errA, errN)
			}
		}
	}
	got := slices.Collect(a.All())
	want := slices.Collect(func(yield func(netip.Prefix) bool) {
		for p := range n.allocs {
			if !yield(p) {
				return
			}
		}
	})
	slices.SortFunc(want, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	if !slices.Equal(got, want) || n.Len() != len(live) {
		t.Fatalf("kipam holds %d allocations, naive %d, want %d", len(got), len(want), len(live))
	}
}

// TestFixtures checks that every allocator loads a fixture to the same
// state: the live allocations are taken, the targets free, and the
// free capacity what is left of the pool.
func TestFixtures(t *testing.T) {
	const n = 1000
	hosts, children := hostFixture(n), childFixture(n)
	for _, fx := range []*fixture{hosts, children} {
		seen := make(map[netip.Prefix]bool)
		for _, p := range slices.Concat(fx.live, fx.free) {
			if seen[p] {
				t.Fatalf("%v drawn twice", p)
			}
			seen[p] = true
		}
	}

	ka, na, ia := newKipam(t, hostPool, hostReserved, hosts.live), newNaive(t, hostPool, hostReserved, hosts.live), newIPAllocator(t, hosts)
	if got, want := ia.Free(), hostSlots-2-n; got != want {
		t.Errorf("ipallocator has %d free addresses, want %d", got, want)
	}
	if got, want := ka.Usage().Available.Int64(), int64(hostSlots-2-n); got != want {
		t.Errorf("kipam has %d free addresses, want %d", got, want)
	}
	for i, p := range hosts.live[:10] {
		if ka.Allocate(p) == nil || na.Allocate(p) == nil || ia.Allocate(hosts.liveIP[i]) == nil {
			t.Errorf("live %v could be allocated again", p)
		}
	}
	for i, p := range hosts.free[:10] {
		if ka.Allocate(p) != nil || na.Allocate(p) != nil || ia.Allocate(hosts.freeIP[i]) != nil {
			t.Errorf("free %v could not be allocated", p)
		}
	}

	// cidrset cannot be asked what is free: allocate all of it instead.
	cs := newCIDRSet(t, children)
	live := make(map[string]bool)
	for _, p := range children.live {
		live[p.String()] = true
	}
	for range childSlots - n {
		c, err := cs.AllocateNext()
		if err != nil {
			t.Fatal(err)
		}
		if live[c.String()] {
			t.Fatalf("cidrset handed out live %v", c)
		}
	}
	if c, err := cs.AllocateNext(); err == nil {
		t.Fatalf("cidrset handed out %v past its capacity", c)
	}
}
