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
	"math/big"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTest(t *testing.T, pool string, opts ...Option) *Allocator {
	t.Helper()
	a, err := New(pfx(pool), append([]Option{WithRand(rand.New(rand.NewPCG(1, 2)))}, opts...)...)
	if err != nil {
		t.Fatalf("New(%s): %v", pool, err)
	}
	t.Cleanup(func() {
		if err := a.checkInvariants(); err != nil {
			t.Errorf("invariants: %v", err)
		}
	})
	return a
}

func mustNext(t *testing.T, a *Allocator, bits int) netip.Prefix {
	t.Helper()
	p, err := a.AllocateNext(bits)
	if err != nil {
		t.Fatalf("AllocateNext(%d): %v", bits, err)
	}
	return p
}

func bigInt(s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		panic(s)
	}
	return n
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		pool    string
		wantErr error
	}{
		{"10.0.0.0/8", nil},
		{"0.0.0.0/0", nil},
		{"10.0.0.1/32", nil},
		{"::/0", nil},
		{"2001:db8::1/128", nil},
		{"10.0.0.1/8", ErrNotCanonical},
		{"2001:db8::1/32", ErrNotCanonical},
	} {
		_, err := New(pfx(tc.pool))
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("New(%s) = %v, want %v", tc.pool, err, tc.wantErr)
		}
	}
	if _, err := New(netip.Prefix{}); !errors.Is(err, ErrInvalidLength) {
		t.Errorf("New(zero prefix) = %v, want ErrInvalidLength", err)
	}
	a := newTest(t, "2001:db8::/32")
	if a.Pool() != pfx("2001:db8::/32") {
		t.Errorf("Pool() = %v", a.Pool())
	}
}

func TestAllocateNext(t *testing.T) {
	for _, tc := range []struct {
		name string
		pool string
		bits []int
		want []string // "" for exhaustion
	}{
		{"v4 hosts", "10.0.0.0/30", []int{32, 32, 32, 32, 32}, []string{"10.0.0.0/32", "10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32", ""}},
		{"v4 alignment", "10.0.0.0/24", []int{32, 31, 30, 32, 28, 26, 25}, []string{
			"10.0.0.0/32", "10.0.0.2/31", "10.0.0.4/30", "10.0.0.1/32", "10.0.0.16/28", "10.0.0.64/26", "10.0.0.128/25"}},
		{"v4 mixed across leaves", "10.0.0.0/16", []int{32, 24, 32, 23, 25, 26}, []string{
			"10.0.0.0/32", "10.0.1.0/24", "10.0.0.1/32", "10.0.2.0/23", "10.0.0.128/25", "10.0.0.64/26"}},
		{"v4 /32 pool", "10.1.2.3/32", []int{32, 32}, []string{"10.1.2.3/32", ""}},
		{"v4 whole pool", "10.0.0.0/29", []int{29, 32}, []string{"10.0.0.0/29", ""}},
		{"v4 /0 pool", "0.0.0.0/0", []int{32, 1, 8, 0}, []string{"0.0.0.0/32", "128.0.0.0/1", "1.0.0.0/8", ""}},
		{"v4 /0 whole", "0.0.0.0/0", []int{0, 32}, []string{"0.0.0.0/0", ""}},
		{"v6 /64 from /32", "2001:db8::/32", []int{64, 64, 48}, []string{"2001:db8::/64", "2001:db8:0:1::/64", "2001:db8:1::/48"}},
		{"v6 hosts", "2001:db8::/126", []int{128, 127, 128, 128}, []string{"2001:db8::/128", "2001:db8::2/127", "2001:db8::1/128", ""}},
		{"v6 /128 pool", "2001:db8::5/128", []int{128, 128}, []string{"2001:db8::5/128", ""}},
		{"v6 /0 pool", "::/0", []int{128, 1, 0}, []string{"::/128", "8000::/1", ""}},
		{"v6 /0 whole", "::/0", []int{0, 128}, []string{"::/0", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTest(t, tc.pool)
			for i, bits := range tc.bits {
				got, err := a.AllocateNext(bits)
				if tc.want[i] == "" {
					if !errors.Is(err, ErrExhausted) {
						t.Fatalf("AllocateNext(%d) = %v, %v; want exhaustion", bits, got, err)
					}
					continue
				}
				if err != nil || got != pfx(tc.want[i]) {
					t.Fatalf("AllocateNext(%d) = %v, %v; want %s", bits, got, err, tc.want[i])
				}
			}
		})
	}
}

func TestAllocateNextInvalidLength(t *testing.T) {
	a := newTest(t, "10.0.0.0/8")
	for _, bits := range []int{-1, 7, 33, 128} {
		if _, err := a.AllocateNext(bits); !errors.Is(err, ErrInvalidLength) {
			t.Errorf("AllocateNext(%d) = %v, want ErrInvalidLength", bits, err)
		}
		if _, err := a.AllocateRandom(bits); !errors.Is(err, ErrInvalidLength) {
			t.Errorf("AllocateRandom(%d) = %v, want ErrInvalidLength", bits, err)
		}
		if n := a.Free(bits); n.Sign() != 0 {
			t.Errorf("Free(%d) = %v, want 0", bits, n)
		}
	}
}

