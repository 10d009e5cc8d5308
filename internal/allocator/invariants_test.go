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
)

// checkInvariants verifies the documented invariants of the tree and that
// the counters agree with it.
func (a *Allocator) checkInvariants() error {
	var c struct {
		nodes, leaves, wides, live int
		alloc, resv, held          count
	}
	var visit func(n int32, s uint, off u128) (free, any uint8, err error)
	visit = func(n int32, s uint, off u128) (uint8, uint8, error) {
		if n == 0 {
			return uint8(s + 1), 0, nil
		}
		var nd node
		switch {
		case isLeaf(n):
			if li := leafOf(n); li <= 0 || int(li) >= len(a.leaves) {
				return 0, 0, fmt.Errorf("leaf reference %d out of range", n)
			}
			nd.kind = kLeaf
		case n < 0:
			nd.kind = uint8(^n >> 1)
			if nd.kind == 0 || nd.kind&^(fAlloc|fResv|fHeld) != 0 || uniformRef(nd.kind) != n {
				return 0, 0, fmt.Errorf("uniform reference %d has no flags or others bits", n)
			}
		case int(n) >= len(a.nodes):
			return 0, 0, fmt.Errorf("node index %d out of range", n)
		default:
			c.nodes++
			nd = a.nodes[n]
			if want := a.slot(off, s); n != want && (want != 0 || n < a.top) {
				return 0, 0, fmt.Errorf("node %d of size 2^%d at %v: its place in the top is %d", n, s, off, want)
			}
			if nd.kind != kInternal && nd.kind != kOne {
				return 0, 0, fmt.Errorf("node %d has kind %b", n, nd.kind)
			}
		}
		var free, any uint8
		switch {
		case nd.kind == kInternal:
			if s <= a.leafS {
				return 0, 0, fmt.Errorf("internal node %d at size 2^%d (leaf size 2^%d)", n, s, a.leafS)
			}
			if nd.child[0] == 0 && nd.child[1] == 0 {
				return 0, 0, fmt.Errorf("internal node %d has no children", n)
			}
			f0, a0, err := visit(nd.child[0], s-1, off)
			if err != nil {
				return 0, 0, err
			}
			f1, a1, err := visit(nd.child[1], s-1, off.setBit(s-1))
			if err != nil {
				return 0, 0, err
			}
			free, any = max(f0, f1), a0|a1
			if nd.cfree != [2]uint8{f0, f1} || nd.cany != a0|a1<<3 {
				return 0, 0, fmt.Errorf("internal node %d of size 2^%d: child summaries %v %06b, want [%d %d] %06b", n, s, nd.cfree, nd.cany, f0, f1, a0|a1<<3)
			}
			if nd.child[0] != 0 && nd.child[1] != 0 {
				k0, k1 := a.kindOf(nd.child[0]), a.kindOf(nd.child[1])
				if k0 == k1 && k0&(kStruct|fAlloc) == 0 {
					return 0, 0, fmt.Errorf("internal node %d has two uniform %b children", n, k0)
				}
			}
		case nd.kind == kLeaf:
			if s < a.leafS {
				return 0, 0, fmt.Errorf("leaf node %d at size 2^%d", n, s)
			}
			u := s - a.leafS
			c.leaves++
			l := a.leaf(n)
			li := leafOf(n)
			var stored leafMarks
			if int(li) < len(a.marks) {
				stored = a.marks[li]
			}
			if stored != l.leafMarks || isMarked(n) != (stored != leafMarks{}) {
				return 0, 0, fmt.Errorf("leaf node %d: marked=%v, marks %+v", n, isMarked(n), stored)
			}
			if (l.alloc|l.start|l.resv|l.held)&^a.full != 0 {
				return 0, 0, fmt.Errorf("leaf node %d has bits outside the pool", n)
			}
			if l.alloc&(l.resv|l.held) != 0 {
				return 0, 0, fmt.Errorf("leaf node %d: allocated bits also reserved or held", n)
			}
			if l.start&^l.alloc != 0 {
				return 0, 0, fmt.Errorf("leaf node %d: start bits outside allocations", n)
			}
			if l.alloc == 0 && (l.resv == 0 || l.resv == a.full) && (l.held == 0 || l.held == a.full) || l.start == 1 && l.alloc == a.full {
				return 0, 0, fmt.Errorf("leaf node %d is uniform (%+v)", n, l)
			}
			// Each allocation is an aligned block that starts at its start bit.
			covered := uint64(0)
			for st := l.start; st != 0; st &= st - 1 {
				o := uint(bits.TrailingZeros64(st))
				k := l.allocLog(o)
				if k >= a.leafS || o%(1<<k) != 0 {
					return 0, 0, fmt.Errorf("leaf node %d: bad allocation 2^%d at %d", n, k, o)
				}
				covered |= runMask(k) << o
				c.live++
				c.alloc = c.alloc.add(pow2(k + u))
			}
			if covered != l.alloc {
				return 0, 0, fmt.Errorf("leaf node %d: allocations %x do not cover alloc bits %x", n, covered, l.alloc)
			}
			c.resv = c.resv.add(count{lo: uint64(bits.OnesCount64(l.resv))}.lsh(u))
			c.held = c.held.add(count{lo: uint64(bits.OnesCount64(l.held &^ l.resv))}.lsh(u))
			free, any = leafMaxFree(l.freeBits(a.full)), l.flags()
			if free != 0 {
				free += uint8(u)
			}
		case nd.kind == kOne:
			k := uint(nd.cfree[0])
			if k >= s || nd.cany != 0 {
				return 0, 0, fmt.Errorf("kOne node %d of size 2^%d holds 2^%d (cany %b)", n, s, k, nd.cany)
			}
			switch nd.cfree[1] {
			case 0: // the index in the block, in the node
				idx := uint64(uint32(nd.child[0])) | uint64(uint32(nd.child[1]))<<32
				if s-k > maxOneSpan || s-k < 64 && idx>>(s-k) != 0 {
					return 0, 0, fmt.Errorf("kOne node %d of size 2^%d holds 2^%d at index %#x", n, s, k, idx)
				}
			case 1: // the offset, in a.wide
				if s-k <= maxOneSpan {
					return 0, 0, fmt.Errorf("kOne node %d of size 2^%d holds 2^%d in a wide record", n, s, k)
				}
				if wi := nd.child[0]; wi <= 0 || int(wi) >= len(a.wide) || nd.child[1] != 0 {
					return 0, 0, fmt.Errorf("kOne node %d has wide record %d", n, wi)
				}
				c.wides++
			default:
				return 0, 0, fmt.Errorf("kOne node %d has cfree[1] = %d", n, nd.cfree[1])
			}
			r, rk := a.oneOf(&nd, s, off)
			if rk != k || !overlaps(r, s, off, s) || r.and(lowMask(k)) != (u128{}) {
				return 0, 0, fmt.Errorf("kOne node %d of size 2^%d at %v holds 2^%d at %v", n, s, off, k, r)
			}
			c.live++
			c.alloc = c.alloc.add(pow2(k))
			free, any = uint8(s), fAlloc
		case nd.kind != 0 && nd.kind&^(fAlloc|fResv|fHeld) == 0:
			if nd.kind&fAlloc != 0 && nd.kind != fAlloc {
				return 0, 0, fmt.Errorf("uniform node %d is allocated and %b", n, nd.kind)
			}
			switch {
			case nd.kind == fAlloc:
				c.live++
				c.alloc = c.alloc.add(pow2(s))
			default:
				if nd.kind&fResv != 0 {
					c.resv = c.resv.add(pow2(s))
				} else {
					c.held = c.held.add(pow2(s))
				}
			}
			free, any = 0, nd.kind
		default:
			return 0, 0, fmt.Errorf("node %d has kind %b", n, nd.kind)
		}
		if free > uint8(s) {
			return 0, 0, fmt.Errorf("node %d of size 2^%d is wholly free", n, s)
		}
		if a.freeOf(n, s) != free || a.anyOf(n) != any {
			return 0, 0, fmt.Errorf("node %d of size 2^%d: free %d any %b, want %d %b", n, s, a.freeOf(n, s), a.anyOf(n), free, any)
		}
		return free, any, nil
	}
	if _, _, err := visit(a.root, a.d, u128{}); err != nil {
		return err
	}
	freed := 0
	for i := a.freeNodes; i != 0; i = a.nodes[i].child[0] {
		if a.nodes[i].kind != kFreed || i < a.top {
			return fmt.Errorf("free list holds live node or place in the top %d", i)
		}
		freed++
	}
	for i := int32(1); i < a.top; i++ {
		if a.nodes[i].kind == kFreed {
			freed++
		}
	}
	if c.nodes+freed != len(a.nodes)-1 || c.nodes != a.nodeCount {
		return fmt.Errorf("%d reachable + %d free nodes != %d, or != %d counted", c.nodes, freed, len(a.nodes)-1, a.nodeCount)
	}
	if a.top != 1<<a.topDepth || a.topDepth > min(maxTopDepth, a.d) || len(a.nodes) < int(a.top) {
		return fmt.Errorf("top %d, depth %d, %d nodes", a.top, a.topDepth, len(a.nodes))
	}
	freedLeaves := 0
	for i := a.freeLeaves; i != 0; i = int32(a.leaves[i].alloc) {
		if int(i) < len(a.marks) && a.marks[i] != (leafMarks{}) {
			return fmt.Errorf("free leaf %d has marks", i)
		}
		freedLeaves++
	}
	if c.leaves+freedLeaves != len(a.leaves)-1 {
		return fmt.Errorf("%d reachable + %d free leaves != %d", c.leaves, freedLeaves, len(a.leaves)-1)
	}
	freedWides := 0
	for i := a.freeWides; i != 0; i = int32(a.wide[i].lo) {
		if i < 0 || int(i) >= len(a.wide) || freedWides >= len(a.wide) {
			return fmt.Errorf("wide free list broken at %d", i)
		}
		freedWides++
	}
	if c.wides+freedWides != len(a.wide)-1 {
		return fmt.Errorf("%d reachable + %d free wide records != %d", c.wides, freedWides, len(a.wide)-1)
	}
	if c.live != a.live || c.alloc != a.allocated || c.resv != a.reserved || c.held != a.held {
		return fmt.Errorf("counters live=%d alloc=%v resv=%v held=%v, tree says %d %v %v %v",
			a.live, a.allocated, a.reserved, a.held, c.live, c.alloc, c.resv, c.held)
	}
	return nil
}
