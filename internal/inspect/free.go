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

package inspect

import (
	"fmt"
	"math/big"
	"net/netip"
)

// The free space is asked of the allocator kipam would restore for the
// pool (ipam.Build, with the pool's reserved ranges, exclusions and the
// holds still running at At), on a copy that this package then allocates
// from: so it is exactly what kipam could hand out, and what first fit
// would hand out first.

// Free returns pool's free space as the largest aligned free prefixes,
// largest first and in address order among equals: each one is a block
// the pool could hand out whole, and together they are all it could hand
// out. At most limit of them (0: all). pool may be an address space, whose
// free space is where a top-level pool could go.
func (c *Cluster) Free(pool string, limit int) ([]netip.Prefix, error) {
	_, a, err := c.allocator(pool)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for limit <= 0 || len(out) < limit {
		bits := a.Usage().LargestFree
		if bits < 0 {
			break
		}
		p, err := a.AllocateNext(bits)
		if err != nil {
			return nil, fmt.Errorf("pool %s: taking its largest free prefix /%d: %w", pool, bits, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// Fit returns how many prefixes of length bits pool could hand out now,
// all at once, and the first of them (at most first) in the order first
// fit would hand them out.
func (c *Cluster) Fit(pool string, bits, first int) (*big.Int, []netip.Prefix, error) {
	p, a, err := c.allocator(pool)
	if err != nil {
		return nil, nil, err
	}
	cidr := a.Pool()
	if bits < cidr.Bits() || bits > cidr.Addr().BitLen() {
		return nil, nil, fmt.Errorf("pool %s (%s) holds prefixes from /%d to /%d, not /%d", p.Name, cidr, cidr.Bits(), cidr.Addr().BitLen(), bits)
	}
	n := a.Free(bits)
	var out []netip.Prefix
	for len(out) < first {
		q, err := a.AllocateNext(bits)
		if err != nil {
			break // exhausted: n said how many there were
		}
		out = append(out, q)
	}
	return n, out, nil
}
