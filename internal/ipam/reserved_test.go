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
	"net/netip"
	"testing"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
)

// TestReservationOverALiveAllocationHoldsForTheRest: a reserved range or
// excluded addresses added to a pool after a prefix inside them was handed
// out keep that prefix where it is and still keep all the rest of their
// space out of circulation (they used to be skipped whole).
func TestReservationOverALiveAllocationHoldsForTheRest(t *testing.T) {
	for _, tc := range []struct {
		name, cidr string
		held       string // handed out before the rule
		rule       func(p *ipamv1alpha1.IPPoolSpec)
		free       []string // what the pool hands out after the rule, in order, until exhausted
		refused    string   // a specific prefix inside the rule, refused as reserved
	}{
		{"reserved", "10.93.0.0/29", "10.93.0.0/32", func(p *ipamv1alpha1.IPPoolSpec) { p.Reserved = []string{"10.93.0.0/30"} },
			[]string{"10.93.0.4/32", "10.93.0.5/32", "10.93.0.6/32", "10.93.0.7/32"}, "10.93.0.2/32"},
		{"excludeFirst", "10.93.0.0/29", "10.93.0.0/32", func(p *ipamv1alpha1.IPPoolSpec) { p.ExcludeFirst = 4 },
			[]string{"10.93.0.4/32", "10.93.0.5/32", "10.93.0.6/32", "10.93.0.7/32"}, "10.93.0.1/32"},
		{"excludeLast", "10.93.0.0/30", "10.93.0.3/32", func(p *ipamv1alpha1.IPPoolSpec) { p.ExcludeLast = 2 },
			[]string{"10.93.0.0/32", "10.93.0.1/32"}, "10.93.0.2/32"},
		{"one excluded at each end, a range reserved", "10.10.0.0/28", "10.10.0.10/32", func(p *ipamv1alpha1.IPPoolSpec) {
			p.ExcludeFirst, p.ExcludeLast, p.Reserved = 1, 1, []string{"10.10.0.1-10.10.0.9"}
		}, []string{"10.10.0.11/32", "10.10.0.12/32", "10.10.0.13/32", "10.10.0.14/32"}, "10.10.0.15/32"},
		{"IPv6 excludeLast", "2001:db8::/126", "2001:db8::3/128", func(p *ipamv1alpha1.IPPoolSpec) { p.ExcludeLast = 2 },
			[]string{"2001:db8::/128", "2001:db8::1/128"}, "2001:db8::2/128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMemStore()
			m := NewManager(s, nil)
			pool := testPool(tc.cidr)
			ctx := context.Background()
			if _, err := m.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix(tc.held), Holder: ClaimHolder("a")}); err != nil {
				t.Fatal(err)
			}
			tc.rule(&pool.Spec)
			pool.Generation++
			var got []string
			for {
				p, err := m.Allocate(ctx, Request{Pool: pool, Bits: netip.MustParsePrefix(tc.cidr).Addr().BitLen(), Holder: ClaimHolder("a")})
				var ex *allocator.ExhaustedError
				if errors.As(err, &ex) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, p.String())
			}
			if len(got) != len(tc.free) {
				t.Fatalf("after the rule the pool handed out %v, want %v", got, tc.free)
			}
			for i := range got {
				if got[i] != tc.free[i] {
					t.Fatalf("after the rule the pool handed out %v, want %v", got, tc.free)
				}
			}
			_, err := m.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix(tc.refused), Holder: ClaimHolder("a")})
			if !errors.Is(err, allocator.ErrReserved) {
				t.Fatalf("asking for %s inside the rule: %v, want ErrReserved", tc.refused, err)
			}
		})
	}
}
