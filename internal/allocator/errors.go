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
	"fmt"
	"net/netip"
)

// Reasons an operation fails. Errors about one prefix come as a *PrefixError
// wrapping one of these; exhaustion comes as an *ExhaustedError. Test with
// errors.Is.
var (
	// ErrOutsidePool: the prefix or address is not inside the pool.
	ErrOutsidePool = errors.New("outside the pool")
	// ErrOverlap: the prefix overlaps an existing allocation.
	ErrOverlap = errors.New("overlaps an existing allocation")
	// ErrReserved: the prefix overlaps reserved addresses.
	ErrReserved = errors.New("overlaps reserved addresses")
	// ErrNotCanonical: the prefix has address bits set past its length.
	ErrNotCanonical = errors.New("not canonical")
	// ErrWrongFamily: an IPv4 prefix for an IPv6 pool or the reverse.
	ErrWrongFamily = errors.New("wrong address family for the pool")
	// ErrNotAllocated: the prefix is not exactly one allocation.
	ErrNotAllocated = errors.New("not allocated")
	// ErrInvalidLength: the prefix length does not fit in the pool.
	ErrInvalidLength = errors.New("invalid prefix length")
	// ErrExhausted: no free prefix of the requested length is left.
	ErrExhausted = errors.New("pool exhausted")
	// ErrHeld: the prefix overlaps addresses held back after a release.
	ErrHeld = errors.New("overlaps addresses held after a recent release")
)

// PrefixError says why an operation on Prefix failed. Err is one of the
// package's sentinel errors.
type PrefixError struct {
	Prefix netip.Prefix
	Err    error
}

// Error reads like "10.0.0.1/24 is not canonical: use 10.0.0.0/24".
func (e *PrefixError) Error() string {
	if e.Err == ErrNotCanonical {
		return fmt.Sprintf("%s is not canonical: use %s", e.Prefix, e.Prefix.Masked())
	}
	return fmt.Sprintf("%s %s", e.Prefix, e.Err)
}

// Unwrap returns the sentinel error.
func (e *PrefixError) Unwrap() error { return e.Err }

// ExhaustedError says that no free prefix of length Bits is left, and what the
// largest free prefix is (-1 when the pool has no free address).
type ExhaustedError struct {
	Bits, LargestFree int
}

// Error reads like "no free /24 left (largest free prefix /26)".
func (e *ExhaustedError) Error() string {
	if e.LargestFree < 0 {
		return fmt.Sprintf("no free /%d left: no address is free", e.Bits)
	}
	return fmt.Sprintf("no free /%d left (largest free prefix /%d)", e.Bits, e.LargestFree)
}

// Is reports whether target is ErrExhausted.
func (e *ExhaustedError) Is(target error) bool { return target == ErrExhausted }

func prefixErr(p netip.Prefix, err error) error { return &PrefixError{Prefix: p, Err: err} }

// flagErr returns the error for a region containing the state flags f,
// most serious first.
func flagErr(f uint8) error {
	switch {
	case f&fAlloc != 0:
		return ErrOverlap
	case f&fResv != 0:
		return ErrReserved
	case f&fHeld != 0:
		return ErrHeld
	}
	return nil
}
