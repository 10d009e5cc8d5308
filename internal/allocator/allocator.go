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

// Package allocator hands out prefixes of one IP pool: an IPv4 or IPv6
// prefix of any size, in which allocations of mixed prefix lengths live side
// by side. It is pure Go on net/netip, does no I/O and knows nothing of
// Kubernetes.
//
// An Allocator keeps the pool as a sparse binary tree over the address bits.
// Each node is an aligned block; an absent node is a wholly free block, so
// memory grows with the live allocations and reservations, not with the pool:
// an empty IPv6 /32 costs a few hundred bytes. Leaves are 64-bit bitmaps of
// 64 equal units: single addresses at the bottom of the tree, or whole /24s,
// /64s and so on higher up, so that a pool of one allocation size packs 64
// allocations into a 16-byte leaf whatever its depth (32 bytes if some of
// its units are reserved or held). A lone allocation in a
// sparse region is one node that records its own address, placed where its
// path parts from the others'. Every internal node records the largest free
// aligned block under each child, so first fit walks down once, in time
// proportional to the prefix length, and an update walks back up only while
// a summary changes. Nodes live in a slice and point at each other by int32
// index, which keeps them small (12 bytes) and free of pointers for the
// garbage collector to scan. A leaf, and a block that is uniformly
// allocated, reserved or held, is not a node: its parent's int32 names it
// (a leaf's index, or the block's flags), so that it costs no node and no
// load on the way down. The nodes of the top levels (in up to twice as
// many places as the tree has nodes, and one per live allocation) sit
// where a binary heap would put them, so that a walk through them computes
// each next node's index instead of loading it and the processor fetches
// several levels at once: in a tree larger than the cache, the misses of
// those levels overlap instead of queueing.
//
// Addresses are in one of four states: free, allocated, reserved (never
// handed out, for gateways or broadcast addresses) or held (released, but
// kept out of circulation until a time, so that an address is not reused
// while stale records still name it). Reserved and held may overlap;
// allocated overlaps neither.
//
// An Allocator is not safe for concurrent use: its owner (the pool
// controller) guards it with a mutex. Holds expire lazily: each call that
// changes or allocates, and Usage and Free, first frees the holds whose time
// has come, oldest first, without scanning the pool.
package allocator

import (
	"encoding/binary"
	"fmt"
	"iter"
	"math/big"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"time"
)

// Allocator hands out prefixes of one pool. The zero value is not usable:
// call New.
type Allocator struct {
	pool  netip.Prefix
	base  u128   // the pool's first address
	w     uint   // address bits: 32 or 128
	d     uint   // w - pool length: the pool holds 2^d addresses
	leafS uint   // log2 of the addresses in a leaf: min(d, 6)
	full  uint64 // the valid bits of a leaf bitmap

	root       int32
	nodes      []node      // nodes[0] is nil
	leaves     []leafAlloc // leaves[0] is unused
	marks      []leafMarks // by leaf index, as far as the last marked leaf
	wide       []u128      // offsets of far kOne allocations; wide[0] is unused
	freeNodes  int32       // free list through child[0]
	freeLeaves int32       // free list through alloc
	freeWides  int32       // free list through lo

	// The layout of nodes (see settled and relayout): nodes[1:top] is the
	// top of the tree by place, top == 1<<topDepth, and the layout suits
	// the tree while shrinkAt <= min(2*nodeCount, live) < growAt.
	nodeCount        int // nodes in use
	top              int32
	topDepth         uint
	growAt, shrinkAt int

	live      int
	allocated count
	reserved  count
	held      count // held and not reserved

	holds       holdHeap
	holdOverlap bool // some hold overlapped another when it was made

	now func() time.Time
	rnd *rand.Rand
}

type options struct {
	now func() time.Time
	rnd *rand.Rand
}

// Option configures an Allocator.
type Option func(*options)

// WithClock sets the clock that decides when holds expire (default time.Now).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithRand sets the random source of AllocateRandom (default: randomly seeded).
func WithRand(r *rand.Rand) Option { return func(o *options) { o.rnd = r } }

