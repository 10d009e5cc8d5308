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

// Package netutil parses the address notations of the kipam API into
// net/netip values. It has no Kubernetes imports.
package netutil

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"

	"go4.org/netipx"
)

// ParsePrefix parses a canonical CIDR: one whose address has no bits set past
// the prefix length and that is written the way netip prints it.
func ParsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not a CIDR: %w", err)
	}
	if p.Addr().Is4In6() {
		if p.Bits() >= 96 {
			return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix, which kipam does not serve: write the IPv4 prefix %s",
				s, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked())
		}
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 address with a prefix shorter than /96, which kipam does not serve", s)
	}
	if m := p.Masked(); m != p || m.String() != s {
		return netip.Prefix{}, fmt.Errorf("%q is not canonical: write %s", s, m)
	}
	return p, nil
}

// ParseRange parses an entry of an IPPool's reserved list: a canonical CIDR
// or an inclusive range "first-last".
func ParseRange(s string) (netipx.IPRange, error) {
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err := netip.ParseAddr(first)
		if err != nil {
			return netipx.IPRange{}, fmt.Errorf("range start: %w", err)
		}
		b, err := netip.ParseAddr(last)
		if err != nil {
			return netipx.IPRange{}, fmt.Errorf("range end: %w", err)
		}
		if a.Is4() != b.Is4() {
			return netipx.IPRange{}, fmt.Errorf("range %s mixes IPv4 and IPv6", s)
		}
		r := netipx.IPRangeFrom(a, b)
		if !r.IsValid() {
			return netipx.IPRange{}, fmt.Errorf("range %s ends before it starts", s)
		}
		return r, nil
	}
	p, err := ParsePrefix(s)
	if err != nil {
		return netipx.IPRange{}, err
	}
	return netipx.RangeOfPrefix(p), nil
}

// Family returns "IPv4" or "IPv6" for an address.
func Family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// Size returns how many addresses a prefix spans.
func Size(p netip.Prefix) *big.Int {
	return new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
}

// Step returns the address n addresses from a towards toward, or toward
// if that is fewer than n away.
func Step(a netip.Addr, n uint64, toward netip.Addr) netip.Addr {
	from, to := addrInt(a), addrInt(toward)
	d := new(big.Int).SetUint64(n)
	down := to.Cmp(from) < 0
	if down {
		d.Neg(d)
	}
	next := from.Add(from, d)
	if (!down && next.Cmp(to) > 0) || (down && next.Cmp(to) < 0) {
		return toward
	}
	var b [16]byte
	next.FillBytes(b[:])
	out := netip.AddrFrom16(b)
	if a.Is4() {
		out = out.Unmap()
	}
	return out
}

func addrInt(a netip.Addr) *big.Int {
	b := a.As16()
	return new(big.Int).SetBytes(b[:])
}
