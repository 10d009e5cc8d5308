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
	"fmt"
	"net/netip"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// Recorded reports whether pool's ledger, as stored now, records exactly
// cidr, and as which entry. It reads through the Store, never a cache or
// this process's allocator, so that a record lost or never made (a claim
// restored with the webhook bypassed) is seen as missing. A pool without a
// ledger records nothing.
func (m *Manager) Recorded(ctx context.Context, pool *ipamv1alpha1.IPPool, cidr netip.Prefix) (Entry, bool, error) {
	return lookup(ctx, m.store.Get, pool.Name, cidr)
}

// LookupEntry returns the entry pool's ledger records for exactly cidr, as
// r holds it: it reads the root and the one shard cidr belongs in.
func LookupEntry(ctx context.Context, r client.Reader, pool string, cidr netip.Prefix) (Entry, bool, error) {
	return lookup(ctx, func(ctx context.Context, name string) (*ipamv1alpha1.IPLedger, error) {
		var l ipamv1alpha1.IPLedger
		if err := r.Get(ctx, client.ObjectKey{Name: name}, &l); err != nil {
			return nil, err
		}
		return &l, nil
	}, pool, cidr)
}

func lookup(ctx context.Context, get func(context.Context, string) (*ipamv1alpha1.IPLedger, error), pool string, cidr netip.Prefix) (Entry, bool, error) {
	read := func(name string) (*ipamv1alpha1.IPLedger, error) {
		l, err := get(ctx, name)
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading the ledger %s of pool %s: %w", name, pool, err)
		}
		return l, nil
	}
	root, err := read(pool)
	if root == nil {
		return Entry{}, false, err
	}
	doc := root
	name, listed, err := docName(root, cidr)
	switch {
	case err != nil:
		return Entry{}, false, err
	case name == "":
		return Entry{}, false, nil
	case name != root.Name:
		shard, err := read(name)
		if shard == nil || !ownShard(root, shard, listed) {
			return Entry{}, false, err
		}
		doc = shard
	}
	allocs, err := Entries(doc)
	if err != nil {
		return Entry{}, false, err
	}
	e, ok := allocs[cidr]
	return e, ok, nil
}

// docName names the ledger object under root, as stored, that records
// cidr: the root, or the shard the root lists for cidr's range ("" when it
// lists none), with the root's list of shards (storedShards: shared, read
// only).
func docName(root *ipamv1alpha1.IPLedger, cidr netip.Prefix) (string, map[netip.Prefix]int64, error) {
	bits := int(root.Spec.ShardBits)
	if bits == 0 || cidr.Bits() <= bits {
		return root.Name, nil, nil
	}
	listed, err := storedShards(root)
	if err != nil {
		return "", nil, fmt.Errorf("ledger %s: spec.shards: %w", root.Name, err)
	}
	n, ok := listed[netip.PrefixFrom(cidr.Addr(), bits).Masked()]
	if !ok {
		return "", listed, nil
	}
	return ShardName(root.Spec.Pool, n), listed, nil
}

// LedgerOf names the ledger object of pool that records, or would record,
// cidr, as r holds the pool's root: the shard listed for cidr's range, else
// the root.
func LedgerOf(ctx context.Context, r client.Reader, pool string, cidr netip.Prefix) string {
	var root ipamv1alpha1.IPLedger
	if err := r.Get(ctx, client.ObjectKey{Name: pool}, &root); err != nil {
		return pool
	}
	if name, _, err := docName(&root, cidr); err == nil && name != "" {
		return name
	}
	return pool
}
