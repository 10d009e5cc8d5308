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

// Package allocbench compares kipam's prefix allocator with Kubernetes' own
// allocators and with a naive allocator, in a module of its own so that the
// main module does not depend on k8s.io/kubernetes. It holds only the naive
// allocator; the comparison is in its benchmarks.
package allocbench

import (
	"errors"
	"fmt"
	"net/netip"

	"go4.org/netipx"
)

// Naive is the obvious correct prefix allocator: it keeps the free
// addresses of its pool as a netipx.IPSet and rebuilds that set on every
// change, so each allocation and release costs time proportional to the
// number of free ranges, that is to the pool's fragmentation.
type Naive struct {
	pool   netip.Prefix
	free   *netipx.IPSet
	allocs map[netip.Prefix]struct{}
}

// NewNaive returns an allocator for pool in which reserved is never handed
// out and allocs are already allocated.
func NewNaive(pool netip.Prefix, reserved, allocs []netip.Prefix) (*Naive, error) {
	if pool != pool.Masked() {
		return nil, fmt.Errorf("pool %v is not canonical", pool)
	}
	n := &Naive{pool: pool, allocs: make(map[netip.Prefix]struct{}, len(allocs))}
	var b netipx.IPSetBuilder
	b.AddPrefix(pool)
	for _, p := range reserved {
		b.RemovePrefix(p)
	}
	for _, p := range allocs {
		if err := n.check(p); err != nil {
			return nil, err
		}
		if _, dup := n.allocs[p]; dup {
			return nil, fmt.Errorf("%v is allocated twice", p)
		}
		n.allocs[p] = struct{}{}
		b.RemovePrefix(p)
	}
	free, err := b.IPSet()
	if err != nil {
		return nil, err
	}
	n.free = free
	return n, nil
}

// AllocateNext allocates the lowest free prefix of length bits.
func (n *Naive) AllocateNext(bits int) (netip.Prefix, error) {
	if bits < n.pool.Bits() || bits > n.pool.Addr().BitLen() {
		return netip.Prefix{}, fmt.Errorf("/%d does not fit in pool %v", bits, n.pool)
	}
	// The minimal prefixes of a range are its largest aligned blocks, in
	// address order, so the first one at least as large as /bits starts the
	// lowest free aligned /bits. (IPSet.RemoveFreePrefix is best fit instead.)
	for _, r := range n.free.Ranges() {
		for _, q := range r.Prefixes() {
			if q.Bits() <= bits {
				p := netip.PrefixFrom(q.Addr(), bits)
				n.remove(p)
				return p, nil
			}
		}
	}
	return netip.Prefix{}, fmt.Errorf("pool %v has no free /%d left", n.pool, bits)
}

// Allocate allocates exactly p.
func (n *Naive) Allocate(p netip.Prefix) error {
	if err := n.check(p); err != nil {
		return err
	}
	if !n.free.ContainsPrefix(p) {
		return fmt.Errorf("%v is not free", p)
	}
	n.remove(p)
	return nil
}

// Release frees the allocation p.
func (n *Naive) Release(p netip.Prefix) error {
	if _, ok := n.allocs[p]; !ok {
		return fmt.Errorf("%v is not allocated", p)
	}
	delete(n.allocs, p)
	var b netipx.IPSetBuilder
	b.AddSet(n.free)
	b.AddPrefix(p)
	free, err := b.IPSet()
	if err != nil {
		return err
	}
	n.free = free
	return nil
}

// Len returns the number of live allocations.
func (n *Naive) Len() int { return len(n.allocs) }

func (n *Naive) check(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("invalid prefix")
	case p != p.Masked():
		return fmt.Errorf("%v is not canonical", p)
	case !n.pool.Contains(p.Addr()) || p.Bits() < n.pool.Bits():
		return fmt.Errorf("%v is outside pool %v", p, n.pool)
	}
	return nil
}

// remove takes p, which must be free, out of the free set.
func (n *Naive) remove(p netip.Prefix) {
	var b netipx.IPSetBuilder
	b.AddSet(n.free)
	b.RemovePrefix(p)
	// The builder only reports invalid inputs, and p is valid.
	n.free, _ = b.IPSet()
	n.allocs[p] = struct{}{}
}
