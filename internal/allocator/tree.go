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
	"math"
	"math/bits"
)

// State flags of an address. An allocated address is never reserved or held;
// reserved and held may overlap.
const (
	fAlloc uint8 = 1 << iota
	fResv
	fHeld
	// Node kinds besides uniform ones (whose kind is their non-zero flags).
	kLeaf
	kInternal
	kOne
	kFreed
	kStruct = kLeaf | kInternal | kOne
)

// A reference (an int32) names what stands for one aligned block of the
// pool, the block of size 2^s that its position in the tree gives it:
//   - 0 is nil: an absent node is a wholly free block;
//   - n > 0 is Allocator.nodes[n], of kind kInternal or kOne;
//   - n < 0 is held in the reference itself (see leafRef and uniformRef):
//     a leaf, an index into Allocator.leaves, or a uniform block, a
//     non-zero set of flags that every address of the block has (a uniform
//     fAlloc block is exactly one allocation).
//
// Leaves and uniform blocks used to be nodes of their own. Held in their
// parent's reference, they cost no node (a /24 among hosts was a 12-byte
// node) and the walk down to them one dependent load less: in a tree
// larger than the cache that is one cache miss less per release.
//
// Invariants (checked by the tests after every operation):
//   - kind is kInternal (child holds the two halves; at least one non-nil),
//     kOne (the block holds one smaller allocation and is otherwise free),
//     kLeaf (a leaf reference) or a non-zero set of flags (a uniform
//     reference).
//   - A kOne at level s records its allocation of size 2^k in the node
//     itself: cfree[0] is k and, when s-k <= 64, child holds the
//     allocation's index in the block in units of 2^k (low 32 bits in
//     child[0]); the path gives the rest of its address. Only when s-k > 64
//     (a lone small block high in a huge IPv6 pool) does cfree[1] = 1 mark
//     child[0] as an index into Allocator.wide, its offset. cany is 0.
//   - A lone allocation is a kOne node where its path parts from the
//     others' rather than the end of a chain of one-child nodes, so that
//     scattered allocations in a sparse pool cost a node (12 bytes) and
//     about one branching node each. A kOne moves down a level at a time
//     when something else needs its block, and back up when its sibling
//     goes.
//   - A leaf at level s (s >= leafS) is a bitmap of 2^leafS units of
//     2^(s-leafS) addresses each: hosts go in leaves at the bottom, /24s in
//     leaves of /24 units, so that pools of one allocation size pack 64
//     allocations per leaf at any depth. A leaf never holds an allocation
//     smaller than its unit: one that needs to splits into two leaves of
//     half the unit.
//   - A node's summary is the largest free aligned block in its subtree, as
//     log2(size)+1 (0 for none), and the union of the flags present in it.
//     An internal node keeps its children's summaries (cfree, cany), so
//     that walking down or back up reads only the nodes on the path.
//   - A non-nil node is never wholly free: its largest free block is
//     smaller than itself.
//   - A node at depth t < topDepth (of size 2^(d-t)) is at its place in
//     the top, the index slot gives it: 2^t plus its block's number among
//     the blocks of its size, as in a binary heap, so that the children of
//     node i there are nodes 2i and 2i+1. The other places of the top are
//     kFreed and on no free list.
type node struct {
	child [2]int32
	kind  uint8
	cfree [2]uint8 // internal: the children's largest free blocks
	cany  uint8    // internal: child 0's flags | child 1's flags << 3
}

// leaf is the bitmap of the 2^leafS (at most 64) units of a leaf node.
// An allocation inside a leaf sets its units in alloc and its first unit in
// start, so allocation boundaries survive without a per-allocation record.
//
// A leaf is stored in two parts: leafAlloc, which every allocation and
// release reads, in Allocator.leaves, and leafMarks, which only leaves with
// reserved or held units have, in Allocator.marks under the same index. A
// leaf reference says which leaves have marks, so that a pool without
// reservations or holds never reads them: its leaves take 16 bytes of the
// cache rather than 32.
type leaf struct {
	leafAlloc
	leafMarks
}

type leafAlloc struct{ alloc, start uint64 }

type leafMarks struct{ resv, held uint64 }

// leafRef returns the reference to leaf li (1 <= li < 2^29: 16 GiB of
// leaves, beyond any pool that fits in memory), marked if the leaf has
// reserved or held units.
func leafRef(li int32, marked bool) int32 {
	r := li << 2
	if marked {
		r |= 2
	}
	return ^r
}

