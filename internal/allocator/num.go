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
	"math/big"
	"math/bits"
)

// u128 is an unsigned 128-bit integer: an address, or an offset into a pool.
type u128 struct{ hi, lo uint64 }

// bit returns bit i (0 = least significant) of x.
func (x u128) bit(i uint) int {
	if i >= 64 {
		return int(x.hi>>(i-64)) & 1
	}
	return int(x.lo>>i) & 1
}

// setBit returns x with bit i set.
func (x u128) setBit(i uint) u128 {
	if i >= 64 {
		x.hi |= 1 << (i - 64)
	} else {
		x.lo |= 1 << i
	}
	return x
}

func (x u128) and(y u128) u128 { return u128{x.hi & y.hi, x.lo & y.lo} }
func (x u128) or(y u128) u128  { return u128{x.hi | y.hi, x.lo | y.lo} }

func (x u128) add(y u128) u128 {
	lo, c := bits.Add64(x.lo, y.lo, 0)
	return u128{x.hi + y.hi + c, lo}
}

func (x u128) less(y u128) bool {
	return x.hi < y.hi || (x.hi == y.hi && x.lo < y.lo)
}

// lsh returns x << n for n < 128.
func (x u128) lsh(n uint) u128 {
	if n >= 64 {
		return u128{x.lo << (n - 64), 0}
	}
	if n == 0 {
		return x
	}
	return u128{x.hi<<n | x.lo>>(64-n), x.lo << n}
}

// rsh returns x >> n for n < 128.
func (x u128) rsh(n uint) u128 {
	if n >= 64 {
		return u128{0, x.hi >> (n - 64)}
	}
	if n == 0 {
		return x
	}
	return u128{x.hi >> n, x.lo>>n | x.hi<<(64-n)}
}

// lowMask returns 2^n - 1 for n <= 128.
func lowMask(n uint) u128 {
	switch {
	case n >= 128:
		return u128{^uint64(0), ^uint64(0)}
	case n >= 64:
		return u128{1<<(n-64) - 1, ^uint64(0)}
	default:
		return u128{0, 1<<n - 1}
	}
}

// count is an unsigned integer of up to 129 bits: it holds every number of
// addresses in an IPv6 /0, 2^128 included.
type count struct{ top, hi, lo uint64 }

// pow2 returns 2^n for n <= 128.
func pow2(n uint) count {
	switch {
	case n >= 128:
		return count{top: 1}
	case n >= 64:
		return count{hi: 1 << (n - 64)}
	default:
		return count{lo: 1 << n}
	}
}

func (x count) add(y count) count {
	lo, c := bits.Add64(x.lo, y.lo, 0)
	hi, c := bits.Add64(x.hi, y.hi, c)
	return count{x.top + y.top + c, hi, lo}
}

func (x count) sub(y count) count {
	lo, b := bits.Sub64(x.lo, y.lo, 0)
	hi, b := bits.Sub64(x.hi, y.hi, b)
	return count{x.top - y.top - b, hi, lo}
}

// lsh returns x << n; the result must fit in 129 bits.
func (x count) lsh(n uint) count {
	for ; n >= 64; n -= 64 {
		x = count{x.hi, x.lo, 0}
	}
	if n == 0 {
		return x
	}
	return count{x.top<<n | x.hi>>(64-n), x.hi<<n | x.lo>>(64-n), x.lo << n}
}

func (x count) less(y count) bool {
	if x.top != y.top {
		return x.top < y.top
	}
	if x.hi != y.hi {
		return x.hi < y.hi
	}
	return x.lo < y.lo
}

// big returns x as a new big.Int.
func (x count) big() *big.Int {
	z := new(big.Int).SetUint64(x.top)
	z.Lsh(z, 64).Or(z, new(big.Int).SetUint64(x.hi))
	z.Lsh(z, 64).Or(z, new(big.Int).SetUint64(x.lo))
	return z
}