func TestExhaustedError(t *testing.T) {
	a := newTest(t, "10.0.0.0/22")
	mustNext(t, a, 24)
	mustNext(t, a, 24)
	mustNext(t, a, 24)
	mustNext(t, a, 25)
	mustNext(t, a, 26)
	_, err := a.AllocateNext(24)
	var ex *ExhaustedError
	if !errors.As(err, &ex) || !errors.Is(err, ErrExhausted) {
		t.Fatalf("AllocateNext(24) = %v, want *ExhaustedError", err)
	}
	if ex.Bits != 24 || ex.LargestFree != 26 {
		t.Errorf("got %+v, want Bits 24 LargestFree 26", *ex)
	}
	if got, want := err.Error(), "no free /24 left (largest free prefix /26)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	mustNext(t, a, 26)
	_, err = a.AllocateNext(32)
	if got, want := err.Error(), "no free /32 left: no address is free"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if _, err := a.AllocateRandom(32); !errors.Is(err, ErrExhausted) {
		t.Errorf("AllocateRandom on a full pool = %v", err)
	}
}

func TestAllocateSpecific(t *testing.T) {
	clock := &fakeClock{time.Unix(1000, 0)}
	setup := func(t *testing.T, pool string) *Allocator {
		a := newTest(t, pool, WithClock(clock.now))
		return a
	}
	for _, tc := range []struct {
		name    string
		pool    string
		prep    func(t *testing.T, a *Allocator)
		p       string
		wantErr error
	}{
		{"free", "10.0.0.0/8", nil, "10.1.0.0/16", nil},
		{"host", "10.0.0.0/8", nil, "10.255.255.255/32", nil},
		{"whole pool", "10.0.0.0/8", nil, "10.0.0.0/8", nil},
		{"larger than pool", "10.0.0.0/8", nil, "10.0.0.0/7", ErrOutsidePool},
		{"outside", "10.0.0.0/8", nil, "11.0.0.0/24", ErrOutsidePool},
		{"not canonical", "10.0.0.0/8", nil, "10.0.0.1/24", ErrNotCanonical},
		{"wrong family v6 in v4", "10.0.0.0/8", nil, "2001:db8::/64", ErrWrongFamily},
		{"wrong family v4 in v6", "::/0", nil, "10.0.0.0/8", ErrWrongFamily},
		{"4in6 is v6", "::ffff:0:0/96", nil, "::ffff:10.0.0.1/128", nil},
		{"zero prefix", "10.0.0.0/8", nil, "", ErrInvalidLength},
		{"same", "10.0.0.0/8", func(t *testing.T, a *Allocator) { mustAllocate(t, a, "10.0.0.0/24") }, "10.0.0.0/24", ErrOverlap},
		{"inside allocation", "10.0.0.0/8", func(t *testing.T, a *Allocator) { mustAllocate(t, a, "10.0.0.0/24") }, "10.0.0.7/32", ErrOverlap},
		{"covers allocation", "10.0.0.0/8", func(t *testing.T, a *Allocator) { mustAllocate(t, a, "10.0.0.7/32") }, "10.0.0.0/16", ErrOverlap},
		{"neighbour", "10.0.0.0/8", func(t *testing.T, a *Allocator) { mustAllocate(t, a, "10.0.0.7/32") }, "10.0.0.6/32", nil},
		{"reserved", "10.0.0.0/8", func(t *testing.T, a *Allocator) { mustReserve(t, a, "10.0.0.0/30") }, "10.0.0.0/24", ErrReserved},
		{"inside reserved", "10.0.0.0/8", func(t *testing.T, a *Allocator) { mustReserve(t, a, "10.0.0.0/16") }, "10.0.3.4/32", ErrReserved},
		{"held", "10.0.0.0/8", func(t *testing.T, a *Allocator) {
			mustAllocate(t, a, "10.0.0.0/24")
			if err := a.ReleaseUntil(pfx("10.0.0.0/24"), clock.t.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}, "10.0.0.128/25", ErrHeld},
		{"allocation beats reservation", "10.0.0.0/8", func(t *testing.T, a *Allocator) {
			mustReserve(t, a, "10.0.0.0/32")
			mustAllocate(t, a, "10.0.0.1/32")
		}, "10.0.0.0/30", ErrOverlap},
		{"v6 overlap", "2001:db8::/32", func(t *testing.T, a *Allocator) { mustAllocate(t, a, "2001:db8:1::/64") }, "2001:db8::/47", ErrOverlap},
		{"v6 outside", "2001:db8::/32", nil, "2001:db9::/48", ErrOutsidePool},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := setup(t, tc.pool)
			if tc.prep != nil {
				tc.prep(t, a)
			}
			var p netip.Prefix
			if tc.p != "" {
				p = pfx(tc.p)
			}
			n := a.Len()
			err := a.Allocate(p)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Allocate(%v) = %v, want %v", p, err, tc.wantErr)
			}
			if err != nil {
				var pe *PrefixError
				if !errors.As(err, &pe) || pe.Prefix != p {
					t.Errorf("error %v is not a *PrefixError for %v", err, p)
				}
				if a.Len() != n {
					t.Errorf("failed Allocate changed Len from %d to %d", n, a.Len())
				}
				return
			}
			if !a.IsAllocated(p) {
				t.Errorf("IsAllocated(%v) = false after Allocate", p)
			}
		})
	}
}

func TestPrefixErrorMessage(t *testing.T) {
	a := newTest(t, "10.0.0.0/8")
	for _, tc := range []struct {
		p, want string
	}{
		{"10.0.0.1/24", "10.0.0.1/24 is not canonical: use 10.0.0.0/24"},
		{"11.0.0.0/24", "11.0.0.0/24 outside the pool"},
	} {
		if err := a.Allocate(pfx(tc.p)); err == nil || err.Error() != tc.want {
			t.Errorf("Allocate(%s) = %v, want %q", tc.p, err, tc.want)
		}
	}
	mustAllocate(t, a, "10.0.0.0/24")
	if err := a.Allocate(pfx("10.0.0.0/25")); err == nil || err.Error() != "10.0.0.0/25 overlaps an existing allocation" {
		t.Errorf("got %v", err)
	}
}