// uniformRef returns the reference to a uniform block of flags f (f != 0).
func uniformRef(f uint8) int32 { return ^(int32(f)<<1 | 1) }

// isLeaf reports whether reference n is a leaf.
func isLeaf(n int32) bool { return n < 0 && ^n&1 == 0 }

// leafOf returns the index in Allocator.leaves of leaf reference n.
func leafOf(n int32) int32 { return ^n >> 2 }

// isMarked reports whether leaf reference n has reserved or held units.
func isMarked(n int32) bool { return ^n&2 != 0 }

// kindOf returns the kind of reference n: the node's kind, kLeaf, the
// uniform block's flags, or 0 for nil.
func (a *Allocator) kindOf(n int32) uint8 {
	switch {
	case n > 0:
		return a.nodes[n].kind
	case n == 0:
		return 0
	case ^n&1 == 1:
		return uint8(^n >> 1)
	}
	return kLeaf
}

// leaf returns the bits of leaf reference n.
func (a *Allocator) leaf(n int32) leaf {
	l := leaf{leafAlloc: a.leaves[leafOf(n)]}
	if isMarked(n) {
		l.leafMarks = a.marks[leafOf(n)]
	}
	return l
}

// allocBits returns the allocation bits of leaf reference n, to change.
func (a *Allocator) allocBits(n int32) *leafAlloc { return &a.leaves[leafOf(n)] }

// marksOf returns the marks of leaf li, to change, making room for them.
func (a *Allocator) marksOf(li int32) *leafMarks {
	if int(li) >= len(a.marks) {
		a.marks = append(a.marks, make([]leafMarks, int(li)+1-len(a.marks))...)
	}
	return &a.marks[li]
}

// maxOneSpan is the largest s-k for which a kOne at level s holds the index
// of its allocation of size 2^k in the node itself.
const maxOneSpan = 64

// alignMask[j] has a bit at every multiple of 2^j.
var alignMask = [7]uint64{
	0xFFFFFFFFFFFFFFFF,
	0x5555555555555555,
	0x1111111111111111,
	0x0101010101010101,
	0x0001000100010001,
	0x0000000100000001,
	0x0000000000000001,
}

// fitMask returns the positions at which a free run of 2^k bits, aligned
// to 2^k, starts in the free bitmap f.
func fitMask(f uint64, k uint) uint64 {
	for j := uint(1); j <= k; j++ {
		f &= f >> (1 << (j - 1))
		f &= alignMask[j]
	}
	return f
}

// leafMaxFree returns the largest free aligned run in f as log2(size)+1.
func leafMaxFree(f uint64) uint8 {
	if f == 0 {
		return 0
	}
	r := uint8(1)
	for j := uint(1); j <= 6; j++ {
		f &= f >> (1 << (j - 1))
		f &= alignMask[j]
		if f == 0 {
			break
		}
		r = uint8(j + 1)
	}
	return r
}

// runMask returns 2^k ones.
func runMask(k uint) uint64 {
	if k >= 6 {
		return ^uint64(0)
	}
	return 1<<(1<<k) - 1
}

func (l leaf) freeBits(full uint64) uint64 { return ^(l.alloc | l.resv | l.held) & full }

func (l leaf) flags() uint8 {
	var f uint8
	if l.alloc != 0 {
		f |= fAlloc
	}
	if l.resv != 0 {
		f |= fResv
	}
	if l.held != 0 {
		f |= fHeld
	}
	return f
}

// newNode returns the index of a node set to nd, of size 2^s at off (any
// offset in its block). It may grow a.nodes, so callers must not keep
// pointers into it across the call.
func (a *Allocator) newNode(nd node, off u128, s uint) int32 {
	a.nodeCount++
	if i := a.slot(off, s); i != 0 {
		a.nodes[i] = nd
		return i
	}
	if i := a.freeNodes; i != 0 {
		a.freeNodes = a.nodes[i].child[0]
		a.nodes[i] = nd
		return i
	}
	a.nodes = append(a.nodes, nd)
	return int32(len(a.nodes) - 1)
}

