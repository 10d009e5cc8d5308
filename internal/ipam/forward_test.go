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

package ipam

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"syscall"
	"testing"

	"github.com/kipam/kipam/internal/allocator"
)

// TestForwardedErrorsKeepTheirKind: a claim served by another replica is
// denied with the same message and the same HTTP status as one served here,
// so errors.Is and errors.As must work on what crossed the wire.
func TestForwardedErrorsKeepTheirKind(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.0/24")
	for _, err := range []error{
		&allocator.PrefixError{Prefix: p, Err: allocator.ErrOverlap},
		&allocator.PrefixError{Prefix: netip.MustParsePrefix("10.0.0.1/24"), Err: allocator.ErrNotCanonical},
		&allocator.PrefixError{Prefix: p, Err: allocator.ErrReserved},
		&allocator.PrefixError{Prefix: p, Err: allocator.ErrHeld},
		&allocator.PrefixError{Prefix: p, Err: allocator.ErrOutsidePool},
		&allocator.ExhaustedError{Bits: 24, LargestFree: 26},
		&allocator.ExhaustedError{Bits: 32, LargestFree: -1},
		fmt.Errorf("%w: pool p: could not commit to its ledger: timeout", ErrBusy),
		fmt.Errorf("%w: pool p cannot record another /24", ErrLedgerFull),
		fmt.Errorf("%w: namespace a holds 5 claims from pool p", ErrNamespaceLimit),
		fmt.Errorf("%w: /33 does not fit", allocator.ErrInvalidLength),
		errors.New("something else"),
	} {
		got := decodeErr(encodeErr(err))
		if got.Error() != err.Error() {
			t.Errorf("%v came back as %q", err, got)
		}
		for _, sentinel := range reasons {
			if errors.Is(err, sentinel) != errors.Is(got, sentinel) {
				t.Errorf("%v: errors.Is(%v) = %v before the wire, %v after", err, sentinel, errors.Is(err, sentinel), errors.Is(got, sentinel))
			}
		}
		var before, after *allocator.ExhaustedError
		if errors.As(err, &before) != errors.As(got, &after) || (before != nil && *before != *after) {
			t.Errorf("%v: exhaustion did not survive the wire: %v", err, got)
		}
	}
	if decodeErr(encodeErr(nil)) != nil {
		t.Error("no error came back as one")
	}
}

// TestAForwardedAdoptKnownAdopts: the pool's owner answers a forwarded
// AdoptKnown with the entry it records, not a second one.
func TestAForwardedAdoptKnownAdopts(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.1.0.0/29")
	m := NewManager(s, nil)
	held, err := m.Allocate(context.Background(), Request{Pool: pool, Bits: 32, Holder: AddressClaimHolder("ns"), ID: "held"})
	if err != nil {
		t.Fatal(err)
	}
	res := m.serve(context.Background(), &wireOp{Pool: pool, Bits: 32, Holder: AddressClaimHolder("ns"), ID: "held", AdoptKnown: true})
	if res.Err != nil || res.CIDR != held.String() {
		t.Errorf("the owner answered %+v, want the entry %s", res, held)
	}
	if l := s.ledger(t); len(l.Allocations) != 1 {
		t.Errorf("the pool records %v, want the one entry", l.Allocations)
	}
}

// TestRefusedKnowsAnOwnerGoneBehindAKeptConnection: a forward refused
// outright, or failed on a connection kept from before (EOF, a reset)
// while a fresh one to the same address is refused, is an owner gone; the
// same failure while something listens there, or a timeout, is not.
func TestRefusedKnowsAnOwnerGoneBehindAKeptConnection(t *testing.T) {
	ctx := context.Background()
	live, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	goneAddr := gone.Addr().String()
	_ = gone.Close()
	post := func(err error) error { return &url.Error{Op: "Post", URL: "https://owner" + ForwardPath, Err: err} }
	for _, c := range []struct {
		name string
		err  error
		addr string
		want bool
	}{
		{"refused", post(syscall.ECONNREFUSED), goneAddr, true},
		{"EOF, nothing listens", post(io.EOF), goneAddr, true},
		{"reset, nothing listens", post(syscall.ECONNRESET), goneAddr, true},
		{"EOF, something listens", post(io.EOF), live.Addr().String(), false},
		{"a timeout", post(context.DeadlineExceeded), goneAddr, false},
	} {
		if got := refused(ctx, c.err, c.addr); got != c.want {
			t.Errorf("%s: refused = %v, want %v", c.name, got, c.want)
		}
	}
}