func mustAllocate(t *testing.T, a *Allocator, p string) {
	t.Helper()
	if err := a.Allocate(pfx(p)); err != nil {
		t.Fatalf("Allocate(%s): %v", p, err)
	}
}

func mustReserve(t *testing.T, a *Allocator, p string) {
	t.Helper()
	if err := a.Reserve(pfx(p)); err != nil {
		t.Fatalf("Reserve(%s): %v", p, err)
	}
}

func TestRelease(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pool    string
		allocs  []string
		release string
		wantErr error
	}{
		{"host", "10.0.0.0/24", []string{"10.0.0.5/32"}, "10.0.0.5/32", nil},
		{"block", "10.0.0.0/8", []string{"10.4.0.0/14"}, "10.4.0.0/14", nil},
		{"leaf sized", "10.0.0.0/8", []string{"10.0.0.64/26"}, "10.0.0.64/26", nil},
		{"whole pool", "2001:db8::/64", []string{"2001:db8::/64"}, "2001:db8::/64", nil},
		{"not allocated", "10.0.0.0/24", nil, "10.0.0.5/32", ErrNotAllocated},
		{"part of an allocation", "10.0.0.0/24", []string{"10.0.0.4/30"}, "10.0.0.4/31", ErrNotAllocated},
		{"part of a large allocation", "10.0.0.0/8", []string{"10.0.0.0/16"}, "10.0.0.0/24", ErrNotAllocated},
		{"two allocations", "10.0.0.0/24", []string{"10.0.0.4/31", "10.0.0.6/31"}, "10.0.0.4/30", ErrNotAllocated},
		{"two large allocations", "10.0.0.0/8", []string{"10.0.0.0/25", "10.0.0.128/25"}, "10.0.0.0/24", ErrNotAllocated},
		{"first half", "10.0.0.0/24", []string{"10.0.0.4/31", "10.0.0.6/31"}, "10.0.0.4/31", nil},
		{"next to it", "10.0.0.0/24", []string{"10.0.0.4/31", "10.0.0.6/32"}, "10.0.0.6/31", ErrNotAllocated},
		{"last host in leaf", "10.0.0.0/24", []string{"10.0.0.62/31", "10.0.0.63/32"}, "10.0.0.63/32", ErrOverlap},
		{"outside", "10.0.0.0/24", nil, "10.0.1.0/32", ErrOutsidePool},
		{"not canonical", "10.0.0.0/24", nil, "10.0.0.1/30", ErrNotCanonical},
		{"v6 host", "2001:db8::/64", []string{"2001:db8::1/128"}, "2001:db8::1/128", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTest(t, tc.pool)
			for _, p := range tc.allocs {
				if err := a.Allocate(pfx(p)); err != nil {
					if tc.wantErr == ErrOverlap {
						return // the setup itself is the test: overlapping allocations are refused
					}
					t.Fatal(err)
				}
			}
			n := a.Len()
			p := pfx(tc.release)
			err := a.Release(p)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Release(%v) = %v, want %v", p, err, tc.wantErr)
			}
			if err != nil {
				if a.Len() != n {
					t.Errorf("failed Release changed Len")
				}
				return
			}
			if a.IsAllocated(p) || a.Len() != n-1 {
				t.Errorf("after Release(%v): IsAllocated %v, Len %d", p, a.IsAllocated(p), a.Len())
			}
			// The space is free again.
			if err := a.Allocate(p); err != nil {
				t.Errorf("Allocate(%v) after Release: %v", p, err)
			}
		})
	}
}

func TestReleaseFreesTree(t *testing.T) {
	a := newTest(t, "2001:db8::/32")
	var ps []netip.Prefix
	for range 1000 {
		ps = append(ps, mustNext(t, a, 128))
		ps = append(ps, mustNext(t, a, 64))
	}
	for _, p := range ps {
		if err := a.Release(p); err != nil {
			t.Fatal(err)
		}
	}
	if a.root != 0 || a.Len() != 0 {
		t.Errorf("empty allocator keeps root %d, Len %d", a.root, a.Len())
	}
	if u := a.Usage(); u.LargestFree != 32 || u.Allocated.Sign() != 0 {
		t.Errorf("Usage after releasing all: %+v", u)
	}
}