// freeNode frees what reference i names: a node and the record it owns,
// or a leaf.
func (a *Allocator) freeNode(i int32) {
	switch {
	case i > 0:
		if a.nodes[i].kind == kOne {
			a.freeWide(a.nodes[i])
		}
		a.dropNode(i)
	case isLeaf(i):
		a.freeLeaf(leafOf(i))
	}
}

// dropNode frees node i alone.
func (a *Allocator) dropNode(i int32) {
	a.nodeCount--
	if i < a.top {
		a.nodes[i] = node{kind: kFreed}
		return
	}
	a.nodes[i] = node{child: [2]int32{a.freeNodes, 0}, kind: kFreed}
	a.freeNodes = i
}

// newOne returns a kOne node at level s for the allocation of size 2^k at
// off.
func (a *Allocator) newOne(off u128, k, s uint) int32 {
	return a.newNode(a.oneNode(off, k, s), off, s)
}

// oneNode returns a kOne node for level s and the allocation of size 2^k
// at off. It may grow a.wide, not a.nodes.
func (a *Allocator) oneNode(off u128, k, s uint) node {
	if s-k > maxOneSpan {
		var wi int32
		if wi = a.freeWides; wi != 0 {
			a.freeWides = int32(a.wide[wi].lo)
			a.wide[wi] = off
		} else {
			a.wide = append(a.wide, off)
			wi = int32(len(a.wide) - 1)
		}
		return node{child: [2]int32{wi, 0}, kind: kOne, cfree: [2]uint8{uint8(k), 1}}
	}
	idx := off.rsh(k).lo
	if s-k < 64 {
		idx &= 1<<(s-k) - 1
	}
	return node{child: [2]int32{int32(uint32(idx)), int32(uint32(idx >> 32))}, kind: kOne, cfree: [2]uint8{uint8(k), 0}}
}

// oneOf returns the offset and log2 of the size of the allocation of kOne
// node nd at level s; base is any offset inside the node's block.
func (a *Allocator) oneOf(nd *node, s uint, base u128) (u128, uint) {
	k := uint(nd.cfree[0])
	if nd.cfree[1] != 0 {
		return a.wide[nd.child[0]], k
	}
	idx := uint64(uint32(nd.child[0])) | uint64(uint32(nd.child[1]))<<32
	m := lowMask(s)
	return base.and(u128{^m.hi, ^m.lo}).or(u128{0, idx}.lsh(k)), k
}

// freeWide frees the offset record of kOne node nd, if it has one.
func (a *Allocator) freeWide(nd node) {
	if nd.cfree[1] != 0 {
		i := nd.child[0]
		a.wide[i] = u128{0, uint64(a.freeWides)}
		a.freeWides = i
	}
}

// pushDown moves the allocation of kOne node n at level s one level down,
// making n an internal node above it; base is any offset in n's block.
func (a *Allocator) pushDown(n int32, s uint, base u128) {
	nd := a.nodes[n]
	off, k := a.oneOf(&nd, s, base)
	a.freeWide(nd)
	var c int32
	switch {
	case s-1 == k:
		c = uniformRef(fAlloc)
	case s-1 == a.leafLevel(k):
		u := s - 1 - a.leafS
		o := a.unitIndex(off, u)
		c = a.newLeaf(leaf{leafAlloc: leafAlloc{alloc: runMask(k-u) << o, start: 1 << o}})
	default:
		c = a.newOne(off, k, s-1)
	}
	var ch [2]int32
	ch[off.bit(s-1)] = c
	a.nodes[n] = node{child: ch, kind: kInternal}
	a.refresh(n, s)
}

// newLeaf returns a reference to a new leaf set to l.
func (a *Allocator) newLeaf(l leaf) int32 {
	li := a.freeLeaves
	if li != 0 {
		a.freeLeaves = int32(a.leaves[li].alloc)
		a.leaves[li] = l.leafAlloc
	} else {
		a.leaves = append(a.leaves, l.leafAlloc)
		li = int32(len(a.leaves) - 1)
	}
	marked := l.leafMarks != leafMarks{}
	if marked {
		*a.marksOf(li) = l.leafMarks
	}
	return leafRef(li, marked)
}

// freeLeaf frees leaf li; its marks, if any, are cleared.
func (a *Allocator) freeLeaf(li int32) {
	a.leaves[li] = leafAlloc{alloc: uint64(a.freeLeaves)}
	if int(li) < len(a.marks) {
		a.marks[li] = leafMarks{}
	}
	a.freeLeaves = li
}

