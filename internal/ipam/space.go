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
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/netutil"
)

// A pool is itself an allocation one level up (docs/design.md, "Pools in
// the fence"): a child pool's prefix is an entry in its parent's ledger,
// and a top-level pool's an entry in its family's address space, a pool
// that exists only in kipam, spans the whole family and has a ledger like
// any other. Both are committed by the same compare-and-swap as a claim's
// prefix, so no two pools, and no pool and claim, ever overlap, whatever
// replica served each request.

// The names of the two address spaces, and of their ledgers. The IPPool
// CRD refuses every name containing SpaceSuffix as a pool name, so that no
// pool's ledger can take a space's or one of its shards' names.
const (
	SpaceSuffix = ".space.kipam.dev"
	SpaceIPv4   = "ipv4" + SpaceSuffix
	SpaceIPv6   = "ipv6" + SpaceSuffix
)

// PoolHolderPrefix starts the ledger holder of every pool's prefix.
const PoolHolderPrefix = "IPPool/"

// PoolHolder is the ledger holder of pool name's prefix in its parent.
func PoolHolder(name string) string { return PoolHolderPrefix + name }

// PoolEntryID is the ID of the entry that records pool's prefix in its
// parent's ledger: the entry annotation kipam's webhook set when it
// committed it, else the pool's uid (a pool adopted at startup).
func PoolEntryID(pool *ipamv1alpha1.IPPool) string {
	if id := pool.Annotations[EntryAnnotation]; id != "" {
		return id
	}
	return string(pool.UID)
}

// IsSpace reports whether name is one of the two address spaces.
func IsSpace(name string) bool { return name == SpaceIPv4 || name == SpaceIPv6 }

// Space is the address space of the family of addr: a pool of 0.0.0.0/0
// or ::/0 whose allocations are the top-level pools. It has no uid: it is
// never deleted, and its ledger belongs to no object.
func Space(addr netip.Addr) *ipamv1alpha1.IPPool {
	name, cidr, bits := SpaceIPv6, "::/0", int32(64)
	if addr.Is4() {
		name, cidr, bits = SpaceIPv4, "0.0.0.0/0", 24
	}
	return &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		// Shards hold 64 pools of the family's usual size or smaller.
		Spec: ipamv1alpha1.IPPoolSpec{CIDR: cidr, DefaultPrefixLength: &bits, Strategy: ipamv1alpha1.FirstFit},
	}
}

// ParentOf names the pool that pool's prefix is allocated from: its
// spec.parentPool, else the address space of its family ("" for a pool
// without a valid cidr or parent).
func ParentOf(pool *ipamv1alpha1.IPPool) string {
	if pool.Spec.ParentPool != "" {
		return pool.Spec.ParentPool
	}
	p, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return ""
	}
	return Space(p.Addr()).Name
}

// Ancestors is name and every pool above it, following spec.parentPool
// through pools (by name), as far as pools knows them.
func Ancestors(pools map[string]*ipamv1alpha1.IPPool, name string) map[string]bool {
	out := map[string]bool{}
	for name != "" && !out[name] {
		out[name] = true
		p := pools[name]
		if p == nil {
			break
		}
		name = p.Spec.ParentPool
	}
	return out
}

// GetPool reads the pool called name, or returns the address space of that
// name.
func GetPool(ctx context.Context, r client.Reader, name string) (*ipamv1alpha1.IPPool, error) {
	switch name {
	case SpaceIPv4:
		return Space(netip.IPv4Unspecified()), nil
	case SpaceIPv6:
		return Space(netip.IPv6Unspecified()), nil
	}
	var p ipamv1alpha1.IPPool
	if err := r.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// InTheWay says what pool's ledger records over p: the pools and claims
// whose prefixes overlap it, for a denial that names them.
func InTheWay(ctx context.Context, r client.Reader, pool string, p netip.Prefix) (string, error) {
	ledger, err := ReadLedger(ctx, r, pool)
	if err != nil {
		return "", err
	}
	var what []string
	for _, q := range ledger.Prefixes() {
		if !q.Overlaps(p) {
			continue
		}
		e := ledger.Allocations[q]
		if name, ok := strings.CutPrefix(e.Holder, PoolHolderPrefix); ok {
			what = append(what, fmt.Sprintf("pool %s (%s)", name, q))
		} else {
			ns, _ := HolderNamespace(e.Holder)
			what = append(what, fmt.Sprintf("a claim in namespace %s (%s)", ns, q))
		}
		if len(what) == 5 {
			what = append(what, "and more")
			break
		}
	}
	return strings.Join(what, ", "), nil
}

// Inside counts the live claims and pools, as r (the API server) lists them,
// whose prefixes lie inside p, an entry of parent's ledger: a pool gone
// without draining leaves its claims and its children, at any depth,
// holding addresses that its parent must not hand out again. parent, its
// ancestors and parent's own claims hold p or lie around it, and are not
// counted. Read only for an entry no pool carries: the orphan sweep's, and
// a create that would take over the entry of an earlier pool of its name.
func Inside(ctx context.Context, r client.Reader, parent string, p netip.Prefix) (claims, pools int, err error) {
	var all ipamv1alpha1.IPPoolList
	if err := r.List(ctx, &all); err != nil {
		return 0, 0, err
	}
	byName := make(map[string]*ipamv1alpha1.IPPool, len(all.Items))
	for i := range all.Items {
		byName[all.Items[i].Name] = &all.Items[i]
	}
	around := Ancestors(byName, parent)
	within := func(cidr string) bool {
		q, err := netip.ParsePrefix(cidr)
		return err == nil && q.Bits() >= p.Bits() && p.Contains(q.Addr())
	}
	for i := range all.Items {
		if o := &all.Items[i]; !around[o.Name] && within(o.Spec.CIDR) {
			pools++
		}
	}
	var list ipamv1alpha1.IPClaimList
	if err := r.List(ctx, &list); err != nil {
		return 0, 0, err
	}
	for i := range list.Items {
		if slices.ContainsFunc(Holdings(&list.Items[i]), func(h Holding) bool { return h.Pool != parent && within(h.CIDR) }) {
			claims++
		}
	}
	return claims, pools, nil
}