// New returns an empty allocator for pool, which must be canonical
// (pool == pool.Masked()).
func New(pool netip.Prefix, opts ...Option) (*Allocator, error) {
	if !pool.IsValid() {
		return nil, prefixErr(pool, ErrInvalidLength)
	}
	if pool != pool.Masked() {
		return nil, prefixErr(pool, ErrNotCanonical)
	}
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.rnd == nil {
		o.rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	a := &Allocator{
		pool:   pool,
		w:      uint(pool.Addr().BitLen()),
		nodes:  make([]node, 1, 16),
		top:    1,
		growAt: 2,
		leaves: make([]leafAlloc, 1, 4),
		wide:   make([]u128, 1),
		now:    o.now,
		rnd:    o.rnd,
	}
	a.base = addrBits(pool.Addr())
	a.d = a.w - uint(pool.Bits())
	a.leafS = min(a.d, 6)
	a.full = runMask(a.leafS)
	return a, nil
}

// Pool returns the pool prefix.
func (a *Allocator) Pool() netip.Prefix { return a.pool }

// Len returns the number of live allocations.
func (a *Allocator) Len() int { return a.live }

func addrBits(ip netip.Addr) u128 {
	if ip.Is4() {
		b := ip.As4()
		return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := ip.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// prefix returns the prefix of size 2^k at offset off.
func (a *Allocator) prefix(off u128, k uint) netip.Prefix {
	v := a.base.or(off)
	var ip netip.Addr
	if a.w == 32 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v.lo))
		ip = netip.AddrFrom4(b)
	} else {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], v.hi)
		binary.BigEndian.PutUint64(b[8:], v.lo)
		ip = netip.AddrFrom16(b)
	}
	return netip.PrefixFrom(ip, int(a.w-k))
}

// offsetOf checks that p is a canonical prefix inside the pool and returns
// its offset and log2 of its size.
func (a *Allocator) offsetOf(p netip.Prefix) (u128, uint, error) {
	if !p.IsValid() {
		return u128{}, 0, prefixErr(p, ErrInvalidLength)
	}
	if uint(p.Addr().BitLen()) != a.w {
		return u128{}, 0, prefixErr(p, ErrWrongFamily)
	}
	if p != p.Masked() {
		return u128{}, 0, prefixErr(p, ErrNotCanonical)
	}
	if p.Bits() < a.pool.Bits() || !a.pool.Contains(p.Addr()) {
		return u128{}, 0, prefixErr(p, ErrOutsidePool)
	}
	return addrBits(p.Addr()).and(lowMask(a.d)), a.w - uint(p.Bits()), nil
}

// sizeOf checks a requested prefix length and returns log2 of its size.
func (a *Allocator) sizeOf(bits int) (uint, error) {
	if bits < a.pool.Bits() || bits > int(a.w) {
		return 0, fmt.Errorf("%w: /%d in pool %s, which takes /%d to /%d", ErrInvalidLength, bits, a.pool, a.pool.Bits(), a.w)
	}
	return a.w - uint(bits), nil
}

func (a *Allocator) exhausted(bits int) error {
	return &ExhaustedError{Bits: bits, LargestFree: a.largestFree()}
}

// largestFree returns the prefix length of the largest free aligned block,
// -1 if none.
func (a *Allocator) largestFree() int {
	f := a.freeOf(a.root, a.d)
	if f == 0 {
		return -1
	}
	return int(a.w) - int(f-1)
}

// AllocateNext allocates the lowest free prefix of length bits.
func (a *Allocator) AllocateNext(bits int) (netip.Prefix, error) {
	k, err := a.sizeOf(bits)
	if err != nil {
		return netip.Prefix{}, err
	}
	a.expire()
	off, ok := a.insertFirst(k)
	if !ok {
		return netip.Prefix{}, a.exhausted(bits)
	}
	return a.prefix(off, k), nil
}

// randomTries is how many uniformly drawn candidates AllocateRandom tries
// before it counts the free candidates and picks one of them.
const randomTries = 32

// AllocateRandom allocates a prefix of length bits drawn uniformly from the
// free aligned candidates.
func (a *Allocator) AllocateRandom(bits int) (netip.Prefix, error) {
	k, err := a.sizeOf(bits)
	if err != nil {
		return netip.Prefix{}, err
	}
	a.expire()
	if a.freeOf(a.root, a.d) < uint8(k+1) {
		return netip.Prefix{}, a.exhausted(bits)
	}
	// Rejection sampling is uniform and cheap while a fair share of the
	// candidates is free; a nearly full pool falls back to counting.
	m := lowMask(a.d - k)
	for range randomTries {
		off := u128{a.rnd.Uint64() & m.hi, a.rnd.Uint64() & m.lo}.lsh(k)
		if a.regionFlags(off, k) == 0 {
			a.insert(off, k)
			return a.prefix(off, k), nil
		}
	}
	off := a.selectFree(k, a.randBelow(a.countFree(a.root, a.d, k)))
	a.insert(off, k)
	return a.prefix(off, k), nil
}