// newLeafNode returns a new leaf whose addresses all have flags f.
func (a *Allocator) newLeafNode(f uint8) int32 {
	return a.newLeaf(a.uniformLeaf(f))
}

// newInternal returns an internal node of size 2^s at off with two free
// halves.
func (a *Allocator) newInternal(off u128, s uint) int32 {
	return a.newNode(node{kind: kInternal, cfree: [2]uint8{uint8(s), uint8(s)}}, off, s)
}

func (a *Allocator) uniformLeaf(f uint8) leaf {
	var l leaf
	if f&fResv != 0 {
		l.resv = a.full
	}
	if f&fHeld != 0 {
		l.held = a.full
	}
	return l
}

// freeOf returns the largest free aligned block under node n of size 2^s.
func (a *Allocator) freeOf(n int32, s uint) uint8 {
	switch {
	case n == 0:
		return uint8(s + 1)
	case n < 0:
		if isLeaf(n) {
			if f := leafMaxFree(a.leaf(n).freeBits(a.full)); f != 0 {
				return f + uint8(s-a.leafS)
			}
		}
		return 0
	}
	nd := &a.nodes[n]
	if nd.kind == kOne {
		return uint8(s) // the half without the allocation
	}
	return max(nd.cfree[0], nd.cfree[1])
}

// unitIndex returns the index, in a leaf of unit 2^u, of the unit holding off.
func (a *Allocator) unitIndex(off u128, u uint) uint {
	return uint(off.rsh(u).lo & (1<<a.leafS - 1))
}

// spread doubles the bits of x: bit i goes to bit 2i.
func spread(x uint32) uint64 {
	v := uint64(x)
	v = (v | v<<16) & 0x0000FFFF0000FFFF
	v = (v | v<<8) & 0x00FF00FF00FF00FF
	v = (v | v<<4) & 0x0F0F0F0F0F0F0F0F
	v = (v | v<<2) & 0x3333333333333333
	v = (v | v<<1) & 0x5555555555555555
	return v
}

// explode replaces leaf n at level s > leafS, at off, with an internal node
// whose halves are leaves of half its unit, and returns the new node.
func (a *Allocator) explode(n int32, s uint, off u128) int32 {
	l := a.leaf(n)
	a.freeLeaf(leafOf(n))
	var c [2]int32
	for h := range 2 {
		sh := 32 * uint(h)
		double := func(x uint64) uint64 { e := spread(uint32(x >> sh)); return e | e<<1 }
		nl := leaf{
			leafAlloc{alloc: double(l.alloc), start: spread(uint32(l.start >> sh))},
			leafMarks{resv: double(l.resv), held: double(l.held)},
		}
		if nl == (leaf{}) {
			continue
		}
		c[h] = a.normLeaf(a.newLeaf(nl))
	}
	m := a.newNode(node{child: c, kind: kInternal}, off, s)
	a.refresh(m, s)
	return m
}

// leafLevel returns the level at which a new leaf is made for an
// allocation of size 2^k: one whose unit is the allocation, or the bottom.
func (a *Allocator) leafLevel(k uint) uint {
	if k < a.leafS {
		return a.leafS
	}
	return k + a.leafS
}

// anyOf returns the flags present under reference n.
func (a *Allocator) anyOf(n int32) uint8 {
	switch {
	case n == 0:
		return 0
	case n < 0:
		if isLeaf(n) {
			return a.leaf(n).flags()
		}
		return uint8(^n >> 1)
	}
	nd := &a.nodes[n]
	if nd.kind == kOne {
		return fAlloc
	}
	return (nd.cany | nd.cany>>3) & 7
}

// setSummary stores the summary of child b of internal node n of size 2^s
// and reports whether it changed.
func (a *Allocator) setSummary(n int32, b int, s uint) bool {
	c := a.nodes[n].child[b]
	f, any := a.freeOf(c, s-1), a.anyOf(c)<<(3*b)
	nd := &a.nodes[n]
	m := uint8(7) << (3 * b)
	if nd.cfree[b] == f && nd.cany&m == any {
		return false
	}
	nd.cfree[b] = f
	nd.cany = nd.cany&^m | any
	return true
}

