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

package controller

import (
	"fmt"
	"runtime"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// heldClaim is a claim named name in ns holding cidr from pool (and
// second from secondPool when set: dual-stack).
func heldClaim(ns, name, pool, cidr, secondPool, second string) *ipamv1alpha1.IPClaim {
	c := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name),
		Annotations: map[string]string{ipam.PoolAnnotation: pool, ipam.EntryAnnotation: "e-" + name}},
		Spec: ipamv1alpha1.IPClaimSpec{Pool: pool, CIDR: cidr}}
	if second != "" {
		c.Spec.IPFamilyPolicy = ipamv1alpha1.RequireDualStack
		c.Spec.CIDRs = []string{cidr, second}
		c.Annotations[ipam.SecondaryPoolAnnotation] = secondPool
	}
	return c
}

// newHoldings is the holdings index over a store of claims, as the
// manager's informer of IPClaims keeps it.
func newHoldings(t testing.TB, claims ...*ipamv1alpha1.IPClaim) *holdings {
	t.Helper()
	idx := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{indexPoolCIDR: holdingBlocks})
	for _, c := range claims {
		if err := idx.Add(ipam.RecordClaim(c.DeepCopy())); err != nil {
			t.Fatal(err)
		}
	}
	return &holdings{indexer: idx}
}

// TestHoldingsFindExactly: a look-up finds the claims that hold exactly
// that cidr from that pool (in that namespace, when one is given), not
// their neighbours in the same block, another pool's, or a longer or
// shorter prefix at the same address.
func TestHoldingsFindExactly(t *testing.T) {
	h := newHoldings(t,
		heldClaim("ns1", "a", "p", "10.251.0.1/32", "", ""),
		heldClaim("ns2", "b", "p", "10.251.0.2/32", "", ""),
		heldClaim("ns1", "c", "q", "10.251.0.1/32", "", ""),
		heldClaim("ns1", "d", "p", "10.251.0.0/24", "", ""),
		heldClaim("ns1", "e", "p", "10.251.1.1/32", "p6", "fd00:251::/64"),
		heldClaim("ns2", "f", "p", "10.251.0.1/32", "", ""), // a duplicate, as the sweep must see it
		heldClaim("ns1", "g", "p", "not-a-cidr", "", ""),
		heldClaim("ns1", "w", "p", "", "", ""), // waiting: holds nothing
	)
	for _, c := range []struct {
		pool, cidr, ns string
		want           []string
	}{
		{"p", "10.251.0.1/32", "", []string{"a", "f"}},
		{"p", "10.251.0.1/32", "ns1", []string{"a"}},
		{"p", "10.251.0.2/32", "ns1", nil},
		{"p", "10.251.0.2/32", "", []string{"b"}},
		{"q", "10.251.0.1/32", "", []string{"c"}},
		{"p", "10.251.0.0/24", "", []string{"d"}},
		{"p", "10.251.0.0/32", "", nil},
		{"p6", "fd00:251::/64", "", []string{"e"}},
		{"p", "fd00:251::/64", "", nil},
		{"p", "10.251.1.1/32", "ns1", []string{"e"}},
		{"p", "not-a-cidr", "", []string{"g"}},
	} {
		claims, err := h.claims(c.pool, c.cidr, c.ns)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, cl := range claims {
			got = append(got, cl.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("claims holding %s from %s in %q: %v, want %v", c.cidr, c.pool, c.ns, got, c.want)
		}
	}
}

// TestHoldingsIndexCost reports what the holdings index costs per live
// claim, and fails when it costs a set per claim again (about 300 bytes
// each) instead of a place in its block's:
//
//	go test ./internal/controller -run TestHoldingsIndexCost -v
func TestHoldingsIndexCost(t *testing.T) {
	const n = 10000
	claims := make([]*ipam.ClaimRecord, n)
	for i := range claims {
		claims[i] = ipam.RecordClaim(heldClaim("default", fmt.Sprintf("load-%05d", i), "scale", fmt.Sprintf("10.252.%d.%d/32", i/256, i%256), "", ""))
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	plain := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{})
	for _, c := range claims {
		if err := plain.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	store := heap() - before
	before = heap()
	h := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{indexPoolCIDR: holdingBlocks})
	for _, c := range claims {
		if err := h.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	indexed := heap() - before
	runtime.KeepAlive(plain)
	runtime.KeepAlive(h)
	cost := (int64(indexed) - int64(store)) / n
	t.Logf("the holdings index: %d B a claim (the store without it: %d B a claim)", cost, store/n)
	if cost > 100 {
		t.Errorf("the holdings index costs %d B a claim: a set per claim again?", cost)
	}
}
