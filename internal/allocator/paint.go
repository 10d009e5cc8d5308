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
	"math/bits"
	"net/netip"
)

// paintOp changes the reserved or held flag of a region.
type paintOp uint8

const (
	opReserve paintOp = iota
	opHold
	opUnhold
)

func (op paintOp) apply(f uint8) uint8 {
	switch op {
	case opReserve:
		return f | fResv
	case opHold:
		return f | fHeld
	default:
		return f &^ fHeld
	}
}

// account updates the counters for c addresses whose flags go from f to g.
// Held counts addresses that are held and not reserved.
func (a *Allocator) account(f, g uint8, c count) {
	if f&fResv == 0 && g&fResv != 0 {
		a.reserved = a.reserved.add(c)
	}
	before, after := f&(fHeld|fResv) == fHeld, g&(fHeld|fResv) == fHeld
	switch {
	case before && !after:
		a.held = a.held.sub(c)
	case !before && after:
		a.held = a.held.add(c)
	}
}

// paintBits applies op to the units m, of 2^u addresses each, of the leaf
// whose marks are l.
func (a *Allocator) paintBits(l *leafMarks, m uint64, u uint, op paintOp) {
	pc := func(x uint64) count { return count{lo: uint64(bits.OnesCount64(x))}.lsh(u) }
	switch op {
	case opReserve:
		n := m &^ l.resv
		a.reserved = a.reserved.add(pc(n))
		a.held = a.held.sub(pc(n & l.held))
		l.resv |= m
	case opHold:
		a.held = a.held.add(pc(m &^ l.held &^ l.resv))
		l.held |= m
	case opUnhold:
		a.held = a.held.sub(pc(m & l.held &^ l.resv))
		l.held &^= m
	}
}

// paintLeaf applies op to the units m, of 2^u addresses each, of leaf n and
// returns n's replacement.
func (a *Allocator) paintLeaf(n int32, m uint64, u uint, op paintOp) int32 {
	li := leafOf(n)
	a.paintBits(a.marksOf(li), m, u, op)
	// Marked, so that normLeaf reads the marks just changed and says
	// whether the leaf still has any.
	return a.normLeaf(leafRef(li, true))
}

// paint applies op to the block of size 2^k at off inside node n of size
// 2^s and returns n's replacement. The region holds no allocation, or op
// is opUnhold.
func (a *Allocator) paint(n int32, s uint, off u128, k uint, op paintOp) int32 {
	if s == k {
		return a.paintAll(n, s, op)
	}
	if n != 0 {
		switch f := a.kindOf(n); {
		case f == kOne:
			if op == opUnhold {
				return n // nothing under it is held
			}
			a.pushDown(n, s, off)
		case f == kLeaf:
			if u := s - a.leafS; k >= u {
				return a.paintLeaf(n, runMask(k-u)<<a.unitIndex(off, u), u, op)
			}
			n = a.explode(n, s, off)
		case f&kStruct == 0:
			if op.apply(f) == f {
				return n
			}
			// Split the uniform block so that part of it can change.
			if s == a.leafS {
				return a.paint(a.newLeafNode(f), s, off, k, op)
			}
			n = a.newNode(node{child: [2]int32{n, n}, kind: kInternal}, off, s)
		}
	}
	if n == 0 {
		if op == opUnhold {
			return 0
		}
		if s == a.leafS {
			n = a.newLeafNode(0)
			return a.paint(n, s, off, k, op)
		}
		n = a.newInternal(off, s)
	}
	b := off.bit(s - 1)
	c := a.paint(a.nodes[n].child[b], s-1, off, k, op)
	a.nodes[n].child[b] = c
	return a.normInternal(n, s)
}

// paintAll applies op to every address of node n of size 2^s.
func (a *Allocator) paintAll(n int32, s uint, op paintOp) int32 {
	if n == 0 {
		g := op.apply(0)
		a.account(0, g, pow2(s))
		if g == 0 {
			return 0
		}
		return uniformRef(g)
	}
	switch f := a.kindOf(n); f {
	case kOne:
		return n // only opUnhold gets here, and nothing under it is held
	case kLeaf:
		return a.paintLeaf(n, a.full, s-a.leafS, op)
	case kInternal:
		nd := a.nodes[n]
		c0 := a.paintAll(nd.child[0], s-1, op)
		a.nodes[n].child[0] = c0
		c1 := a.paintAll(nd.child[1], s-1, op)
		a.nodes[n].child[1] = c1
		return a.normInternal(n, s)
	default:
		g := op.apply(f)
		a.account(f, g, pow2(s))
		if g == 0 {
			return 0
		}
		return uniformRef(g)
	}
}