// bubble stores the new summary (largest free block f, flags any) of the
// child on the path at level s in its parent path[depth-1], and so on up
// until a parent's stored summary does not change. It carries the summary
// in registers rather than reading each child back: in a packed region the
// walk up after every allocation and release is what grows with the live
// count.
func (a *Allocator) bubble(path *[maxDepth]int32, depth int, s uint, off u128, f, any uint8) {
	// Each step is kept short: the sides come off one word shifted once
	// per level, and the shifts are masked so that they compile to single
	// instructions.
	side := off.rsh(s)
	for ; depth > 0; depth-- {
		b := uint(side.lo & 1)
		side.lo = side.lo>>1 | side.hi<<63
		side.hi >>= 1
		nd := &a.nodes[path[depth-1]]
		sh := 3 * b & 7
		// The parent's summary is the child's merged with the sibling's,
		// read before the store so that the next step does not wait on it.
		sf, sany := nd.cfree[b^1], nd.cany>>(sh^3)&7
		if nd.cfree[b] == f && nd.cany>>sh&7 == any {
			return
		}
		nd.cfree[b] = f
		nd.cany = nd.cany&^(7<<sh) | any<<sh
		f = max(f, sf)
		any |= sany
	}
}

// refresh recomputes both child summaries of internal node n of size 2^s.
func (a *Allocator) refresh(n int32, s uint) {
	a.setSummary(n, 0, s)
	a.setSummary(n, 1, s)
}

// normLeaf restores the invariants of leaf n after its bits changed: an
// empty leaf goes away, a leaf that is one allocation or uniformly reserved
// or held becomes a uniform block, and a leaf is marked if and only if it
// has marks. It reads the marks only if n is marked: a caller that may have
// given the leaf its first marks passes n marked (paintLeaf). It returns
// n's replacement.
func (a *Allocator) normLeaf(n int32) int32 {
	l := a.leaf(n)
	if l.start == 1 && l.alloc == a.full {
		// One allocation fills the leaf (explode halved its unit).
		a.freeNode(n)
		return uniformRef(fAlloc)
	}
	if l.alloc == 0 && (l.resv == 0 || l.resv == a.full) && (l.held == 0 || l.held == a.full) {
		f := l.flags()
		a.freeNode(n)
		if f == 0 {
			return 0
		}
		return uniformRef(f)
	}
	return leafRef(leafOf(n), l.leafMarks != leafMarks{})
}

// normInternal restores the invariants of internal node n of size 2^s after
// its children changed and returns the node's new index.
func (a *Allocator) normInternal(n int32, s uint) int32 {
	c0, c1 := a.nodes[n].child[0], a.nodes[n].child[1]
	if c0 == 0 && c1 == 0 {
		a.freeNode(n)
		return 0
	}
	if c0 != 0 && c1 != 0 {
		k0, k1 := a.kindOf(c0), a.kindOf(c1)
		if k0 == k1 && k0&(kStruct|fAlloc) == 0 {
			a.freeNode(n)
			return uniformRef(k0)
		}
	}
	a.refresh(n, s)
	return n
}

// regionFlags returns the flags present in the block of size 2^k at off.
func (a *Allocator) regionFlags(off u128, k uint) uint8 {
	n, s := a.root, a.d
	for n != 0 {
		kind := a.kindOf(n)
		if kind&kStruct == 0 {
			return kind
		}
		if s == k {
			return a.anyOf(n)
		}
		if kind == kOne {
			if r, rk := a.oneOf(&a.nodes[n], s, off); overlaps(r, rk, off, k) {
				return fAlloc
			}
			return 0
		}
		if kind == kLeaf {
			u := s - a.leafS
			l := a.leaf(n)
			m := runMask(max(k, u)-u) << a.unitIndex(off, u)
			var f uint8
			if l.alloc&m != 0 {
				f |= fAlloc
			}
			if l.resv&m != 0 {
				f |= fResv
			}
			if l.held&m != 0 {
				f |= fHeld
			}
			return f
		}
		n = a.nodes[n].child[off.bit(s-1)]
		s--
	}
	return 0
}

// maxDepth bounds the depth of the tree: one level per address bit.
const maxDepth = 129

// link hangs node m, of size 2^s on the way to off, under the last node of
// path, or at the root if path is empty.
func (a *Allocator) link(path []int32, off u128, s uint, m int32) {
	if len(path) == 0 {
		a.root = m
		return
	}
	a.nodes[path[len(path)-1]].child[off.bit(s)] = m
}