// randBelow returns a uniform random number in [0, n), n > 0.
func (a *Allocator) randBelow(n count) count {
	if n.top != 0 {
		return count{hi: a.rnd.Uint64(), lo: a.rnd.Uint64()}
	}
	if n.hi == 0 {
		return count{lo: a.rnd.Uint64N(n.lo)}
	}
	m := lowMask(128 - uint(bits.LeadingZeros64(n.hi)))
	for {
		r := count{hi: a.rnd.Uint64() & m.hi, lo: a.rnd.Uint64()}
		if r.less(n) {
			return r
		}
	}
}

// Allocate allocates exactly p.
func (a *Allocator) Allocate(p netip.Prefix) error {
	off, k, err := a.offsetOf(p)
	if err != nil {
		return err
	}
	a.expire()
	if err := flagErr(a.regionFlags(off, k)); err != nil {
		return prefixErr(p, err)
	}
	a.insert(off, k)
	return nil
}

// Release frees the allocation p at once. p must be exactly an allocation.
func (a *Allocator) Release(p netip.Prefix) error {
	off, k, err := a.offsetOf(p)
	if err != nil {
		return err
	}
	a.expire()
	if !a.remove(off, k) {
		return prefixErr(p, ErrNotAllocated)
	}
	return nil
}

// ReleaseUntil frees the allocation p but holds its addresses until the
// given time, so that they are not handed out again before then.
func (a *Allocator) ReleaseUntil(p netip.Prefix, until time.Time) error {
	off, k, err := a.offsetOf(p)
	if err != nil {
		return err
	}
	a.expire()
	if !a.remove(off, k) {
		return prefixErr(p, ErrNotAllocated)
	}
	a.hold(off, k, until)
	return nil
}

// Hold keeps the unallocated prefix p out of circulation until the given
// time; it may overlap reservations and other holds. Its use is to restore
// the holds of a pool after a restart.
func (a *Allocator) Hold(p netip.Prefix, until time.Time) error {
	off, k, err := a.offsetOf(p)
	if err != nil {
		return err
	}
	a.expire()
	f := a.regionFlags(off, k)
	if f&fAlloc != 0 {
		return prefixErr(p, ErrOverlap)
	}
	if f&fHeld != 0 {
		a.holdOverlap = true
	}
	a.hold(off, k, until)
	return nil
}

func (a *Allocator) hold(off u128, k uint, until time.Time) {
	if !a.now().Before(until) {
		return
	}
	a.root = a.paint(a.root, a.d, off, k, opHold)
	a.holds.push(holdEntry{until: until, off: off, k: uint8(k)})
}

// expire frees the holds whose time has come.
func (a *Allocator) expire() {
	if len(a.holds) == 0 {
		return
	}
	now := a.now()
	for len(a.holds) > 0 && !now.Before(a.holds[0].until) {
		h := a.holds.pop()
		a.root = a.paint(a.root, a.d, h.off, uint(h.k), opUnhold)
		if a.holdOverlap {
			// Addresses under another, later hold stay held.
			for _, o := range a.holds {
				if overlaps(o.off, uint(o.k), h.off, uint(h.k)) {
					a.root = a.paint(a.root, a.d, o.off, uint(o.k), opHold)
				}
			}
		}
	}
	if len(a.holds) == 0 {
		a.holdOverlap = false
	}
}

// overlaps reports whether two aligned blocks overlap: the larger contains
// the smaller's start.
func overlaps(x u128, kx uint, y u128, ky uint) bool {
	k := max(kx, ky)
	m := lowMask(k)
	return x.and(u128{^m.hi, ^m.lo}) == y.and(u128{^m.hi, ^m.lo})
}

// IsAllocated reports whether p is exactly one allocation.
func (a *Allocator) IsAllocated(p netip.Prefix) bool {
	off, k, err := a.offsetOf(p)
	if err != nil {
		return false
	}
	n, _, _, _ := a.find(nil, off, k)
	return n != 0
}

// All yields the allocations in address order. The allocator must not
// change during the iteration.
func (a *Allocator) All() iter.Seq[netip.Prefix] {
	return func(yield func(netip.Prefix) bool) {
		a.walk(a.root, a.d, u128{}, yield)
	}
}

// Reserve keeps p from ever being handed out. It may overlap other
// reservations and holds, but no allocation.
func (a *Allocator) Reserve(p netip.Prefix) error {
	off, k, err := a.offsetOf(p)
	if err != nil {
		return err
	}
	a.expire()
	if a.regionFlags(off, k)&fAlloc != 0 {
		return prefixErr(p, ErrOverlap)
	}
	a.root = a.paint(a.root, a.d, off, k, opReserve)
	return nil
}

