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
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"go4.org/netipx"
)

// FuzzAllocator runs random operation sequences against an allocator and an
// oracle built from netipx sets, and checks after every step that they agree.
func FuzzAllocator(f *testing.F) {
	for _, seed := range [][]byte{
		{0, 2, 0, 3, 0, 0, 0, 5, 0, 0, 3, 1, 2},
		{1, 5, 6, 1, 2, 3, 4, 7, 9, 9, 9, 1, 1, 0, 0, 0},
		{0, 9, 8, 40, 0, 0, 0, 1, 3, 2, 5, 7, 1, 0, 0, 0, 10, 0, 0, 0},
		{1, 8, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 11, 0, 0, 5, 2, 9, 9, 4},
		{0, 6, 6, 4, 0, 8, 1, 200, 2, 0, 3, 5, 0, 5, 4, 1, 0, 9, 30},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := runOps(data); err != nil {
			t.Fatal(err)
		}
	})
}

// TestOracleRandom runs the fuzz harness on pseudo-random inputs so that the
// plain test suite covers it too.
func TestOracleRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n := 3000
	if v, err := strconv.Atoi(os.Getenv("ORACLE_INPUTS")); err == nil {
		n = v
	}
	if testing.Short() {
		n = 300
	}
	for i := range n {
		data := make([]byte, 20+r.IntN(300))
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		if err := runOps(data); err != nil {
			t.Fatalf("input %d %x: %v", i, data, err)
		}
	}
}

// comparePrefix orders prefixes by address, the larger block first.
func comparePrefix(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
}

type byteReader struct{ b []byte }

func (r *byteReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *byteReader) u16() uint64 { return uint64(r.byte()) | uint64(r.byte())<<8 }

type hold struct {
	p     netip.Prefix
	until time.Time
}

// oracle is the allocator's state kept naively.
type oracle struct {
	pool   netip.Prefix
	allocs map[netip.Prefix]bool
	resv   netipx.IPSetBuilder
	holds  []hold
	now    time.Time

	restored *Allocator // set by a restore step
}

func (o *oracle) sets() (alloc, resv, held, free *netipx.IPSet) {
	var b netipx.IPSetBuilder
	for p := range o.allocs {
		b.AddPrefix(p)
	}
	alloc, _ = b.IPSet()
	resv, _ = o.resv.IPSet()
	var h netipx.IPSetBuilder
	for _, x := range o.holds {
		if o.now.Before(x.until) {
			h.AddPrefix(x.p)
		}
	}
	held, _ = h.IPSet()
	var fb netipx.IPSetBuilder
	fb.AddPrefix(o.pool)
	fb.RemoveSet(alloc)
	fb.RemoveSet(resv)
	fb.RemoveSet(held)
	free, _ = fb.IPSet()
	return alloc, resv, held, free
}

func addrInt(ip netip.Addr) *big.Int {
	b := ip.As16()
	return new(big.Int).SetBytes(b[:])
}

func setSize(s *netipx.IPSet) *big.Int {
	n := new(big.Int)
	for _, r := range s.Ranges() {
		d := new(big.Int).Sub(addrInt(r.To()), addrInt(r.From()))
		n.Add(n, d.Add(d, big.NewInt(1)))
	}
	return n
}

func largestFree(free *netipx.IPSet) int {
	best := -1
	for _, p := range free.Prefixes() {
		if best < 0 || p.Bits() < best {
			best = p.Bits()
		}
	}
	return best
}

// firstFree returns the lowest free aligned prefix of length bits.
func firstFree(free *netipx.IPSet, bits int) (netip.Prefix, bool) {
	for _, p := range free.Prefixes() {
		if p.Bits() <= bits {
			return netip.PrefixFrom(p.Addr(), bits), true
		}
	}
	return netip.Prefix{}, false
}

func freeCount(free *netipx.IPSet, bits int) *big.Int {
	n := new(big.Int)
	for _, p := range free.Prefixes() {
		if p.Bits() <= bits {
			n.Add(n, new(big.Int).Lsh(big.NewInt(1), uint(bits-p.Bits())))
		}
	}
	return n
}

