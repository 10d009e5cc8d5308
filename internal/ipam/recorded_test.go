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
	"net/netip"
	"slices"
	"testing"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

func TestRecordedReadsTheStoredLedger(t *testing.T) {
	ctx := context.Background()
	s := newMemStore()
	m := NewManager(s, nil)
	pool := testPool("10.0.0.0/24")
	check := func(cidr, wantHolder string, wantOK bool) {
		t.Helper()
		holder, ok, err := m.Recorded(ctx, pool, netip.MustParsePrefix(cidr))
		if err != nil {
			t.Fatal(err)
		}
		if holder != wantHolder || ok != wantOK {
			t.Errorf("Recorded(%s) = %q, %v; want %q, %v", cidr, holder, ok, wantHolder, wantOK)
		}
	}
	check("10.0.0.0/26", "", false) // no ledger yet

	if _, err := m.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.0/26"), Holder: ClaimHolder("a")}); err != nil {
		t.Fatal(err)
	}
	check("10.0.0.0/26", "IPClaim/a", true)
	check("10.0.0.0/27", "", false) // inside a recorded prefix, but not itself recorded
	check("10.0.0.64/26", "", false)

	// Lose the record behind the manager's back: its allocator still holds
	// the prefix, the stored ledger does not.
	s.mu.Lock()
	l := s.ledgers["p"]
	l.Spec.Allocations = slices.DeleteFunc(l.Spec.Allocations, func(e ipamv1alpha1.LedgerEntry) bool { return e.CIDR == "10.0.0.0/26" })
	s.mu.Unlock()
	check("10.0.0.0/26", "", false)
}