// ReserveRange reserves the addresses first through last, which need not be
// aligned. Nothing is reserved if an error is returned.
func (a *Allocator) ReserveRange(first, last netip.Addr) error {
	for _, ip := range []netip.Addr{first, last} {
		if _, _, err := a.offsetOf(netip.PrefixFrom(ip, int(a.w))); err != nil {
			return err
		}
	}
	lo, hi := addrBits(first).and(lowMask(a.d)), addrBits(last).and(lowMask(a.d))
	if hi.less(lo) {
		return fmt.Errorf("reserve %s-%s: the range ends before it starts", first, last)
	}
	return a.reserveOffsets(lo, hi)
}

// ReserveFirst reserves the first n addresses of the pool.
func (a *Allocator) ReserveFirst(n uint64) error {
	if n == 0 {
		return nil
	}
	if a.d < 64 && n > 1<<a.d {
		return fmt.Errorf("reserve the first %d addresses of %s, which has %d: %w", n, a.pool, uint64(1)<<a.d, ErrOutsidePool)
	}
	return a.reserveOffsets(u128{}, u128{0, n - 1})
}

// ReserveLast reserves the last n addresses of the pool.
func (a *Allocator) ReserveLast(n uint64) error {
	if n == 0 {
		return nil
	}
	if a.d < 64 && n > 1<<a.d {
		return fmt.Errorf("reserve the last %d addresses of %s, which has %d: %w", n, a.pool, uint64(1)<<a.d, ErrOutsidePool)
	}
	last := lowMask(a.d)
	first := last.add(u128{^uint64(0), -n}) // last - n + 1 (mod 2^128)
	first = first.add(u128{0, 1})
	return a.reserveOffsets(first, last)
}

// reserveOffsets reserves offsets lo through hi, all or nothing.
func (a *Allocator) reserveOffsets(lo, hi u128) error {
	a.expire()
	blocks := rangeBlocks(lo, hi, a.d)
	for _, b := range blocks {
		if a.regionFlags(b.off, uint(b.k))&fAlloc != 0 {
			return prefixErr(a.prefix(b.off, uint(b.k)), ErrOverlap)
		}
	}
	for _, b := range blocks {
		a.root = a.paint(a.root, a.d, b.off, uint(b.k), opReserve)
	}
	return nil
}

// block is an aligned block: offset and log2 of its size.
type block struct {
	off u128
	k   uint8
}

// rangeBlocks splits lo through hi (offsets below 2^d) into the fewest
// aligned blocks, in address order.
func rangeBlocks(lo, hi u128, d uint) []block {
	var out []block
	for {
		// The largest block that starts at lo and ends by hi.
		k := uint(0)
		for k < d && lo.and(lowMask(k+1)) == (u128{}) {
			end := lo.add(lowMask(k + 1))
			if hi.less(end) {
				break
			}
			k++
		}
		out = append(out, block{lo, uint8(k)})
		end := lo.add(lowMask(k))
		if end == hi {
			return out
		}
		lo = end.add(u128{0, 1})
	}
}

// Usage counts the pool's addresses by state.
type Usage struct {
	// Capacity is the number of addresses in the pool.
	Capacity *big.Int
	// Allocated counts addresses covered by allocations.
	Allocated *big.Int
	// Reserved counts reserved addresses.
	Reserved *big.Int
	// Held counts held addresses that are not also reserved.
	Held *big.Int
	// Available is Capacity - Allocated - Reserved - Held.
	Available *big.Int
	// LargestFree is the prefix length of the largest free aligned block,
	// -1 if no address is free.
	LargestFree int
}

// Usage returns the pool's usage.
func (a *Allocator) Usage() Usage {
	a.expire()
	c := pow2(a.d)
	return Usage{
		Capacity:    c.big(),
		Allocated:   a.allocated.big(),
		Reserved:    a.reserved.big(),
		Held:        a.held.big(),
		Available:   c.sub(a.allocated).sub(a.reserved).sub(a.held).big(),
		LargestFree: a.largestFree(),
	}
}

// Free returns how many prefixes of length bits could be allocated right
// now, all at once; 0 for a length the pool cannot hold. It visits every
// node with a large enough free block, so it is not for hot paths.
func (a *Allocator) Free(bits int) *big.Int {
	k, err := a.sizeOf(bits)
	if err != nil {
		return new(big.Int)
	}
	a.expire()
	return a.countFree(a.root, a.d, k).big()
}
