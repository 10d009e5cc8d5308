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
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

func TestHolderNamespace(t *testing.T) {
	for holder, want := range map[string]string{
		"IPClaim/team-a":        "team-a",
		"IPAddressClaim/team-a": "team-a",
		"IPPool/team-a":         "",
		"retained":              "",
	} {
		ns, ok := HolderNamespace(holder)
		if ns != want || ok != (want != "") {
			t.Errorf("HolderNamespace(%q) = %q, %v; want %q", holder, ns, ok, want)
		}
	}
}

// A namespace's IPClaims and IPAddressClaims share a pool's
// namespaceLimit, both count as claims, and an IPAddressClaim that asks
// again by its uid gets the address already committed for it.
func TestAddressClaimsShareTheNamespaceLimit(t *testing.T) {
	s := newMemStore()
	clock := func() time.Time { return time.Unix(1_700_000_000, 0) }
	pool := testPool("10.0.0.0/24")
	pool.Spec.NamespaceLimit = &ipamv1alpha1.NamespaceLimit{Claims: ptr.To[int32](2)}
	ctx := context.Background()
	m := NewManager(s, clock)
	if _, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a")}); err != nil {
		t.Fatal(err)
	}
	machine, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: AddressClaimHolder("a"), ID: "uid-1", Adopt: true})
	if err != nil {
		t.Fatal(err)
	}
	again, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: AddressClaimHolder("a"), ID: "uid-1", Adopt: true})
	if err != nil || again != machine {
		t.Fatalf("the same claim asking again got %s, %v; want %s", again, err, machine)
	}
	for _, m := range []*Manager{m, NewManager(s, clock)} { // and a new owner, from the ledger
		_, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: AddressClaimHolder("a"), ID: "uid-2", Adopt: true})
		if !errors.Is(err, ErrNamespaceLimit) || !strings.Contains(err.Error(), "namespace a holds 2 claims") {
			t.Errorf("a third claim of namespace a, limited to 2: %v", err)
		}
		if _, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a")}); !errors.Is(err, ErrNamespaceLimit) {
			t.Errorf("an IPClaim of namespace a past its limit: %v", err)
		}
	}
	if _, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: AddressClaimHolder("b"), ID: "uid-3"}); err != nil {
		t.Errorf("namespace b: %v", err)
	}
	snap, ok := m.Snapshot(pool.Name)
	if !ok || snap.Claims != 3 || snap.ChildPools != 0 {
		t.Errorf("the pool's snapshot counts %+v; want 3 claims", snap)
	}
	if _, err := m.Release(ctx, pool, machine, AddressClaimHolder("a"), "uid-1", 0, nil); err != nil {
		t.Fatal(err)
	}
	if p, err := m.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.200/32"), Bits: 32, Holder: AddressClaimHolder("a"), ID: "uid-2"}); err != nil {
		t.Errorf("after a release in namespace a: %s, %v", p, err)
	}
}