// insert marks the free block of size 2^k at off as one allocation.
func (a *Allocator) insert(off u128, k uint) {
	if !a.settled() {
		a.relayout()
	}
	var path [maxDepth]int32
	depth := 0
	n, s := a.root, a.d
	if n == 1 && a.top > 1 {
		n, s, depth = a.topDown(&path, off, k)
	}
	for s > k {
		if n == 0 {
			n = a.newAt(s, off, k)
			a.link(path[:depth], off, s, n)
			break
		}
		switch a.kindOf(n) {
		case kLeaf:
			if k >= s-a.leafS {
				a.place(&path, depth, n, s, off, k)
				return
			}
			n = a.explode(n, s, off)
			a.link(path[:depth], off, s, n)
		case kOne:
			a.pushDown(n, s, off)
		}
		path[depth] = n
		depth++
		n = a.nodes[n].child[off.bit(s-1)]
		s--
	}
	a.place(&path, depth, n, s, off, k)
}

// newAt returns the node for a new allocation of size 2^k at off in a free
// block at level s > k: an empty leaf at the allocation's leaf level (place
// fills it in), else a kOne.
func (a *Allocator) newAt(s uint, off u128, k uint) int32 {
	if s == a.leafLevel(k) {
		return a.newLeafNode(0)
	}
	return a.newOne(off, k, s)
}

// insertFirst allocates the lowest free aligned block of size 2^k, walking
// down once, and returns its offset.
func (a *Allocator) insertFirst(k uint) (u128, bool) {
	if !a.settled() {
		a.relayout()
	}
	var off u128
	need := uint8(k + 1)
	if a.freeOf(a.root, a.d) < need {
		return off, false
	}
	var path [maxDepth]int32
	depth := 0
	n, s := a.root, a.d
	if n == 1 && a.top > 1 {
		n, s, depth, off = a.topFirst(&path, need, k)
	}
	for s > k {
		if n == 0 {
			n = a.newAt(s, off, k)
			a.link(path[:depth], off, s, n)
			break
		}
		switch a.kindOf(n) {
		case kLeaf:
			if u := s - a.leafS; k >= u {
				m := fitMask(a.leaf(n).freeBits(a.full), k-u)
				off = off.or(u128{0, uint64(bits.TrailingZeros64(m))}.lsh(u))
				a.place(&path, depth, n, s, off, k)
				return off, true
			}
			n = a.explode(n, s, off)
			a.link(path[:depth], off, s, n)
		case kOne:
			a.pushDown(n, s, off)
		}
		path[depth] = n
		depth++
		nd := &a.nodes[n]
		if nd.cfree[0] >= need {
			n = nd.child[0]
		} else {
			n = nd.child[1]
			off = off.setBit(s - 1)
		}
		s--
	}
	a.place(&path, depth, n, s, off, k)
	return off, true
}

// place finishes an insertion: the walk down to the free block (off, k)
// stopped at n, of size 2^s, which is nil with s == k, a leaf whose unit is
// at most 2^k, or the new kOne of the allocation; path holds the depth
// nodes above it.
func (a *Allocator) place(path *[maxDepth]int32, depth int, n int32, s uint, off u128, k uint) {
	if n == 0 {
		a.link(path[:depth], off, s, uniformRef(fAlloc))
		a.bubble(path, depth, s, off, 0, fAlloc)
	} else {
		if isLeaf(n) {
			u := s - a.leafS
			l := a.allocBits(n)
			o := a.unitIndex(off, u)
			l.alloc |= runMask(k-u) << o
			l.start |= 1 << o
		}
		a.bubble(path, depth, s, off, a.freeOf(n, s), a.anyOf(n))
	}
	a.live++
	a.allocated = a.allocated.add(pow2(k))
}

