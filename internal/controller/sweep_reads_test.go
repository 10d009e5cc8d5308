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
	"context"
	"fmt"
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// waitingFromIndexer lists the waiting claims of a namespace from an
// indexer, as the cache's waiting index would, calling onList first.
type waitingFromIndexer struct {
	client.Client
	idx    toolscache.Indexer
	onList func(namespace string)
}

func (w *waitingFromIndexer) List(_ context.Context, l client.ObjectList, opts ...client.ListOption) error {
	o := &client.ListOptions{}
	o.ApplyOptions(opts)
	w.onList(o.Namespace)
	list := l.(*ipamv1alpha1.IPClaimList)
	for _, x := range w.idx.List() {
		if c := x.(*ipamv1alpha1.IPClaim); c.Namespace == o.Namespace && ipam.Waiting(c) {
			list.Items = append(list.Items, *c.DeepCopy())
		}
	}
	return nil
}

// TestSweepReadsSeeAClaimBindMidSweep: a sweep reads each block of the
// holdings index and each namespace's waiting claims once (cacheReads).
// A claim that binds while the sweep is under way, after the sweep read
// its block for another namespace's entry, is still seen to carry its
// entry: in the waiting list, or in the block read with it.
func TestSweepReadsSeeAClaimBindMidSweep(t *testing.T) {
	idx := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{indexPoolCIDR: holdingBlocks})
	a := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: "a", UID: "uid-a"}, Spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: "10.0.0.1/32"}}
	c := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns2", Name: "c", UID: "uid-c"}, Spec: ipamv1alpha1.IPClaimSpec{Pool: "p"}}
	for _, o := range []*ipamv1alpha1.IPClaim{a, c} {
		if err := idx.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	bind := func(namespace string) {
		if namespace == "ns2" { // c's bind reaches the cache as the sweep reads ns2's waiting claims
			bound := c.DeepCopy()
			bound.Spec.CIDR = "10.0.0.2/32"
			if err := idx.Update(bound); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := &IPLedgerReconciler{Client: &waitingFromIndexer{idx: idx, onList: bind}, Holdings: &holdings{indexer: idx}}
	reads := cacheReads{}
	pa, ea := netip.MustParsePrefix("10.0.0.1/32"), ipam.Entry{Holder: ipam.ClaimHolder("ns1"), ID: "uid-a"}
	if ok, err := r.carriedInCache(context.TODO(), "p", pa, ea, reads); !ok || err != nil {
		t.Fatalf("a's entry: carried %t, %v", ok, err)
	}
	pc, ec := netip.MustParsePrefix("10.0.0.2/32"), ipam.Entry{Holder: ipam.ClaimHolder("ns2"), ID: "uid-c"}
	if ok, err := r.carriedInCache(context.TODO(), "p", pc, ec, reads); !ok || err != nil {
		t.Errorf("c's entry, c bound during the sweep: carried %t, %v; want carried", ok, err)
	}
}

// countingIndexer counts the reads of the holdings index.
type countingIndexer struct {
	toolscache.Indexer
	byIndex int
}

func (c *countingIndexer) ByIndex(name, value string) ([]any, error) {
	c.byIndex++
	return c.Indexer.ByIndex(name, value)
}

// TestASweepPastTheGraceReadsEachBlockOnce: every entry past the grace is
// looked up again (held), and a shard's entries share a block of the
// holdings index. They share its read: read once per entry, a sweep of a
// full shard listed 64 times 256 claims.
func TestASweepPastTheGraceReadsEachBlockOnce(t *testing.T) {
	idx := &countingIndexer{Indexer: toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{indexPoolCIDR: holdingBlocks})}
	type held struct {
		p netip.Prefix
		e ipam.Entry
	}
	var entries []held
	for i := range 64 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32)
		uid := fmt.Sprintf("uid-%d", i)
		c := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: fmt.Sprint("c", i), UID: types.UID(uid)},
			Spec: ipamv1alpha1.IPClaimSpec{Pool: "p", CIDR: p.String()}}
		if err := idx.Add(c); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, held{p, ipam.Entry{Holder: ipam.ClaimHolder("ns1"), ID: uid}})
	}
	r := &IPLedgerReconciler{Client: &waitingFromIndexer{idx: idx, onList: func(string) {}}, Holdings: &holdings{indexer: idx}}
	again, live := cacheReads{}, newLiveClaims("p", nil)
	for _, h := range entries {
		if ok, err := r.held(context.TODO(), "p", h.p, h.e, again, live); !ok || err != nil {
			t.Fatalf("%s: held %t, %v", h.p, ok, err)
		}
	}
	if idx.byIndex != 1 {
		t.Errorf("64 entries of one block read it %d times, want once", idx.byIndex)
	}
}
