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
	"strings"
	"testing"
)

func TestRecordedReadsTheStoredLedger(t *testing.T) {
	ctx := context.Background()
	s := newMemStore()
	m := NewManager(s, nil)
	pool := testPool("10.0.0.0/24")
	check := func(cidr, wantHolder string, wantOK bool) {
		t.Helper()
		e, ok, err := m.Recorded(ctx, pool, netip.MustParsePrefix(cidr))
		holder := e.Holder
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
	// A host lives in a shard (/26 shards for a /24 of hosts).
	if _, err := m.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.70/32"), Holder: ClaimHolder("b")}); err != nil {
		t.Fatal(err)
	}
	check("10.0.0.0/26", "IPClaim/a", true)
	check("10.0.0.0/27", "", false) // inside a recorded prefix, but not itself recorded
	check("10.0.0.64/26", "", false)
	check("10.0.0.70/32", "IPClaim/b", true)
	check("10.0.0.71/32", "", false)
	check("10.0.0.130/32", "", false) // a shard never opened

	// Lose the records behind the manager's back: its allocator still holds
	// the prefixes, the stored ledgers do not.
	s.mu.Lock()
	for _, l := range s.ledgers {
		l.Spec.Allocations = strings.Join(slices.DeleteFunc(strings.SplitAfter(l.Spec.Allocations, "\n"), func(line string) bool {
			return strings.HasPrefix(line, "10.0.0.0/26 ") || strings.HasPrefix(line, "10.0.0.70/32 ")
		}), "")
	}
	s.mu.Unlock()
	check("10.0.0.0/26", "", false)
	check("10.0.0.70/32", "", false)
}