// find walks down to the allocation of size 2^k at off. It returns the
// node holding it (a uniform fAlloc node, or a leaf and the allocation's
// unit index there), its level, and the nodes above it in path; n is 0 if
// there is no such allocation.
func (a *Allocator) find(path *[maxDepth]int32, off u128, k uint) (n int32, s uint, o uint, depth int) {
	n, s = a.root, a.d
	if n == 1 && a.top > 1 {
		n, s, depth = a.topDown(path, off, k)
	}
	for s > k {
		if n == 0 {
			return 0, s, 0, depth
		}
		kind := a.kindOf(n)
		if kind == kOne {
			if r, rk := a.oneOf(&a.nodes[n], s, off); r == off && rk == k {
				return n, s, 0, depth
			}
			return 0, s, 0, depth
		}
		if kind == kLeaf {
			u := s - a.leafS
			if k < u {
				return 0, s, 0, depth
			}
			l := a.allocBits(n)
			o := a.unitIndex(off, u)
			if l.start&(1<<o) == 0 || l.allocLog(o) != k-u {
				return 0, s, 0, depth
			}
			return n, s, o, depth
		}
		if kind != kInternal {
			return 0, s, 0, depth
		}
		if path != nil {
			path[depth] = n
		}
		depth++
		n = a.nodes[n].child[off.bit(s-1)]
		s--
	}
	if a.kindOf(n) != fAlloc {
		return 0, s, 0, depth
	}
	return n, s, 0, depth
}

// remove releases the allocation of size 2^k at off and reports whether
// there was exactly such an allocation.
func (a *Allocator) remove(off u128, k uint) bool {
	if !a.settled() {
		a.relayout()
	}
	var path [maxDepth]int32
	n, s, o, depth := a.find(&path, off, k)
	if n == 0 {
		return false
	}
	m := n // n's replacement
	if isLeaf(n) {
		l := a.allocBits(n)
		l.alloc &^= runMask(k-(s-a.leafS)) << o
		l.start &^= 1 << o
		if m = a.normLeaf(n); m != n && m != 0 {
			a.link(path[:depth], off, s, m)
		}
	} else {
		a.freeNode(n)
		m = 0
	}
	// Walk back up. The released space is free, so n stays a leaf or goes
	// away. A parent left with no child goes too; one left with a single
	// kOne child becomes that kOne, and so on up. After that, summaries are
	// updated until one does not change. s is the level of the child on the
	// path, path[depth-1] its parent.
	const (
		normal = iota
		gone   // the child on the path went away
		single // the child on the path is a kOne
	)
	state := normal
	if m == 0 {
		state = gone
	}
	for ; depth > 0 && state != normal; depth, s = depth-1, s+1 {
		p := path[depth-1]
		b := off.bit(s)
		switch state {
		case gone:
			a.nodes[p].child[b] = 0
			o := a.nodes[p].child[1-b]
			if o == 0 {
				a.freeNode(p)
				continue
			}
			if a.kindOf(o) == kOne {
				// o moves up into p, its sibling's bit set to 1-b.
				base := off.and(u128{^lowMask(s + 1).hi, ^lowMask(s + 1).lo})
				if b == 0 {
					base = base.setBit(s)
				}
				r, rk := a.oneOf(&a.nodes[o], s, base)
				a.freeNode(o)
				a.nodes[p] = a.oneNode(r, rk, s+1)
				state = single
				continue
			}
		case single:
			if c := a.nodes[p].child[b]; a.nodes[p].child[1-b] == 0 {
				r, rk := a.oneOf(&a.nodes[c], s, off)
				a.freeNode(c)
				a.nodes[p] = a.oneNode(r, rk, s+1)
				continue
			}
		}
		state = normal
		break
	}
	switch {
	case state == normal && depth > 0:
		c := a.nodes[path[depth-1]].child[off.bit(s)]
		a.bubble(&path, depth, s, off, a.freeOf(c, s), a.anyOf(c))
	case depth == 0 && state == gone:
		a.root = 0
	}
	a.live--
	a.allocated = a.allocated.sub(pow2(k))
	return true
}

// topDown walks from the root, at index 1, through the internal nodes of
// the top of the tree towards the block of size 2^k at off, as the walks
// of find and insert do: it records them in path, if not nil, and returns
// the first node it does not take, that node's level and its depth.
//
// In the top, a node's child is at an index the walk computes rather than
// loads (see slot), so that the load of each level need not wait for the
// level above: the processor runs ahead while the branch that checks the
// child predicts that it is where it should be.
func (a *Allocator) topDown(path *[maxDepth]int32, off u128, k uint) (n int32, s uint, depth int) {
	n, s = 1, a.d
	for s > k {
		b := int32(off.bit(s - 1))
		c := 2*n + b
		nd := &a.nodes[n]
		if c >= a.top || nd.kind != kInternal || nd.child[b] != c {
			break
		}
		if path != nil {
			path[depth] = n
		}
		depth++
		n, s = c, s-1
	}
	return n, s, depth
}

