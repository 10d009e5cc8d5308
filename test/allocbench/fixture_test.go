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

package allocbench

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"

	"go4.org/netipx"
	"k8s.io/kubernetes/pkg/controller/nodeipam/ipam/cidrset"
	"k8s.io/kubernetes/pkg/registry/core/service/ipallocator"

	"github.com/kipam/kipam/internal/allocator"
)

// Two pools, each as large as the Kubernetes allocator working on it allows
// in production:
//
//   - hosts: a /12, the largest IPv4 Service CIDR kube-apiserver accepts
//     (--service-cluster-ip-range keeps at most 20 host bits). ipallocator
//     never hands out its first and last address, so kipam and the naive
//     allocator reserve them too: all three have 2^20-2 addresses to give.
//   - children: /26 blocks of a /8, as the node IPAM controller's cidrset
//     hands out node pod CIDRs: 2^18 of them. (A /24 per node out of a /8
//     has only 65,536, too few for 10^5 live allocations.)
var (
	hostPool     = netip.MustParsePrefix("10.0.0.0/12")
	hostReserved = []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/32"),
		netip.MustParsePrefix("10.15.255.255/32"),
	}
	childPool = netip.MustParsePrefix("10.0.0.0/8")
)

const (
	hostSlots  = 1 << 20
	childBits  = 26
	childSlots = 1 << (childBits - 8)
	// targets is how many free prefixes a fixture names for specific allocation.
	targets = 4096
)

// A fixture is one pool's live allocations, drawn uniformly at random so
// that every allocator starts from the same fragmented pool, and free
// prefixes to allocate specifically. The net forms are for the Kubernetes
// allocators, whose APIs take net.IP and *net.IPNet; they are converted once
// here so that no benchmark times or counts the conversion.
type fixture struct {
	live, free       []netip.Prefix
	liveIP, freeIP   []net.IP
	liveNet, freeNet []*net.IPNet
}

var fixtures sync.Map // "host/N" or "child/N" -> *fixture

// hostFixture returns n live hosts of hostPool, never its first or last.
func hostFixture(n int) *fixture {
	return cachedFixture("host", n, func(slot uint32) netip.Prefix {
		return netip.PrefixFrom(addr4(10<<24|slot), 32)
	}, 1, hostSlots-1)
}

// childFixture returns n live /26s of childPool.
func childFixture(n int) *fixture {
	return cachedFixture("child", n, func(slot uint32) netip.Prefix {
		return netip.PrefixFrom(addr4(10<<24|slot<<(32-childBits)), childBits)
	}, 0, childSlots)
}

// cachedFixture draws n live and targets free distinct slots in [lo, hi).
func cachedFixture(kind string, n int, prefix func(slot uint32) netip.Prefix, lo, hi uint32) *fixture {
	key := fmt.Sprintf("%s/%d", kind, n)
	if fx, ok := fixtures.Load(key); ok {
		return fx.(*fixture)
	}
	r := rand.New(rand.NewPCG(uint64(n), 0x6b6970616d))
	taken := make([]bool, hi)
	draw := func() netip.Prefix {
		for {
			s := lo + r.Uint32N(hi-lo)
			if !taken[s] {
				taken[s] = true
				return prefix(s)
			}
		}
	}
	fx := &fixture{live: make([]netip.Prefix, n), free: make([]netip.Prefix, targets)}
	for i := range fx.live {
		fx.live[i] = draw()
	}
	for i := range fx.free {
		fx.free[i] = draw()
	}
	fx.liveIP, fx.liveNet = netForms(fx.live)
	fx.freeIP, fx.freeNet = netForms(fx.free)
	fixtures.Store(key, fx)
	return fx
}

func addr4(v uint32) netip.Addr {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

func netForms(ps []netip.Prefix) ([]net.IP, []*net.IPNet) {
	ips := make([]net.IP, len(ps))
	nets := make([]*net.IPNet, len(ps))
	for i, p := range ps {
		ips[i] = net.IP(p.Addr().AsSlice())
		nets[i] = netipx.PrefixIPNet(p)
	}
	return ips, nets
}

// The constructors below load a fixture's live allocations the way each
// allocator rebuilds its state: kipam from its records with Restore, the
// Kubernetes ones by allocating each one.

func newKipam(tb testing.TB, pool netip.Prefix, reserved, live []netip.Prefix) *allocator.Allocator {
	tb.Helper()
	a, err := allocator.New(pool, allocator.WithRand(rand.New(rand.NewPCG(1, 2))))
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range reserved {
		if err := a.Reserve(p); err != nil {
			tb.Fatal(err)
		}
	}
	if err := a.Restore(live); err != nil {
		tb.Fatal(err)
	}
	return a
}

func newNaive(tb testing.TB, pool netip.Prefix, reserved, live []netip.Prefix) *Naive {
	tb.Helper()
	n, err := NewNaive(pool, reserved, live)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func newIPAllocator(tb testing.TB, fx *fixture) *ipallocator.Range {
	tb.Helper()
	r, err := ipallocator.NewInMemory(netipx.PrefixIPNet(hostPool))
	if err != nil {
		tb.Fatal(err)
	}
	for _, ip := range fx.liveIP {
		if err := r.Allocate(ip); err != nil {
			tb.Fatal(err)
		}
	}
	return r
}

func newCIDRSet(tb testing.TB, fx *fixture) *cidrset.CidrSet {
	tb.Helper()
	s, err := cidrset.NewCIDRSet(netipx.PrefixIPNet(childPool), childBits)
	if err != nil {
		tb.Fatal(err)
	}
	for _, n := range fx.liveNet {
		if err := s.Occupy(n); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}