// wantErr returns what validating p should fail with.
func (o *oracle) validate(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return ErrInvalidLength
	case p.Addr().BitLen() != o.pool.Addr().BitLen():
		return ErrWrongFamily
	case p != p.Masked():
		return ErrNotCanonical
	case p.Bits() < o.pool.Bits() || !o.pool.Contains(p.Addr()):
		return ErrOutsidePool
	}
	return nil
}

var (
	v4Sizes = []int{0, 1, 2, 3, 5, 6, 7, 8, 10, 12, 16, 24, 32}
	v6Sizes = []int{0, 1, 3, 6, 7, 9, 12, 16, 64, 96, 128}
)

// gen makes prefixes from fuzz bytes: mostly canonical prefixes inside the
// pool, near its start or its end so that they collide; sometimes broken.
type gen struct {
	r    *byteReader
	pool netip.Prefix
	w, d int
}

func (g *gen) length() int { return g.pool.Bits() + int(g.r.byte())%(g.d+1) }

func (g *gen) addr() netip.Addr {
	shift := uint(0)
	if g.d > 0 {
		shift = uint(g.r.byte()) % uint(g.d)
	}
	off := u128{0, g.r.u16()}.lsh(shift).and(lowMask(uint(g.d)))
	if g.r.byte()%4 == 0 { // count down from the end
		m := lowMask(uint(g.d))
		off = u128{m.hi ^ off.hi, m.lo ^ off.lo}
	}
	a := &Allocator{w: uint(g.w), base: addrBits(g.pool.Addr())}
	return a.prefix(off, 0).Addr()
}

func (g *gen) prefix() netip.Prefix {
	bits := g.length()
	p, _ := g.addr().Prefix(bits)
	switch g.r.byte() % 16 {
	case 0: // not canonical
		if bits < g.w {
			p = netip.PrefixFrom(p.Addr().Next(), bits)
		}
	case 1: // outside the pool
		if g.pool.Bits() > 0 {
			a := g.pool.Addr().As16()
			i := 16 - g.w/8 + (g.pool.Bits()-1)/8
			a[i] ^= 0x80 >> ((g.pool.Bits() - 1) % 8)
			ip := netip.AddrFrom16(a)
			if g.w == 32 {
				ip = ip.Unmap()
			}
			p = netip.PrefixFrom(ip, g.w)
		}
	case 2: // wrong family
		if g.w == 32 {
			p = netip.MustParsePrefix("2001:db8::/64")
		} else {
			p = netip.MustParsePrefix("10.0.0.0/24")
		}
	}
	return p
}

func runOps(data []byte) error {
	r := &byteReader{data}
	var pool netip.Prefix
	if r.byte()&1 == 0 {
		d := v4Sizes[int(r.byte())%len(v4Sizes)]
		pool = netip.MustParsePrefix("10.20.30.40/32")
		pool, _ = pool.Addr().Prefix(32 - d)
	} else {
		d := v6Sizes[int(r.byte())%len(v6Sizes)]
		pool, _ = netip.MustParseAddr("2001:db8:1234:5678:9abc:def0:1234:5678").Prefix(128 - d)
	}
	o := &oracle{pool: pool, allocs: map[netip.Prefix]bool{}, now: time.Unix(1e9, 0)}
	clock := func() time.Time { return o.now }
	rnd := rand.New(rand.NewPCG(uint64(len(data)), 7))
	a, err := New(pool, WithClock(clock), WithRand(rnd))
	if err != nil {
		return err
	}
	g := &gen{r: r, pool: pool, w: pool.Addr().BitLen(), d: pool.Addr().BitLen() - pool.Bits()}
	for step := 0; len(r.b) > 0 && step < 300; step++ {
		op := r.byte() % 14
		desc, err := o.step(a, g, op)
		if err != nil {
			return fmt.Errorf("pool %s step %d (%s): %w", pool, step, desc, err)
		}
		if desc == "restore" {
			a = o.restored
		}
		if err := o.check(a); err != nil {
			return fmt.Errorf("pool %s step %d (%s): %w", pool, step, desc, err)
		}
	}
	return nil
}

