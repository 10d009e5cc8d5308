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

import "math/bits"

// State flags of an address. An allocated address is never reserved or held;
// reserved and held may overlap.
const (
	fAlloc uint8 = 1 << iota
	fResv
	fHeld
	// Node kinds besides uniform ones (whose kind is their non-zero flags).
	kLeaf
	kInternal
	kFreed
	kStruct = kLeaf | kInternal
)

// node is one aligned block of the pool, the block of size 2^s that its
// position in the tree gives it. Index 0 is nil: an absent node is a wholly
// free block.
//
// Invariants (checked by the tests after every operation):
//   - kind is kInternal (child holds the two halves; at least one non-nil),
//     kLeaf (child[0] indexes Allocator.leaves; only at s == leafS), or a
//     non-zero set of flags: every address of the block has exactly those
//     flags, and a uniform fAlloc block is exactly one allocation.
//   - free is the largest free aligned block in the subtree as log2(size)+1,
//     0 for none; a non-nil node is never wholly free, so free <= s.
//   - any is the union of the flags present in the subtree.
type node struct {
	child [2]int32
	kind  uint8
	any   uint8
	free  uint8
}

// leaf is the bitmap of the 2^leafS (at most 64) addresses of a leaf node.
// An allocation inside a leaf sets its bits in alloc and its first bit in
// start, so allocation boundaries survive without a per-allocation record.
type leaf struct {
	alloc, start, resv, held uint64
}

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

func (l *leaf) freeBits(full uint64) uint64 { return ^(l.alloc | l.resv | l.held) & full }