func TestHolds(t *testing.T) {
	clock := &fakeClock{time.Unix(1000, 0)}
	a := newTest(t, "10.0.0.0/29", WithClock(clock.now))
	p := mustNext(t, a, 32)
	if err := a.ReleaseUntil(p, clock.t.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := a.Allocate(p); !errors.Is(err, ErrHeld) {
		t.Errorf("Allocate(held %v) = %v, want ErrHeld", p, err)
	}
	if got := mustNext(t, a, 32); got != pfx("10.0.0.1/32") {
		t.Errorf("AllocateNext skipped held space to %v, want 10.0.0.1/32", got)
	}
	u := a.Usage()
	if u.Held.Int64() != 1 || u.Available.Int64() != 6 {
		t.Errorf("Usage = %+v, want 1 held and 6 available", u)
	}
	if _, err := a.AllocateNext(29); !errors.Is(err, ErrExhausted) {
		t.Errorf("AllocateNext(29) over held space = %v", err)
	}
	clock.advance(59 * time.Second)
	if err := a.Allocate(p); !errors.Is(err, ErrHeld) {
		t.Errorf("Allocate one second before expiry = %v, want ErrHeld", err)
	}
	clock.advance(time.Second)
	if err := a.Allocate(p); err != nil {
		t.Errorf("Allocate after expiry = %v", err)
	}
	if u := a.Usage(); u.Held.Sign() != 0 || u.Allocated.Int64() != 2 {
		t.Errorf("Usage after expiry = %+v", u)
	}
	// A hold in the past, or now, holds nothing.
	if err := a.ReleaseUntil(p, clock.t); err != nil {
		t.Fatal(err)
	}
	if err := a.Allocate(p); err != nil {
		t.Errorf("Allocate after a zero hold = %v", err)
	}
}

func TestOverlappingHolds(t *testing.T) {
	clock := &fakeClock{time.Unix(1000, 0)}
	a := newTest(t, "10.0.0.0/24", WithClock(clock.now))
	mustReserve(t, a, "10.0.0.0/30")
	// A long hold on a /28 and a short one on a /26 that contains it, and
	// a hold over reserved space.
	for _, h := range []struct {
		p string
		d time.Duration
	}{{"10.0.0.16/28", 2 * time.Hour}, {"10.0.0.0/26", time.Hour}, {"10.0.0.0/29", 3 * time.Hour}} {
		if err := a.Hold(pfx(h.p), clock.t.Add(h.d)); err != nil {
			t.Fatal(err)
		}
	}
	check := func(held, reserved int64) {
		t.Helper()
		u := a.Usage()
		if u.Held.Int64() != held || u.Reserved.Int64() != reserved || u.Available.Int64() != 256-held-reserved-u.Allocated.Int64() {
			t.Errorf("Usage = %+v, want held %d reserved %d", u, held, reserved)
		}
	}
	check(60, 4)
	clock.advance(time.Hour)
	check(16+4, 4) // the /28 and 10.0.0.4/30
	if err := a.Allocate(pfx("10.0.0.16/32")); !errors.Is(err, ErrHeld) {
		t.Errorf("Allocate inside the remaining hold = %v", err)
	}
	if err := a.Allocate(pfx("10.0.0.32/32")); err != nil {
		t.Errorf("Allocate where the short hold expired = %v", err)
	}
	clock.advance(time.Hour)
	check(4, 4)
	clock.advance(time.Hour)
	check(0, 4)
	if err := a.Hold(pfx("10.0.0.32/30"), clock.t.Add(time.Hour)); !errors.Is(err, ErrOverlap) {
		t.Errorf("Hold over an allocation = %v, want ErrOverlap", err)
	}
}

func TestReserve(t *testing.T) {
	for _, tc := range []struct {
		name          string
		pool          string
		do            func(a *Allocator) error
		wantErr       error
		wantReserved  string
		wantFirstHost string
	}{
		{"prefix", "10.0.0.0/24", func(a *Allocator) error { return a.Reserve(pfx("10.0.0.0/25")) }, nil, "128", "10.0.0.128/32"},
		{"overlapping prefixes", "10.0.0.0/24", func(a *Allocator) error {
			return errors.Join(a.Reserve(pfx("10.0.0.0/26")), a.Reserve(pfx("10.0.0.32/27")), a.Reserve(pfx("10.0.0.0/25")))
		}, nil, "128", "10.0.0.128/32"},
		{"first and last", "10.0.0.0/24", func(a *Allocator) error { return errors.Join(a.ReserveFirst(1), a.ReserveLast(1)) }, nil, "2", "10.0.0.1/32"},
		{"first 3", "10.0.0.0/24", func(a *Allocator) error { return a.ReserveFirst(3) }, nil, "3", "10.0.0.3/32"},
		{"first 0", "10.0.0.0/24", func(a *Allocator) error { return a.ReserveFirst(0) }, nil, "0", "10.0.0.0/32"},
		{"first all", "10.0.0.0/24", func(a *Allocator) error { return a.ReserveFirst(256) }, nil, "256", ""},
		{"first too many", "10.0.0.0/24", func(a *Allocator) error { return a.ReserveFirst(257) }, ErrOutsidePool, "0", "10.0.0.0/32"},
		{"last too many", "10.0.0.0/30", func(a *Allocator) error { return a.ReserveLast(5) }, ErrOutsidePool, "0", "10.0.0.0/32"},
		{"last 200", "10.0.0.0/24", func(a *Allocator) error { return a.ReserveLast(200) }, nil, "200", "10.0.0.0/32"},
		{"last of v6 /0", "::/0", func(a *Allocator) error { return a.ReserveLast(1 << 40) }, nil, "1099511627776", "::/128"},
		{"first of v6 /64", "2001:db8::/64", func(a *Allocator) error { return a.ReserveFirst(^uint64(0)) }, nil, "18446744073709551615", "2001:db8::ffff:ffff:ffff:ffff/128"},
		{"range across leaves", "10.0.0.0/24", func(a *Allocator) error { return a.ReserveRange(addr("10.0.0.0"), addr("10.0.0.130")) }, nil, "131", "10.0.0.131/32"},
		{"unaligned range", "10.0.0.0/16", func(a *Allocator) error { return a.ReserveRange(addr("10.0.0.0"), addr("10.0.3.200")) }, nil, "969", "10.0.3.201/32"},
		{"single address range", "10.0.0.0/24", func(a *Allocator) error { return a.ReserveRange(addr("10.0.0.0"), addr("10.0.0.0")) }, nil, "1", "10.0.0.1/32"},
		{"reversed range", "10.0.0.0/24", func(a *Allocator) error { return a.ReserveRange(addr("10.0.0.9"), addr("10.0.0.1")) }, errAny, "0", "10.0.0.0/32"},
		{"range outside", "10.0.0.0/24", func(a *Allocator) error { return a.ReserveRange(addr("10.0.0.9"), addr("10.0.1.1")) }, ErrOutsidePool, "0", "10.0.0.0/32"},
		{"range wrong family", "10.0.0.0/24", func(a *Allocator) error { return a.ReserveRange(addr("::1"), addr("::2")) }, ErrWrongFamily, "0", "10.0.0.0/32"},
		{"over an allocation", "10.0.0.0/24", func(a *Allocator) error {
			if err := a.Allocate(pfx("10.0.0.100/32")); err != nil {
				return err
			}
			return a.ReserveRange(addr("10.0.0.0"), addr("10.0.0.130"))
		}, ErrOverlap, "0", "10.0.0.0/32"},
		{"prefix over an allocation", "10.0.0.0/24", func(a *Allocator) error {
			return errors.Join(a.Allocate(pfx("10.0.0.100/32")), a.Reserve(pfx("10.0.0.0/24")))
		}, ErrOverlap, "0", "10.0.0.0/32"},
		{"outside", "10.0.0.0/24", func(a *Allocator) error { return a.Reserve(pfx("10.0.0.0/23")) }, ErrOutsidePool, "0", "10.0.0.0/32"},
		{"v6 range", "2001:db8::/32", func(a *Allocator) error {
			return a.ReserveRange(addr("2001:db8::"), addr("2001:db8:0:1::ff"))
		}, nil, "18446744073709551872", "2001:db8:0:1::100/128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTest(t, tc.pool)
			err := tc.do(a)
			if tc.wantErr == errAny {
				if err == nil {
					t.Fatal("no error")
				}
			} else if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			u := a.Usage()
			if u.Reserved.Cmp(bigInt(tc.wantReserved)) != 0 {
				t.Errorf("Reserved = %v, want %s", u.Reserved, tc.wantReserved)
			}
			sum := new(big.Int).Add(u.Allocated, u.Reserved)
			if sum.Add(sum, u.Available).Cmp(u.Capacity) != 0 {
				t.Errorf("Usage does not add up: %+v", u)
			}
			if tc.wantErr == ErrOverlap {
				return // an allocation sits there
			}
			p, err := a.AllocateNext(a.Pool().Addr().BitLen())
			if tc.wantFirstHost == "" {
				if !errors.Is(err, ErrExhausted) {
					t.Errorf("AllocateNext = %v, %v; want exhaustion", p, err)
				}
			} else if p != pfx(tc.wantFirstHost) {
				t.Errorf("first host %v, %v; want %s", p, err, tc.wantFirstHost)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestUsage(t *testing.T) {
	clock := &fakeClock{time.Unix(1000, 0)}
	for _, tc := range []struct {
		name string
		pool string
		prep func(t *testing.T, a *Allocator)
		want [5]string // capacity, allocated, reserved, held, available
		lf   int
	}{
		{"empty v4 /0", "0.0.0.0/0", nil, [5]string{"4294967296", "0", "0", "0", "4294967296"}, 0},
		{"empty v6 /0", "::/0", nil, [5]string{"340282366920938463463374607431768211456", "0", "0", "0", "340282366920938463463374607431768211456"}, 0},
		{"full v6 /0", "::/0", func(t *testing.T, a *Allocator) { mustAllocate(t, a, "::/0") },
			[5]string{"340282366920938463463374607431768211456", "340282366920938463463374607431768211456", "0", "0", "0"}, -1},
		{"reserved v6 /0", "::/0", func(t *testing.T, a *Allocator) { mustReserve(t, a, "::/0") },
			[5]string{"340282366920938463463374607431768211456", "0", "340282366920938463463374607431768211456", "0", "0"}, -1},
		{"v6 /32", "2001:db8::/32", func(t *testing.T, a *Allocator) {
			mustNext(t, a, 64)
			mustNext(t, a, 128)
			mustReserve(t, a, "2001:db8:8000::/33")
		}, [5]string{"79228162514264337593543950336", "18446744073709551617", "39614081257132168796771975168", "0", "39614081238685424723062423551"}, 34},
		{"held and reserved count once", "10.0.0.0/24", func(t *testing.T, a *Allocator) {
			mustAllocate(t, a, "10.0.0.0/28")
			if err := a.ReleaseUntil(pfx("10.0.0.0/28"), clock.t.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			mustReserve(t, a, "10.0.0.8/29")
			mustReserve(t, a, "10.0.0.8/30")
			mustAllocate(t, a, "10.0.0.128/25")
		}, [5]string{"256", "128", "8", "8", "112"}, 26},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTest(t, tc.pool, WithClock(clock.now))
			if tc.prep != nil {
				tc.prep(t, a)
			}
			u := a.Usage()
			for i, got := range []*big.Int{u.Capacity, u.Allocated, u.Reserved, u.Held, u.Available} {
				if got.Cmp(bigInt(tc.want[i])) != 0 {
					t.Errorf("field %d = %v, want %s (%+v)", i, got, tc.want[i], u)
				}
			}
			if u.LargestFree != tc.lf {
				t.Errorf("LargestFree = %d, want %d", u.LargestFree, tc.lf)
			}
		})
	}
}

func TestFree(t *testing.T) {
	a := newTest(t, "10.0.0.0/16")
	mustReserve(t, a, "10.0.0.0/24")
	mustAllocate(t, a, "10.0.1.0/25")
	mustAllocate(t, a, "10.0.1.200/32")
	for _, tc := range []struct {
		bits int
		want int64
	}{
		{16, 0}, {17, 1}, {23, 127}, {24, 254}, {25, 508}, {26, 1017}, {32, 65536 - 256 - 128 - 1},
	} {
		if got := a.Free(tc.bits); got.Int64() != tc.want {
			t.Errorf("Free(%d) = %v, want %d", tc.bits, got, tc.want)
		}
	}
	b := newTest(t, "::/0")
	if got, want := b.Free(64), new(big.Int).Lsh(big.NewInt(1), 64); got.Cmp(want) != 0 {
		t.Errorf("Free(64) of ::/0 = %v, want 2^64", got)
	}
	if got, want := b.Free(128), new(big.Int).Lsh(big.NewInt(1), 128); got.Cmp(want) != 0 {
		t.Errorf("Free(128) of ::/0 = %v, want 2^128", got)
	}
}

func TestAllAndIsAllocated(t *testing.T) {
	a := newTest(t, "2001:db8::/48")
	want := []string{"2001:db8::/128", "2001:db8::2/127", "2001:db8::40/122", "2001:db8::100/120", "2001:db8:0:1::/64", "2001:db8:0:8000::/49"}
	for _, i := range []int{3, 0, 5, 1, 4, 2} {
		mustAllocate(t, a, want[i])
	}
	var got []string
	for p := range a.All() {
		got = append(got, p.String())
		if !a.IsAllocated(p) {
			t.Errorf("IsAllocated(%v) = false", p)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("All = %v, want %v", got, want)
	}
	for _, p := range []string{"2001:db8::1/128", "2001:db8::/127", "2001:db8::2/128", "2001:db8:0:1::/65", "2001:db8::/48", "10.0.0.0/8", "2001:db8::1/127"} {
		if a.IsAllocated(pfx(p)) {
			t.Errorf("IsAllocated(%s) = true", p)
		}
	}
	// Stopping early.
	n := 0
	for range a.All() {
		n++
		if n == 2 {
			break
		}
	}
	if n != 2 {
		t.Errorf("break after 2 yielded %d", n)
	}
}

func TestRestore(t *testing.T) {
	clock := &fakeClock{time.Unix(1000, 0)}
	ref := newTest(t, "10.0.0.0/12", WithClock(clock.now))
	mustReserve(t, ref, "10.0.0.0/24")
	if err := ref.Hold(pfx("10.15.0.0/16"), clock.t.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var allocs []netip.Prefix
	r := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		p, err := ref.AllocateRandom(24 + r.IntN(9))
		if err != nil {
			t.Fatal(err)
		}
		allocs = append(allocs, p)
	}
	r.Shuffle(len(allocs), func(i, j int) { allocs[i], allocs[j] = allocs[j], allocs[i] })

	a := newTest(t, "10.0.0.0/12", WithClock(clock.now))
	mustReserve(t, a, "10.0.0.0/24")
	if err := a.Hold(pfx("10.15.0.0/16"), clock.t.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := a.Restore(allocs); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(slices.Collect(a.All()), slices.Collect(ref.All())) || a.Len() != ref.Len() {
		t.Error("restored allocations differ")
	}
	if ua, ur := a.Usage(), ref.Usage(); ua.Available.Cmp(ur.Available) != 0 || ua.LargestFree != ur.LargestFree {
		t.Errorf("Usage %+v, want %+v", ua, ur)
	}
	if err := a.Restore(nil); err == nil {
		t.Error("Restore into an allocator with allocations: no error")
	}
	for _, tc := range []struct {
		name    string
		allocs  []string
		wantErr error
	}{
		{"empty", nil, nil},
		{"duplicate", []string{"10.1.0.0/24", "10.1.0.0/24"}, ErrOverlap},
		{"nested", []string{"10.1.0.0/16", "10.2.0.0/24", "10.1.3.4/32"}, ErrOverlap},
		{"reserved", []string{"10.0.0.5/32"}, ErrReserved},
		{"covers reserved", []string{"10.0.0.0/16"}, ErrReserved},
		{"held", []string{"10.15.3.0/24"}, ErrHeld},
		{"covers held", []string{"10.8.0.0/13"}, ErrHeld},
		{"outside", []string{"10.16.0.0/24"}, ErrOutsidePool},
		{"not canonical", []string{"10.1.0.1/24"}, ErrNotCanonical},
		{"wrong family", []string{"::/0"}, ErrWrongFamily},
		{"whole leaf", []string{"10.1.0.64/26", "10.1.0.0/27", "10.1.0.32/32"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTest(t, "10.0.0.0/12", WithClock(clock.now))
			mustReserve(t, b, "10.0.0.0/24")
			if err := b.Hold(pfx("10.15.0.0/16"), clock.t.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			before := b.Usage()
			var ps []netip.Prefix
			for _, s := range tc.allocs {
				ps = append(ps, pfx(s))
			}
			err := b.Restore(ps)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Restore = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if after := b.Usage(); b.Len() != 0 || after.Available.Cmp(before.Available) != 0 {
					t.Errorf("failed Restore changed the allocator: Len %d, %+v", b.Len(), after)
				}
				return
			}
			if b.Len() != len(ps) {
				t.Errorf("Len = %d, want %d", b.Len(), len(ps))
			}
		})
	}
}

func TestAllocateRandom(t *testing.T) {
	// Every free candidate comes up about equally often, both when drawing
	// candidates (a mostly free pool) and when counting them (a nearly full
	// one).
	for _, tc := range []struct {
		name     string
		pool     string
		reserved string
		bits     int
	}{
		{"mostly free", "10.0.0.0/26", "10.0.0.0/30", 32},
		{"nearly full", "10.0.0.0/16", "10.0.0.0/17", 25},
		{"v6 nearly full", "2001:db8::/48", "2001:db8::/49", 57},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTest(t, tc.pool)
			mustReserve(t, a, tc.reserved)
			if tc.name != "mostly free" {
				// Fill all but 8 candidates of the free half.
				for a.Free(tc.bits).Int64() > 8 {
					mustNext(t, a, tc.bits)
				}
			}
			n := int(a.Free(tc.bits).Int64())
			seen := map[netip.Prefix]int{}
			const rounds = 200
			for range rounds * n {
				p, err := a.AllocateRandom(tc.bits)
				if err != nil {
					t.Fatal(err)
				}
				seen[p]++
				if err := a.Release(p); err != nil {
					t.Fatal(err)
				}
			}
			if len(seen) != n {
				t.Fatalf("saw %d distinct prefixes, want %d", len(seen), n)
			}
			for p, c := range seen {
				if c < rounds/2 || c > rounds*2 {
					t.Errorf("%v came %d times, expected about %d", p, c, rounds)
				}
			}
		})
	}
	// Seeded sources give the same sequence.
	seq := func() []netip.Prefix {
		a, _ := New(pfx("2001:db8::/32"), WithRand(rand.New(rand.NewPCG(9, 9))))
		var out []netip.Prefix
		for range 10 {
			p, _ := a.AllocateRandom(64)
			out = append(out, p)
		}
		return out
	}
	if !slices.Equal(seq(), seq()) {
		t.Error("AllocateRandom is not reproducible with a seeded source")
	}
	// Fill a pool at random to the last address.
	a := newTest(t, "10.0.0.0/22")
	for range 1024 {
		if _, err := a.AllocateRandom(32); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.AllocateRandom(32); !errors.Is(err, ErrExhausted) {
		t.Errorf("AllocateRandom on a full pool = %v", err)
	}
}

func TestSparseMemory(t *testing.T) {
	// An empty IPv6 /32 costs a handful of bytes, and a few allocations a
	// few nodes each.
	a := newTest(t, "2001:db8::/32")
	if len(a.nodes) != 1 || len(a.leaves) != 1 {
		t.Errorf("empty allocator has %d nodes, %d leaves", len(a.nodes), len(a.leaves))
	}
	mustNext(t, a, 64)
	if len(a.nodes) != 2 || len(a.wide) != 1 { // the nil node and the allocation, in the node
		t.Errorf("one /64 in a /32 takes %d nodes", len(a.nodes)-1)
	}
	// Scattered allocations cost a node each (and a 16-byte record for
	// those more than 2^64 times smaller than their block), and about one
	// branching node, not a chain down to each of them.
	r := rand.New(rand.NewPCG(5, 6))
	for range 1000 {
		if _, err := a.AllocateRandom(64 + r.IntN(65)); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.nodeCount; n > 3*1001 || len(a.nodes)-1 > 2*n {
		t.Errorf("1001 scattered allocations take %d nodes in an array of %d", n, len(a.nodes)-1)
	}
	if len(a.wide) == 1 {
		t.Error("no allocation took a wide record: the test no longer covers them")
	}
	if err := a.checkInvariants(); err != nil {
		t.Fatal(err)
	}
}

func TestTopOfTreeByPlace(t *testing.T) {
	// Random hosts make the top of the tree dense. Its nodes must sit at
	// their places (checkInvariants), and the walks that compute their way
	// through the top must go as far as the tree lets them: down to the
	// last internal node on the path whose child is a node in the top.
	a := newTest(t, "10.0.0.0/8")
	ps := make([]netip.Prefix, 20000)
	for i := range ps {
		var err error
		if ps[i], err = a.AllocateRandom(32); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.checkInvariants(); err != nil {
		t.Fatal(err)
	}
	if a.topDepth < 10 || len(a.nodes)-1 > 3*a.nodeCount {
		t.Fatalf("%d nodes: top of depth %d, in an array of %d", a.nodeCount, a.topDepth, len(a.nodes)-1)
	}
	for _, p := range ps {
		off, k, err := a.offsetOf(p)
		if err != nil {
			t.Fatal(err)
		}
		want, n, s := 0, a.root, a.d
		for s > k && uint(want)+1 < a.topDepth && a.kindOf(n) == kInternal {
			if n = a.nodes[n].child[off.bit(s-1)]; n <= 0 {
				break
			}
			want, s = want+1, s-1
		}
		if _, _, depth := a.topDown(nil, off, k); depth != want {
			t.Fatalf("%v: the walk through the top stops at depth %d, the tree at %d", p, depth, want)
		}
	}
	for _, k := range []uint{0, 4, 8} {
		want, n, s := 0, a.root, a.d
		for s > k && uint(want)+1 < a.topDepth && a.kindOf(n) == kInternal {
			b := 0
			if a.nodes[n].cfree[0] <= uint8(k) {
				b = 1
			}
			if n = a.nodes[n].child[b]; n <= 0 {
				break
			}
			want, s = want+1, s-1
		}
		if _, _, depth, _ := a.topFirst(&[maxDepth]int32{}, uint8(k+1), k); depth != want {
			t.Fatalf("first fit of 2^%d: the walk through the top stops at depth %d, the tree at %d", k, depth, want)
		}
	}
	// Released, the tree shrinks, and its array with it.
	for _, p := range ps[100:] {
		if err := a.Release(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.checkInvariants(); err != nil {
		t.Fatal(err)
	}
	if len(a.nodes)-1 > 8*a.nodeCount+16 {
		t.Errorf("%d nodes left in an array of %d", a.nodeCount, len(a.nodes)-1)
	}
}

func TestTopAtItsBound(t *testing.T) {
	// A tree that outgrows the deepest top keeps the top it has: laying it
	// out again would not change it and would cost O(n) every operation.
	defer func(d uint) { maxTopDepth = d }(maxTopDepth)
	maxTopDepth = 3
	a := newTest(t, "10.0.0.0/8")
	for range 2000 {
		if _, err := a.AllocateRandom(32); err != nil {
			t.Fatal(err)
		}
	}
	if a.topDepth != 3 || !a.settled() {
		t.Errorf("top of depth %d (bound 3), settled %v with %d nodes", a.topDepth, a.settled(), a.nodeCount)
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		pool string
		bits int
	}{{"10.0.0.0/8", 32}, {"10.0.0.0/8", 24}, {"2001:db8::/32", 64}, {"2001:db8::/64", 128}} {
		a := newTest(t, tc.pool)
		for range 1000 {
			mustNext(t, a, tc.bits)
		}
		p := mustNext(t, a, tc.bits)
		if n := testing.AllocsPerRun(100, func() {
			if err := a.Release(p); err != nil {
				t.Fatal(err)
			}
			if _, err := a.AllocateNext(tc.bits); err != nil {
				t.Fatal(err)
			}
			if err := a.Release(p); err != nil {
				t.Fatal(err)
			}
			if err := a.Allocate(p); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s /%d: %v allocations per release+allocate", tc.pool, tc.bits, n)
		}
	}
}

func TestNormalization(t *testing.T) {
	// Reserving the rest of a leaf makes it a uniform block, merged with
	// its reserved sibling.
	a := newTest(t, "10.0.0.0/24")
	if err := a.ReserveRange(addr("10.0.0.1"), addr("10.0.0.127")); err != nil {
		t.Fatal(err)
	}
	mustReserve(t, a, "10.0.0.0/32")
	if got := a.kindOf(a.root); got != kInternal || a.kindOf(a.nodes[a.root].child[0]) != fResv {
		t.Errorf("reserved lower half is not one uniform node")
	}
	if u := a.Usage(); u.Reserved.Int64() != 128 || u.LargestFree != 25 {
		t.Errorf("Usage = %+v", u)
	}

	// A leaf of /24 units splits when a host lands in it, also during
	// Restore.
	b := newTest(t, "10.0.0.0/16")
	mustAllocate(t, b, "10.0.0.0/24")
	mustReserve(t, b, "10.0.1.0/24")
	if err := b.Release(pfx("10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if err := b.Restore([]netip.Prefix{pfx("10.0.0.5/32"), pfx("10.0.2.0/24"), pfx("10.0.4.0/22")}); err != nil {
		t.Fatal(err)
	}
	if got := slices.Collect(b.All()); !slices.Equal(got, []netip.Prefix{pfx("10.0.0.5/32"), pfx("10.0.2.0/24"), pfx("10.0.4.0/22")}) {
		t.Errorf("All = %v", got)
	}
	if err := b.Allocate(pfx("10.0.1.7/32")); !errors.Is(err, ErrReserved) {
		t.Errorf("Allocate in reserved unit = %v", err)
	}
	p := mustNext(t, b, 24)
	if p != pfx("10.0.3.0/24") {
		t.Errorf("AllocateNext(24) = %v", p)
	}
}

func TestAllocateRandomBesideLoneAllocation(t *testing.T) {
	// A lone allocation in a nearly full pool: counting the free blocks
	// must skip those that overlap it.
	for _, bits := range []int{32, 30, 27} {
		a := newTest(t, "10.0.0.0/16")
		mustAllocate(t, a, "10.0.0.4/30")
		for s := 15; s >= 7; s-- { // reserve the upper half, then its lower half's upper half...
			mustReserve(t, a, a.prefix(u128{0, 1 << s}, uint(s)).String())
		}
		if r := a.nodes[a.root].child[0]; a.kindOf(r) != kInternal {
			t.Fatalf("unexpected tree")
		}
		n := int(a.Free(bits).Int64())
		seen := map[netip.Prefix]int{}
		for range 100 * n {
			p, err := a.AllocateRandom(bits)
			if err != nil {
				t.Fatal(err)
			}
			if a.regionFlags(addrBits(p.Addr()).and(lowMask(a.d)), a.w-uint(bits))&^fAlloc != 0 {
				t.Fatalf("allocated %v over reserved space", p)
			}
			seen[p]++
			if err := a.Release(p); err != nil {
				t.Fatal(err)
			}
		}
		if len(seen) != n {
			t.Errorf("/%d: saw %d distinct prefixes, want %d", bits, len(seen), n)
		}
	}
}

func TestAllocateRandomInsideUnitLeaf(t *testing.T) {
	// Hosts drawn from the last free /24s of a pool of /24s: counting
	// splits the leaf's /24 units into hosts.
	a := newTest(t, "10.0.0.0/16")
	for range 254 {
		mustNext(t, a, 24)
	}
	n := a.Free(32).Int64()
	if n != 512 {
		t.Fatalf("Free(32) = %d", n)
	}
	seen := map[netip.Prefix]bool{}
	for range n {
		p, err := a.AllocateRandom(32)
		if err != nil {
			t.Fatal(err)
		}
		if p.Addr().As4()[2] < 254 || seen[p] {
			t.Fatalf("AllocateRandom(32) = %v", p)
		}
		seen[p] = true
	}
	if _, err := a.AllocateRandom(32); !errors.Is(err, ErrExhausted) {
		t.Errorf("AllocateRandom on a full pool = %v", err)
	}
}