// expectErr compares err with the expected sentinel (nil for success).
func expectErr(err, want error) error {
	if want == nil {
		if err != nil {
			return fmt.Errorf("unexpected error %v", err)
		}
		return nil
	}
	if !errors.Is(err, want) {
		return fmt.Errorf("error %v, want %v", err, want)
	}
	return nil
}

func (o *oracle) conflict(p netip.Prefix) error {
	alloc, resv, held, _ := o.sets()
	switch {
	case alloc.OverlapsPrefix(p):
		return ErrOverlap
	case resv.OverlapsPrefix(p):
		return ErrReserved
	case held.OverlapsPrefix(p):
		return ErrHeld
	}
	return nil
}

func (o *oracle) randomAlloc(g *gen) (netip.Prefix, bool) {
	if len(o.allocs) == 0 {
		return netip.Prefix{}, false
	}
	ps := make([]netip.Prefix, 0, len(o.allocs))
	for p := range o.allocs {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, comparePrefix)
	return ps[int(g.r.byte())%len(ps)], true
}

func (o *oracle) step(a *Allocator, g *gen, op byte) (string, error) {
	switch op {
	case 0, 1: // first fit
		bits := g.length()
		_, _, _, free := o.sets()
		want, ok := firstFree(free, bits)
		got, err := a.AllocateNext(bits)
		desc := fmt.Sprintf("AllocateNext(%d) = %v, %v", bits, got, err)
		if !ok {
			var ex *ExhaustedError
			if !errors.As(err, &ex) || ex.Bits != bits || ex.LargestFree != largestFree(free) || !errors.Is(err, ErrExhausted) {
				return desc, fmt.Errorf("want exhaustion with largest free /%d", largestFree(free))
			}
			return desc, nil
		}
		if err != nil || got != want {
			return desc, fmt.Errorf("want %v", want)
		}
		o.allocs[got] = true
		return desc, nil
	case 2: // random
		bits := g.length()
		_, _, _, free := o.sets()
		_, ok := firstFree(free, bits)
		got, err := a.AllocateRandom(bits)
		desc := fmt.Sprintf("AllocateRandom(%d) = %v, %v", bits, got, err)
		if !ok {
			return desc, expectErr(err, ErrExhausted)
		}
		if err != nil || got.Bits() != bits || got != got.Masked() || !free.ContainsPrefix(got) {
			return desc, errors.New("want a free prefix")
		}
		o.allocs[got] = true
		return desc, nil
	case 3, 4: // specific
		p := g.prefix()
		want := o.validate(p)
		if want == nil {
			want = o.conflict(p)
		}
		err := a.Allocate(p)
		desc := fmt.Sprintf("Allocate(%v) = %v", p, err)
		if err == nil {
			o.allocs[p] = true
		}
		return desc, expectErr(err, want)
	case 5, 6: // release, mostly of an existing allocation
		p, ok := o.randomAlloc(g)
		if !ok || g.r.byte()%4 == 0 {
			p = g.prefix()
		}
		until := o.now.Add(time.Duration(g.r.byte()%64) * time.Second)
		withHold := op == 6
		want := o.validate(p)
		if want == nil && !o.allocs[p] {
			want = ErrNotAllocated
		}
		var err error
		if withHold {
			err = a.ReleaseUntil(p, until)
		} else {
			err = a.Release(p)
		}
		desc := fmt.Sprintf("Release(%v, hold %v) = %v", p, withHold, err)
		if err == nil {
			delete(o.allocs, p)
			if withHold {
				o.holds = append(o.holds, hold{p, until})
			}
		}
		return desc, expectErr(err, want)
	case 7: // hold
		p := g.prefix()
		until := o.now.Add(time.Duration(g.r.byte()%64) * time.Second)
		want := o.validate(p)
		if want == nil {
			if alloc, _, _, _ := o.sets(); alloc.OverlapsPrefix(p) {
				want = ErrOverlap
			}
		}
		err := a.Hold(p, until)
		if err == nil {
			o.holds = append(o.holds, hold{p, until})
		}
		return fmt.Sprintf("Hold(%v, +%v) = %v", p, until.Sub(o.now), err), expectErr(err, want)
	case 8: // reserve
		p := g.prefix()
		want := o.validate(p)
		if want == nil {
			if alloc, _, _, _ := o.sets(); alloc.OverlapsPrefix(p) {
				want = ErrOverlap
			}
		}
		err := a.Reserve(p)
		if err == nil {
			o.resv.AddPrefix(p)
		}
		return fmt.Sprintf("Reserve(%v) = %v", p, err), expectErr(err, want)
	case 9: // reserve a range
		x, y := g.addr(), g.addr()
		if g.r.byte()%8 != 0 && y.Less(x) {
			x, y = y, x
		}
		err := a.ReserveRange(x, y)
		desc := fmt.Sprintf("ReserveRange(%v, %v) = %v", x, y, err)
		if y.Less(x) {
			if err == nil {
				return desc, errors.New("want an error for a reversed range")
			}
			return desc, nil
		}
		var want error
		if alloc, _, _, _ := o.sets(); alloc.OverlapsRange(netipx.IPRangeFrom(x, y)) {
			want = ErrOverlap
		}
		if err == nil {
			o.resv.AddRange(netipx.IPRangeFrom(x, y))
		}
		return desc, expectErr(err, want)
	case 10: // reserve first or last n
		n := uint64(g.r.byte()) % 80
		last := g.r.byte()%2 == 1
		rng, fits := o.edgeRange(n, last)
		var err error
		if last {
			err = a.ReserveLast(n)
		} else {
			err = a.ReserveFirst(n)
		}
		desc := fmt.Sprintf("Reserve(last=%v, %d) = %v", last, n, err)
		switch {
		case !fits:
			return desc, expectErr(err, ErrOutsidePool)
		case n == 0:
			return desc, expectErr(err, nil)
		}
		var want error
		if alloc, _, _, _ := o.sets(); alloc.OverlapsRange(rng) {
			want = ErrOverlap
		}
		if err == nil {
			o.resv.AddRange(rng)
		}
		return desc, expectErr(err, want)
	case 11: // time passes
		o.now = o.now.Add(time.Duration(g.r.byte()%32) * time.Second)
		return "tick", nil
	case 12: // how many could be allocated
		bits := g.length()
		_, _, _, free := o.sets()
		got, want := a.Free(bits), freeCount(free, bits)
		desc := fmt.Sprintf("Free(%d) = %v", bits, got)
		if got.Cmp(want) != 0 {
			return desc, fmt.Errorf("want %v", want)
		}
		p := g.prefix()
		if got, want := a.IsAllocated(p), o.allocs[p]; got != want {
			return desc, fmt.Errorf("IsAllocated(%v) = %v", p, got)
		}
		return desc, nil
	default: // restart: rebuild from the records
		return "restore", o.restore(a, g)
	}
}

