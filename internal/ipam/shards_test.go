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
	"net/netip"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// shardedRoot is the root ledger of pool, 10.0.0.0/8 of hosts sharded by
// /26, listing n shards, the i-th (numbered i+1) for 10.0.i/26's range.
func shardedRoot(pool string, n int) *ipamv1alpha1.IPLedger {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%s %d\n", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 10), byte(i >> 2), byte(i&3) * 64}), 26), i+1)
	}
	return &ipamv1alpha1.IPLedger{ObjectMeta: metav1.ObjectMeta{Name: pool, UID: "root-uid"},
		Spec: ipamv1alpha1.IPLedgerSpec{Pool: pool, ShardBits: 26, Shards: b.String()}}
}

// A stored root's list of shards is parsed once per version, and a new
// version (or a root of the same name that is another object) is parsed
// again: never an answer from a version the root no longer has.
func TestStoredShardsFollowTheRootsVersion(t *testing.T) {
	root := shardedRoot("shards-memo", 4)
	root.ResourceVersion = "1"
	host := netip.MustParsePrefix("10.0.0.200/32") // in the 4th shard's range
	if name, _, err := docName(root, host); err != nil || name != "shards-memo.4" {
		t.Fatalf("docName = %q, %v; want shards-memo.4", name, err)
	}
	// The same version again: the parsed list, unchanged.
	if name, _, _ := docName(root, host); name != "shards-memo.4" {
		t.Errorf("the same version answered %q, want shards-memo.4", name)
	}
	// A new version lists that range under another shard.
	moved := root.DeepCopy()
	moved.ResourceVersion = "2"
	moved.Spec.Shards = strings.Replace(moved.Spec.Shards, "10.0.0.192/26 4", "10.0.0.192/26 9", 1)
	if name, _, _ := docName(moved, host); name != "shards-memo.9" {
		t.Errorf("a new version answered %q, want shards-memo.9", name)
	}
	// Another object of the root's name, at a resourceVersion the first had.
	other := shardedRoot("shards-memo", 3)
	other.UID, other.ResourceVersion = "other-uid", "2"
	if name, _, _ := docName(other, host); name != "" {
		t.Errorf("another root of the name answered %q, want none (it lists no shard for the range)", name)
	}
	// A root never stored is parsed as it is.
	unstored := shardedRoot("shards-memo", 4)
	unstored.UID = ""
	unstored.Spec.Shards = strings.Replace(unstored.Spec.Shards, "10.0.0.192/26 4", "10.0.0.192/26 7", 1)
	if name, _, _ := docName(unstored, host); name != "shards-memo.7" {
		t.Errorf("a root without a resourceVersion answered %q, want shards-memo.7", name)
	}
}

// BenchmarkLedgerOf is what naming the ledger of one claim's prefix costs
// (every claim's event at a restart asks it) in a pool of 100,000 hosts:
// its root lists about 1,600 shards. The root is read as from an informer's
// cache: a deep copy of the stored object.
//
//	go test ./internal/ipam -run '^$' -bench LedgerOf -benchmem
func BenchmarkLedgerOf(b *testing.B) {
	const shards = 1600
	root := shardedRoot("bench-ledger-of", shards)
	root.ResourceVersion = "1"
	ctx := context.Background()
	i := 0
	for b.Loop() {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i % shards >> 10), byte(i % shards >> 2), byte(i%4)*64 + 1}), 32)
		if name := LedgerOf(ctx, cachedRoot{root}, "bench-ledger-of", p); name == "bench-ledger-of" {
			b.Fatalf("%s: no shard named", p)
		}
		i++
	}
}

// cachedRoot reads one ledger as an informer's cache does: a deep copy.
type cachedRoot struct{ root *ipamv1alpha1.IPLedger }

func (c cachedRoot) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	if key.Name != c.root.Name {
		return apierrors.NewNotFound(ipamv1alpha1.GroupVersion.WithResource("ipledgers").GroupResource(), key.Name)
	}
	c.root.DeepCopyInto(obj.(*ipamv1alpha1.IPLedger))
	return nil
}

func (c cachedRoot) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("not listed")
}
