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
	"maps"
	"net/netip"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// TestVersionsOnTheAPIServer: ClientStore reads a pool's ledgers' versions
// by a list and by name alike, on a real API server: the list finds the
// pool's ledgers, the reads by name the ledgers named, another pool's too,
// and not one that is not stored.
func TestVersionsOnTheAPIServer(t *testing.T) {
	c := apiServer(t)
	ctx := context.Background()
	s := ClientStore{Reader: c, Writer: c}
	m := NewManager(s, nil)
	var pools []*ipamv1alpha1.IPPool
	for _, cidr := range []string{"10.0.0.0/25", "10.0.1.0/30"} {
		pool := &ipamv1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Name: "p" + netip.MustParsePrefix(cidr).Addr().String(), Finalizers: []string{ipamv1alpha1.PoolFinalizer}},
			Spec:       ipamv1alpha1.IPPoolSpec{CIDR: cidr},
		}
		if err := c.Create(ctx, pool); err != nil {
			t.Fatal(err)
		}
		placeTop(t, m, pool)
		pools = append(pools, pool)
	}
	// Hosts of the /25 go to /26 shards: two of them, and the root.
	for _, host := range []string{"10.0.0.1/32", "10.0.0.65/32", "10.0.1.1/32"} {
		p := netip.MustParsePrefix(host)
		pool := pools[0]
		if !netip.MustParsePrefix(pool.Spec.CIDR).Contains(p.Addr()) {
			pool = pools[1]
		}
		if _, err := m.Allocate(ctx, Request{Pool: pool, CIDR: p, Bits: 32, Holder: ClaimHolder("ns")}); err != nil {
			t.Fatal(err)
		}
	}
	listed, err := s.Versions(ctx, pools[0].Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 3 {
		t.Fatalf("listed %v, want the root and two shards", listed)
	}
	names := append(slices.Collect(maps.Keys(listed)), pools[1].Name, ShardName(pools[0].Name, 99))
	byName, err := s.Versions(ctx, pools[0].Name, names)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Versions(ctx, pools[1].Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(listed)
	maps.Copy(want, other)
	if len(other) != 1 || !maps.Equal(byName, want) {
		t.Errorf("read by name %v (of %v), want %v: this pool's three and the other's root, not the ledger not stored", byName, names, want)
	}
}