// edgeRange returns the range of the first or last n addresses of the pool,
// and whether the pool has n addresses.
func (o *oracle) edgeRange(n uint64, last bool) (netipx.IPRange, bool) {
	r := netipx.RangeOfPrefix(o.pool)
	size := new(big.Int).Add(new(big.Int).Sub(addrInt(r.To()), addrInt(r.From())), big.NewInt(1))
	if size.Cmp(new(big.Int).SetUint64(n)) < 0 {
		return netipx.IPRange{}, false
	}
	if n == 0 {
		return netipx.IPRange{}, true
	}
	if last {
		from := r.To()
		for range n - 1 {
			from = from.Prev()
		}
		return netipx.IPRangeFrom(from, r.To()), true
	}
	to := r.From()
	for range n - 1 {
		to = to.Next()
	}
	return netipx.IPRangeFrom(r.From(), to), true
}

// restore rebuilds the allocator from the oracle's records, as the pool
// controller does after a restart, and checks that a conflicting record
// is refused without a change.
func (o *oracle) restore(a *Allocator, g *gen) error {
	b, err := New(o.pool, WithClock(a.now), WithRand(a.rnd))
	if err != nil {
		return err
	}
	_, resv, _, _ := o.sets()
	for _, p := range resv.Prefixes() {
		if err := b.Reserve(p); err != nil {
			return fmt.Errorf("Reserve(%v): %w", p, err)
		}
	}
	for _, h := range o.holds {
		if o.now.Before(h.until) {
			if err := b.Hold(h.p, h.until); err != nil {
				return fmt.Errorf("Hold(%v): %w", h.p, err)
			}
		}
	}
	var allocs []netip.Prefix
	for p := range o.allocs {
		allocs = append(allocs, p)
	}
	if g.r.byte()%4 == 0 {
		bad := g.prefix()
		want := o.validate(bad)
		if want == nil {
			want = o.conflict(bad)
		}
		if want != nil {
			err := b.Restore(append(slices.Clone(allocs), bad))
			if err == nil {
				return fmt.Errorf("Restore with %v: no error, want %v", bad, want)
			}
			if b.Len() != 0 || b.allocated != (count{}) {
				return fmt.Errorf("failed Restore left %d allocations", b.Len())
			}
			if err := b.checkInvariants(); err != nil {
				return fmt.Errorf("after failed Restore: %w", err)
			}
		}
	}
	if err := b.Restore(allocs); err != nil {
		return fmt.Errorf("Restore: %w", err)
	}
	o.restored = b
	return nil
}

