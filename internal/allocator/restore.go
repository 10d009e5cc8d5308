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
	"cmp"
	"errors"
	"net/netip"
	"slices"
	"sort"
)

// Restore loads allocations, in any order, into an allocator that has none
// (it may have reservations and holds). It checks them all first and
// changes nothing on error. It sorts them and builds the tree bottom-up,
// which is many times faster than allocating them one by one.
func (a *Allocator) Restore(allocs []netip.Prefix) error {
	if a.live != 0 {
		return errors.New("restore into an allocator that already has allocations")
	}
	a.expire()
	items := make([]block, len(allocs))
	for i, p := range allocs {
		off, k, err := a.offsetOf(p)
		if err != nil {
			return err
		}
		items[i] = block{off, uint8(k)}
	}
	slices.SortFunc(items, func(x, y block) int {
		if c := cmp.Compare(x.off.hi, y.off.hi); c != 0 {
			return c
		}
		if c := cmp.Compare(x.off.lo, y.off.lo); c != 0 {
			return c
		}
		return cmp.Compare(y.k, x.k) // the larger block first
	})
	// Aligned blocks nest or are disjoint, so in this order any overlap
	// shows between neighbours.
	for i := 1; i < len(items); i++ {
		prev, cur := items[i-1], items[i]
		if !prev.off.add(lowMask(uint(prev.k))).less(cur.off) {
			return prefixErr(a.prefix(cur.off, uint(cur.k)), ErrOverlap)
		}
	}
	if err := a.checkBuild(a.root, a.d, items); err != nil {
		return err
	}
	a.root = a.build(a.root, a.d, items)
	a.live = len(items)
	for _, it := range items {
		a.allocated = a.allocated.add(pow2(uint(it.k)))
	}
	if !a.settled() {
		a.relayout()
	}
	return nil
}

// split returns the index of the first item in the upper half of a block of
// size 2^s; the items are sorted and inside the block.
func split(items []block, s uint) int {
	return sort.Search(len(items), func(i int) bool { return items[i].off.bit(s-1) == 1 })
}

// checkBuild returns the error for the first item that overlaps reserved or
// held space under node n of size 2^s.
func (a *Allocator) checkBuild(n int32, s uint, items []block) error {
	if len(items) == 0 || n == 0 {
		return nil
	}
	kind := a.kindOf(n)
	it := items[0]
	if kind&kStruct == 0 {
		return prefixErr(a.prefix(it.off, uint(it.k)), flagErr(kind))
	}
	if kind == kOne { // unreachable: Restore starts with no allocations
		return prefixErr(a.prefix(it.off, uint(it.k)), ErrOverlap)
	}
	if uint(it.k) == s {
		return prefixErr(a.prefix(it.off, uint(it.k)), flagErr(a.anyOf(n)))
	}
	if kind == kLeaf {
		u := s - a.leafS
		l := a.leaf(n)
		for _, it := range items {
			m := runMask(max(uint(it.k), u)-u) << a.unitIndex(it.off, u)
			var f uint8
			if l.resv&m != 0 {
				f |= fResv
			}
			if l.held&m != 0 {
				f |= fHeld
			}
			if f != 0 {
				return prefixErr(a.prefix(it.off, uint(it.k)), flagErr(f))
			}
		}
		return nil
	}
	i := split(items, s)
	nd := &a.nodes[n]
	if err := a.checkBuild(nd.child[0], s-1, items[:i]); err != nil {
		return err
	}
	return a.checkBuild(nd.child[1], s-1, items[i:])
}

// build adds the allocations items, sorted, disjoint and over free space, to
// node n of size 2^s and returns n's replacement. It makes leaves where
// insert would, at the level whose unit is the smallest item.
func (a *Allocator) build(n int32, s uint, items []block) int32 {
	if len(items) == 0 {
		return n
	}
	if uint(items[0].k) == s {
		return uniformRef(fAlloc)
	}
	if n == 0 && len(items) == 1 && s != a.leafLevel(uint(items[0].k)) {
		return a.newOne(items[0].off, uint(items[0].k), s)
	}
	if s >= a.leafS && (n == 0 || isLeaf(n)) {
		u := s - a.leafS
		minK := uint(items[0].k)
		for _, it := range items[1:] {
			minK = min(minK, uint(it.k))
		}
		if n != 0 && minK < u {
			n = a.explode(n, s, items[0].off)
		} else if n != 0 || s == a.leafLevel(minK) {
			if n == 0 {
				n = a.newLeafNode(0)
			}
			l := a.allocBits(n)
			for _, it := range items {
				o := a.unitIndex(it.off, u)
				l.alloc |= runMask(uint(it.k)-u) << o
				l.start |= 1 << o
			}
			return n
		}
	}
	if n == 0 {
		n = a.newInternal(items[0].off, s)
	}
	i := split(items, s)
	c0 := a.build(a.nodes[n].child[0], s-1, items[:i])
	a.nodes[n].child[0] = c0
	c1 := a.build(a.nodes[n].child[1], s-1, items[i:])
	a.nodes[n].child[1] = c1
	a.refresh(n, s)
	return n
}