func (l *leaf) flags() uint8 {
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

// newNode returns the index of a node set to nd. It may grow a.nodes, so
// callers must not keep pointers into it across the call.
func (a *Allocator) newNode(nd node) int32 {
	if i := a.freeNodes; i != 0 {
		a.freeNodes = a.nodes[i].child[0]
		a.nodes[i] = nd
		return i
	}
	a.nodes = append(a.nodes, nd)
	return int32(len(a.nodes) - 1)
}

func (a *Allocator) freeNode(i int32) {
	if a.nodes[i].kind == kLeaf {
		a.freeLeaf(a.nodes[i].child[0])
	}
	a.nodes[i] = node{child: [2]int32{a.freeNodes, 0}, kind: kFreed}
	a.freeNodes = i
}

func (a *Allocator) newLeaf(l leaf) int32 {
	if i := a.freeLeaves; i != 0 {
		a.freeLeaves = int32(a.leaves[i].alloc)
		a.leaves[i] = l
		return i
	}
	a.leaves = append(a.leaves, l)
	return int32(len(a.leaves) - 1)
}

func (a *Allocator) freeLeaf(i int32) {
	a.leaves[i] = leaf{alloc: uint64(a.freeLeaves)}
	a.freeLeaves = i
}

// newLeafNode returns a leaf node whose addresses all have flags f.
func (a *Allocator) newLeafNode(f uint8) int32 {
	l := a.uniformLeaf(f)
	li := a.newLeaf(l)
	return a.newNode(node{child: [2]int32{li, 0}, kind: kLeaf, any: l.flags(), free: leafMaxFree(l.freeBits(a.full))})
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

// freeOf returns the free field of node n of size 2^s.
func (a *Allocator) freeOf(n int32, s uint) uint8 {
	if n == 0 {
		return uint8(s + 1)
	}
	return a.nodes[n].free
}

// refresh recomputes free and any of internal node n of size 2^s from its
// children and reports whether they changed.
func (a *Allocator) refresh(n int32, s uint) bool {
	nd := &a.nodes[n]
	c0, c1 := nd.child[0], nd.child[1]
	f := a.freeOf(c0, s-1)
	if f1 := a.freeOf(c1, s-1); f1 > f {
		f = f1
	}
	var any uint8
	if c0 != 0 {
		any = a.nodes[c0].any
	}
	if c1 != 0 {
		any |= a.nodes[c1].any
	}
	if nd.free == f && nd.any == any {
		return false
	}
	nd.free, nd.any = f, any
	return true
}

// refreshLeaf recomputes free and any of leaf node n.
func (a *Allocator) refreshLeaf(n int32) bool {
	nd := &a.nodes[n]
	l := &a.leaves[nd.child[0]]
	f, any := leafMaxFree(l.freeBits(a.full)), l.flags()
	if nd.free == f && nd.any == any {
		return false
	}
	nd.free, nd.any = f, any
	return true
}

// normLeaf restores the invariants of leaf node n after its bits changed:
// an empty leaf goes away, a leaf without allocations whose bits are
// uniform becomes a uniform node. It returns the node's new index.
func (a *Allocator) normLeaf(n int32) int32 {
	l := a.leaves[a.nodes[n].child[0]]
	if l.alloc == 0 && (l.resv == 0 || l.resv == a.full) && (l.held == 0 || l.held == a.full) {
		f := l.flags()
		if f == 0 {
			a.freeNode(n)
			return 0
		}
		a.freeLeaf(a.nodes[n].child[0])
		a.nodes[n] = node{kind: f, any: f}
		return n
	}
	a.refreshLeaf(n)
	return n
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
		k0, k1 := a.nodes[c0].kind, a.nodes[c1].kind
		if k0 == k1 && k0&(kStruct|fAlloc) == 0 {
			a.freeNode(c0)
			a.freeNode(c1)
			a.nodes[n] = node{kind: k0, any: k0}
			return n
		}
	}
	a.refresh(n, s)
	return n
}

// regionFlags returns the flags present in the block of size 2^k at off.
func (a *Allocator) regionFlags(off u128, k uint) uint8 {
	n, s := a.root, a.d
	for n != 0 {
		nd := &a.nodes[n]
		if nd.kind&kStruct == 0 {
			return nd.kind
		}
		if s == k {
			return nd.any
		}
		if nd.kind == kLeaf {
			l := &a.leaves[nd.child[0]]
			m := runMask(k) << (off.lo & (1<<a.leafS - 1))
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
		n = nd.child[off.bit(s-1)]
		s--
	}
	return 0
}

// firstFit returns the lowest free aligned block of size 2^k.
func (a *Allocator) firstFit(k uint) (u128, bool) {
	need := uint8(k + 1)
	n, s := a.root, a.d
	var off u128
	if a.freeOf(n, s) < need {
		return off, false
	}
	for n != 0 {
		nd := &a.nodes[n]
		if nd.kind == kLeaf {
			m := fitMask(a.leaves[nd.child[0]].freeBits(a.full), k)
			off.lo |= uint64(bits.TrailingZeros64(m))
			return off, true
		}
		// nd is internal: a uniform node has free == 0.
		if c := nd.child[0]; c == 0 || a.nodes[c].free >= need {
			n = c
		} else {
			n = nd.child[1]
			off = off.setBit(s - 1)
		}
		s--
	}
	return off, true
}

// maxDepth bounds the depth of the tree: one level per address bit.
const maxDepth = 129

// insert marks the free block of size 2^k at off as one allocation.
func (a *Allocator) insert(off u128, k uint) {
	var path [maxDepth]int32
	depth := 0
	n, s := a.root, a.d
	// link hangs node m where n hung: under path[depth-1] or at the root.
	link := func(m int32) {
		if depth == 0 {
			a.root = m
		} else {
			a.nodes[path[depth-1]].child[off.bit(s)] = m
		}
	}
	for {
		if s == k {
			link(a.newNode(node{kind: fAlloc, any: fAlloc}))
			break
		}
		if s == a.leafS {
			if n == 0 {
				n = a.newLeafNode(0)
				link(n)
			}
			l := &a.leaves[a.nodes[n].child[0]]
			o := off.lo & (1<<a.leafS - 1)
			l.alloc |= runMask(k) << o
			l.start |= 1 << o
			a.refreshLeaf(n)
			break
		}
		if n == 0 {
			n = a.newNode(node{kind: kInternal, free: uint8(s + 1)})
			link(n)
		}
		path[depth] = n
		depth++
		n = a.nodes[n].child[off.bit(s-1)]
		s--
	}
	for ; depth > 0; depth-- {
		if !a.refresh(path[depth-1], s+1) {
			break
		}
		s++
	}
	a.live++
	a.allocated = a.allocated.add(pow2(k))
}

// remove releases the allocation of size 2^k at off and reports whether
// there was exactly such an allocation.
func (a *Allocator) remove(off u128, k uint) bool {
	var path [maxDepth]int32
	depth := 0
	n, s := a.root, a.d
	for s > k && s > a.leafS {
		if n == 0 || a.nodes[n].kind != kInternal {
			return false
		}
		path[depth] = n
		depth++
		n = a.nodes[n].child[off.bit(s-1)]
		s--
	}
	if n == 0 {
		return false
	}
	var m int32 // n's replacement
	relink := true
	if s == k {
		if a.nodes[n].kind != fAlloc {
			return false
		}
		a.freeNode(n)
	} else {
		if a.nodes[n].kind != kLeaf {
			return false
		}
		l := &a.leaves[a.nodes[n].child[0]]
		o := off.lo & (1<<a.leafS - 1)
		if l.start&(1<<o) == 0 {
			return false
		}
		cont := (l.alloc &^ l.start) >> (o + 1)
		if o == 63 {
			cont = 0
		}
		if bits.TrailingZeros64(^cont) != 1<<k-1 {
			return false
		}
		l.alloc &^= runMask(k) << o
		l.start &^= 1 << o
		m = a.normLeaf(n)
		relink = m != n || a.nodes[n].kind != kLeaf
	}
	// Walk back up. While a node was replaced (deleted or made uniform) its
	// parent is relinked and normalized; after that, ancestors are
	// refreshed until one does not change.
	for depth > 0 {
		p := path[depth-1]
		s++
		if relink {
			a.nodes[p].child[off.bit(s-1)] = m
			m = a.normInternal(p, s)
			relink = m != p || a.nodes[p].kind != kInternal
		} else if !a.refresh(p, s) {
			break
		}
		depth--
	}
	if depth == 0 && relink {
		a.root = m
	}
	a.live--
	a.allocated = a.allocated.sub(pow2(k))
	return true
}