func (o *oracle) check(a *Allocator) error {
	if err := a.checkInvariants(); err != nil {
		return err
	}
	alloc, resv, held, free := o.sets()
	u := a.Usage()
	heldOnly := netipx.IPSetBuilder{}
	heldOnly.AddSet(held)
	heldOnly.RemoveSet(resv)
	h, _ := heldOnly.IPSet()
	capacity := new(big.Int).Lsh(big.NewInt(1), uint(o.pool.Addr().BitLen()-o.pool.Bits()))
	want := Usage{
		Capacity:    capacity,
		Allocated:   setSize(alloc),
		Reserved:    setSize(resv),
		Held:        setSize(h),
		Available:   setSize(free),
		LargestFree: largestFree(free),
	}
	if u.Capacity.Cmp(want.Capacity) != 0 || u.Allocated.Cmp(want.Allocated) != 0 ||
		u.Reserved.Cmp(want.Reserved) != 0 || u.Held.Cmp(want.Held) != 0 ||
		u.Available.Cmp(want.Available) != 0 || u.LargestFree != want.LargestFree {
		return fmt.Errorf("usage %+v, want %+v", u, want)
	}
	// The allocations are exactly the oracle's: disjoint (their sizes add
	// up), inside the pool, and clear of reserved and held space.
	var got []netip.Prefix
	sum := new(big.Int)
	for p := range a.All() {
		got = append(got, p)
		sum.Add(sum, new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits())))
		if !o.allocs[p] || !o.pool.Contains(p.Addr()) || resv.OverlapsPrefix(p) || held.OverlapsPrefix(p) {
			return fmt.Errorf("allocation %v: not the oracle's, outside the pool, reserved or held", p)
		}
	}
	if len(got) != len(o.allocs) || len(got) != a.Len() || sum.Cmp(want.Allocated) != 0 {
		return fmt.Errorf("All yields %d allocations covering %v; oracle has %d covering %v; Len %d", len(got), sum, len(o.allocs), want.Allocated, a.Len())
	}
	if !slices.IsSortedFunc(got, comparePrefix) {
		return fmt.Errorf("All is not in address order: %v", got)
	}
	return nil
}