// leafFree returns, for the leaf l of unit 2^u, the units at which a free
// block of size 2^k starts (k >= u), or the free units (k < u).
func (a *Allocator) leafFree(l leaf, u, k uint) uint64 {
	f := l.freeBits(a.full)
	if k < u {
		return f
	}
	return fitMask(f, k-u)
}

// countFree returns how many free aligned blocks of size 2^k node n of size
// 2^s holds.
func (a *Allocator) countFree(n int32, s, k uint) count {
	if a.freeOf(n, s) < uint8(k+1) {
		return count{}
	}
	if n == 0 {
		return pow2(s - k)
	}
	if isLeaf(n) { // freeOf is 0 for a uniform block
		u := s - a.leafS
		c := count{lo: uint64(bits.OnesCount64(a.leafFree(a.leaf(n), u, k)))}
		if k < u {
			c = c.lsh(u - k)
		}
		return c
	}
	nd := &a.nodes[n]
	if nd.kind == kOne {
		// All blocks but those overlapping the allocation.
		return pow2(s - k).sub(pow2(max(k, uint(nd.cfree[0])) - k))
	}
	return a.countFree(nd.child[0], s-1, k).add(a.countFree(nd.child[1], s-1, k))
}

// selectFree returns the offset of the r-th (from 0, in address order) free
// aligned block of size 2^k; r is below countFree(a.root, a.d, k).
func (a *Allocator) selectFree(k uint, r count) u128 {
	n, s := a.root, a.d
	var off u128
	for n != 0 {
		if isLeaf(n) {
			u := s - a.leafS
			m := a.leafFree(a.leaf(n), u, k)
			rr := u128{r.hi, r.lo}
			var within u128
			if k < u {
				// r counts blocks of 2^k inside free units of 2^u.
				within = rr.and(lowMask(u - k)).lsh(k)
				rr = rr.rsh(u - k)
			}
			for i := rr.lo; i > 0; i-- {
				m &= m - 1
			}
			unit := u128{0, uint64(bits.TrailingZeros64(m))}
			return off.or(unit.lsh(u)).or(within)
		}
		nd := &a.nodes[n]
		if nd.kind == kOne {
			// Skip the blocks that overlap the allocation: indexes lo..hi-1.
			r1, k1 := a.oneOf(nd, s, off)
			kk := max(k, k1)
			lo := r1.and(lowMask(s)).rsh(kk).lsh(kk - k)
			i := u128{r.hi, r.lo}
			if !i.less(lo) {
				i = i.add(u128{0, 1}.lsh(kk - k))
			}
			return off.or(i.lsh(k))
		}
		c0, c1 := nd.child[0], nd.child[1]
		if n0 := a.countFree(c0, s-1, k); r.less(n0) {
			n = c0
		} else {
			r = r.sub(n0)
			n = c1
			off = off.setBit(s - 1)
		}
		s--
	}
	return off.or(u128{r.hi, r.lo}.lsh(k))
}

// walk yields the allocations under node n of size 2^s at off in address
// order and reports whether to go on.
func (a *Allocator) walk(n int32, s uint, off u128, yield func(netip.Prefix) bool) bool {
	switch a.kindOf(n) {
	case kInternal:
		if a.anyOf(n)&fAlloc == 0 {
			return true
		}
		nd := &a.nodes[n]
		return a.walk(nd.child[0], s-1, off, yield) && a.walk(nd.child[1], s-1, off.setBit(s-1), yield)
	case kLeaf:
		u := s - a.leafS
		l := *a.allocBits(n)
		for st := l.start; st != 0; st &= st - 1 {
			o := uint(bits.TrailingZeros64(st))
			if !yield(a.prefix(off.or(u128{0, uint64(o)}.lsh(u)), l.allocLog(o)+u)) {
				return false
			}
		}
		return true
	case kOne:
		return yield(a.prefix(a.oneOf(&a.nodes[n], s, off)))
	case fAlloc:
		return yield(a.prefix(off, s))
	}
	return true
}

// allocLog returns log2 of the size of the allocation starting at bit o.
func (l *leafAlloc) allocLog(o uint) uint {
	var cont uint64
	if o < 63 {
		cont = (l.alloc &^ l.start) >> (o + 1)
	}
	return uint(bits.Len64(uint64(bits.TrailingZeros64(^cont))+1) - 1)
}
