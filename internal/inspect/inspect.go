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

// Package inspect reads a cluster's kipam objects once and answers
// questions about them: the pool tree, a pool's free space, who holds an
// address, and whether everything agrees with everything else (Check).
// It only reads, through any client.Reader (the API server for an exact
// answer). It decides who holds what, and what a pool's status should
// say, with the same internal/ipam functions the controllers use, so that
// a report here means what kipam itself would conclude.
//
// It is the one copy of kipam's consistency check: kubectl kipam check
// runs it, and so do the test suites' end checks.
package inspect

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/netutil"
)

// Cluster is every kipam object of a cluster, as read by Load.
type Cluster struct {
	// At is when the objects were read: holds that end by then are over,
	// so free space and usage are counted as of At.
	At time.Time
	// Pools are the IPPools by name.
	Pools map[string]*ipamv1alpha1.IPPool
	// Claims are the IPClaims, sorted by namespace and name.
	Claims []*ipamv1alpha1.IPClaim
	// AddressClaims are Cluster API's IPAddressClaims of kipam pools, and
	// Addresses their IPAddresses (by namespace/name), both empty where
	// Cluster API's IPAM kinds are not served.
	AddressClaims map[string]*capiv1beta2.IPAddressClaim
	Addresses     map[string]*capiv1beta2.IPAddress
	// Allocations are the IPAllocations by name.
	Allocations map[string]*ipamv1alpha1.IPAllocation
	// Ledgers are what each pool's ledgers record, by pool name, the two
	// address spaces included: assembled from its root and shards exactly
	// as the pool controller does for its recount. A pool without a root
	// ledger has none here.
	Ledgers map[string]*ipam.Ledger
	// LedgerErrors are the pools whose ledgers could not be read.
	LedgerErrors map[string]error
}