// topFirst is topDown for insertFirst: it walks towards the lowest block
// whose largest free block is at least need (log2(size)+1), and returns
// that block's offset as far as it went.
func (a *Allocator) topFirst(path *[maxDepth]int32, need uint8, k uint) (n int32, s uint, depth int, off u128) {
	n, s = 1, a.d
	for s > k {
		nd := &a.nodes[n]
		if nd.kind != kInternal {
			break
		}
		c := 2 * n
		if nd.cfree[0] < need {
			c++
		}
		if c >= a.top || nd.child[c&1] != c {
			break
		}
		if c&1 != 0 {
			off = off.setBit(s - 1)
		}
		path[depth] = n
		depth++
		n, s = c, s-1
	}
	return n, s, depth, off
}

// maxTopDepth bounds the top of the tree laid out by place: 2^22 places,
// 48 MiB, made only for a tree of millions of nodes. A variable, so that a
// test can reach the bound without millions of allocations.
var maxTopDepth uint = 22

// slot returns the index reserved for a node of size 2^s at off (any
// offset in its block), or 0 if its level is below the top.
func (a *Allocator) slot(off u128, s uint) int32 {
	t := a.d - s
	if t >= a.topDepth {
		return 0
	}
	return int32(1<<t | off.rsh(s).lo)
}

// settled reports whether the tree's layout still suits it: whether m, the
// smaller of twice the number of nodes and the number of live allocations,
// is still in the range for which the last relayout chose the top.
func (a *Allocator) settled() bool {
	m := min(2*a.nodeCount, a.live)
	return m < a.growAt && m >= a.shrinkAt
}

// relayout moves every node into a new array whose top holds the nodes
// above its depth by their place (see slot). The top has 2^floor(log2 m)
// places, for m as in settled: up to twice as many places as nodes,
// because the level below those a tree of n nodes fills if it is dense is
// worth having (at 10^6 mixed allocations it is 52,000 of the 165,000
// nodes, and a walk there is a dependent load shorter); at most one per
// live allocation, 12 bytes, because in a sparse tree (random /64s, two
// nodes an allocation) that level is mostly empty places. The next
// relayout comes when m has doubled (never, once the top is as deep as it
// goes) or fallen to a quarter: moving the nodes costs O(n), after O(n)
// operations that made or freed nodes.
func (a *Allocator) relayout() {
	m, limit := min(2*a.nodeCount, a.live), min(maxTopDepth, a.d)
	t := min(uint(max(bits.Len(uint(m)), 1))-1, limit)
	a.growAt, a.shrinkAt = 2<<t, 1<<t>>2
	if t == limit {
		a.growAt = math.MaxInt
	}
	old := a.nodes
	a.topDepth = t
	a.top = 1 << t
	a.nodes = make([]node, a.top, int(a.top)+a.nodeCount-a.countAbove(a.root, t))
	for i := 1; i < int(a.top); i++ {
		a.nodes[i].kind = kFreed
	}
	a.freeNodes = 0
	a.root = a.move(old, a.root, a.d, u128{})
}

// countAbove returns the number of nodes above depth t under node n.
func (a *Allocator) countAbove(n int32, t uint) int {
	if n <= 0 || t == 0 {
		return 0
	}
	c := 1
	if nd := &a.nodes[n]; nd.kind == kInternal {
		c += a.countAbove(nd.child[0], t-1) + a.countAbove(nd.child[1], t-1)
	}
	return c
}

// move copies node n of size 2^s at off, and the nodes under it, from old
// into a.nodes and returns its new index.
func (a *Allocator) move(old []node, n int32, s uint, off u128) int32 {
	if n <= 0 {
		return n
	}
	nd := old[n]
	i := a.slot(off, s)
	if i == 0 {
		a.nodes = append(a.nodes, node{})
		i = int32(len(a.nodes) - 1)
	}
	if nd.kind == kInternal {
		nd.child[0] = a.move(old, nd.child[0], s-1, off)
		nd.child[1] = a.move(old, nd.child[1], s-1, off.setBit(s-1))
	}
	a.nodes[i] = nd
	return i
}