// Load reads every IPPool, IPClaim, IPAllocation and IPLedger through r,
// and Cluster API's IPAddressClaims and IPAddresses of kipam pools.
func Load(ctx context.Context, r client.Reader) (*Cluster, error) {
	var (
		pools   ipamv1alpha1.IPPoolList
		claims  ipamv1alpha1.IPClaimList
		allocs  ipamv1alpha1.IPAllocationList
		ledgers ipamv1alpha1.IPLedgerList
	)
	for _, l := range []struct {
		what string
		list client.ObjectList
	}{{"IPPools", &pools}, {"IPClaims", &claims}, {"IPAllocations", &allocs}, {"IPLedgers", &ledgers}} {
		if err := r.List(ctx, l.list); err != nil {
			return nil, fmt.Errorf("listing %s: %w", l.what, err)
		}
	}
	c := &Cluster{
		At:           time.Now(),
		Pools:        make(map[string]*ipamv1alpha1.IPPool, len(pools.Items)),
		Claims:       make([]*ipamv1alpha1.IPClaim, 0, len(claims.Items)),
		Allocations:  make(map[string]*ipamv1alpha1.IPAllocation, len(allocs.Items)),
		Ledgers:      map[string]*ipam.Ledger{},
		LedgerErrors: map[string]error{},
	}
	for i := range pools.Items {
		c.Pools[pools.Items[i].Name] = &pools.Items[i]
	}
	if err := c.loadAddressClaims(ctx, r); err != nil {
		return nil, err
	}
	for i := range claims.Items {
		c.Claims = append(c.Claims, &claims.Items[i])
	}
	slices.SortFunc(c.Claims, func(a, b *ipamv1alpha1.IPClaim) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for i := range allocs.Items {
		c.Allocations[allocs.Items[i].Name] = &allocs.Items[i]
	}
	// A pool's root ledger is named after it, its shards carry its label:
	// what the pool controller lists for a pool, and ipam.ReadLedger reads.
	roots := map[string]*ipamv1alpha1.IPLedger{}
	shards := map[string][]ipamv1alpha1.IPLedger{}
	for i := range ledgers.Items {
		l := &ledgers.Items[i]
		if l.Name == l.Spec.Pool {
			roots[l.Name] = l
		}
		if pool := l.Labels[ipamv1alpha1.LabelPool]; pool != "" {
			shards[pool] = append(shards[pool], *l)
		}
	}
	for name, root := range roots {
		if pool, ok := c.Pools[name]; ok && !ipam.Belongs(root, pool) {
			continue // an earlier pool's, lingering: kipam reads nothing from it either
		}
		ledger, err := ipam.Assemble(root, shards[name])
		if err != nil {
			c.LedgerErrors[name] = err
			continue
		}
		c.Ledgers[name] = ledger
	}
	return c, nil
}

// loadAddressClaims reads Cluster API's IPAddressClaims that name a kipam
// pool, and the IPAddresses kipam answered them with. Where the kinds are
// not served (or r's scheme lacks them) there are none.
func (c *Cluster) loadAddressClaims(ctx context.Context, r client.Reader) error {
	c.AddressClaims = map[string]*capiv1beta2.IPAddressClaim{}
	c.Addresses = map[string]*capiv1beta2.IPAddress{}
	var claims capiv1beta2.IPAddressClaimList
	var addrs capiv1beta2.IPAddressList
	for _, l := range []struct {
		what string
		list client.ObjectList
	}{{"IPAddressClaims", &claims}, {"IPAddresses", &addrs}} {
		if err := r.List(ctx, l.list); meta.IsNoMatchError(err) || runtime.IsNotRegisteredError(err) {
			return nil
		} else if err != nil {
			return fmt.Errorf("listing %s: %w", l.what, err)
		}
	}
	for i := range claims.Items {
		if cl := &claims.Items[i]; ipam.ServesPoolRef(cl.Spec.PoolRef) {
			c.AddressClaims[cl.Namespace+"/"+cl.Name] = cl
		}
	}
	for i := range addrs.Items {
		if a := &addrs.Items[i]; ipam.ServesPoolRef(a.Spec.PoolRef) {
			c.Addresses[a.Namespace+"/"+a.Name] = a
		}
	}
	return nil
}

// pool returns the pool called name, or the address space of that name.
func (c *Cluster) pool(name string) (*ipamv1alpha1.IPPool, bool) {
	switch name {
	case ipam.SpaceIPv4:
		return ipam.Space(netip.IPv4Unspecified()), true
	case ipam.SpaceIPv6:
		return ipam.Space(netip.IPv6Unspecified()), true
	}
	p, ok := c.Pools[name]
	return p, ok
}

// ledger is what pool's ledgers record: empty for a pool without any.
func (c *Cluster) ledger(name string) (*ipam.Ledger, error) {
	if err := c.LedgerErrors[name]; err != nil {
		return nil, err
	}
	if l := c.Ledgers[name]; l != nil {
		return l, nil
	}
	return ipam.Assemble(nil, nil)
}

func (c *Cluster) now() time.Time { return c.At }

// allocator returns an allocator of pool (a pool or an address space)
// holding what its ledgers record, as of At: the one kipam would restore.
func (c *Cluster) allocator(name string) (*ipamv1alpha1.IPPool, *allocator.Allocator, error) {
	pool, ok := c.pool(name)
	if !ok {
		return nil, nil, fmt.Errorf("no pool %s", name)
	}
	ledger, err := c.ledger(name)
	if err != nil {
		return nil, nil, err
	}
	a, err := ipam.Build(pool, ledger, c.now)
	if err != nil {
		return nil, nil, err
	}
	return pool, a, nil
}

// recount is pool's status as the pool controller would write it from the
// ledgers as read, with the usage snapshot it is computed from: the same
// ipam.SnapshotOf and Snapshot.SetStatus. status.pending is left as stored.
func (c *Cluster) recount(pool *ipamv1alpha1.IPPool, at time.Time) (*ipamv1alpha1.IPPool, *ipam.Snapshot, error) {
	ledger, err := c.ledger(pool.Name)
	if err != nil {
		return nil, nil, err
	}
	snap, err := ipam.SnapshotOf(pool, ledger, func() time.Time { return at })
	if err != nil {
		return nil, nil, err
	}
	out := pool.DeepCopy()
	snap.SetStatus(out)
	return out, snap, nil
}

// ledgerNames are the pools that have ledgers, spaces included, in a fixed
// order.
func (c *Cluster) ledgerNames() []string {
	names := make([]string, 0, len(c.Ledgers))
	for name := range c.Ledgers {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// prefixOf parses a pool's or claim's cidr; invalid for an empty or bad one.
func prefixOf(cidr string) netip.Prefix {
	p, err := netutil.ParsePrefix(cidr)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// comparePrefixes orders prefixes by family, address, then length.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
