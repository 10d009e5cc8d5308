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

package inspect

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// expect fails unless got is exactly want, in order.
func expect(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestCheckFindsNothingInAConsistentCluster(t *testing.T) {
	f := newFixture(t)
	expect(t, f.check())
}

func TestCheckOverlappingClaims(t *testing.T) {
	f := newFixture(t)
	f.claim("rogue", "tenant", "10.0.0.8/29") // created around the webhook: no entry, no IPAllocation
	expect(t, f.check(),
		"MissingAllocation IPClaim default/rogue",
		"Overlap IPClaim default/web",
		"UnrecordedClaim IPClaim default/rogue")
}

func TestCheckOverlappingPools(t *testing.T) {
	f := newFixture(t)
	// A pool created around the webhook over tenant's claim and its child,
	// whose own ledger records what tenant's does.
	f.pool("other", "10.0.0.0/23", "", ipamv1alpha1.IPPoolStatus{})
	f.ledger("other", "10.0.0.10/32 IPClaim/x %d e-x\n")
	// A claim of lb's parent inside lb, recorded in the parent's ledger.
	f.claim("inside", "tenant", "10.0.1.64/26")
	f.editLedger("tenant", func(s *ipamv1alpha1.IPLedgerSpec) {
		s.Allocations += fmt.Sprintf("10.0.1.64/26 IPClaim/default %d e-inside\n", committed.Unix())
	})
	expect(t, f.check(),
		"MissingAllocation IPClaim default/inside", // no IPAllocation made for it
		"MissingAllocation IPPool other",
		"Overlap IPClaim default/inside", // with lb: not its pool's
		"Overlap IPClaim default/inside", // with other
		"Overlap IPClaim default/vip",    // with other
		"Overlap IPClaim default/web",    // with other
		"Overlap IPLedger other",         // other's entry inside tenant's entry in the space
		"Overlap IPLedger tenant",        // tenant's entry for web and other's
		"Overlap IPLedger tenant",        // inside's entry and lb's, in tenant's ledger
		"Overlap IPPool lb",              // with other
		"Overlap IPPool other",           // with tenant
		// tenant's status is not compared: its ledger's overlap leaves
		// nothing to recount (the controller says Invalid).
		"StatusDrift IPPool other", // never counted
		"UnheldEntry IPLedger other",
		"UnrecordedPool IPPool other")
}

func TestCheckUnheldEntries(t *testing.T) {
	f := newFixture(t)
	young := testNow.Add(-testGrace / 2)
	f.editLedger("tenant", func(s *ipamv1alpha1.IPLedgerSpec) {
		s.Allocations += fmt.Sprintf("10.0.0.20/32 IPClaim/default %d never-stored\n10.0.0.21/32 IPClaim/default %d in-flight\n",
			committed.Unix(), young.Unix())
	})
	f.editLedger(ipam.SpaceIPv4, func(s *ipamv1alpha1.IPLedgerSpec) {
		s.Allocations += fmt.Sprintf("10.1.0.0/16 IPPool/gone %d e-gone\n", committed.Unix())
	})
	got := f.check()
	expect(t, got,
		"StatusDrift IPPool tenant", // two more claims than its status says
		"UnheldEntry IPLedger ipv4.space.kipam.dev",
		"UnheldEntry IPLedger tenant")
	// A tenant's view: the claim entry concerns namespace default, the
	// pool's entry and the status no namespace.
	var concerns []string
	for _, p := range f.load().Check(testNow, testGrace) {
		concerns = append(concerns, fmt.Sprint(p.Namespaces))
	}
	expect(t, concerns, "[]", "[]", "[default]")
}

func TestCheckUnrecordedClaim(t *testing.T) {
	f := newFixture(t)
	// web's entry recorded under another ID: it is no longer web's, and
	// nothing carries it.
	f.editLedger("tenant", func(s *ipamv1alpha1.IPLedgerSpec) {
		s.Allocations = strings.Replace(s.Allocations, "e-web", "e-someone-else", 1)
	})
	expect(t, f.check(),
		"UnheldEntry IPLedger tenant",
		"UnrecordedClaim IPClaim default/web")
}

func TestCheckUnrecordedPool(t *testing.T) {
	f := newFixture(t)
	f.editLedger(ipam.SpaceIPv4, func(s *ipamv1alpha1.IPLedgerSpec) { s.Allocations = "" })
	expect(t, f.check(), "UnrecordedPool IPPool tenant")
}

func TestCheckMissingAllocations(t *testing.T) {
	f := newFixture(t)
	for _, name := range []string{"tenant.10-0-0-10-32", "tenant.10-0-1-0-24"} {
		f.delete(&ipamv1alpha1.IPAllocation{ObjectMeta: metav1.ObjectMeta{Name: name}})
	}
	expect(t, f.check(),
		"MissingAllocation IPClaim default/web",
		"MissingAllocation IPPool lb")
}

func TestCheckYoungObjectsWithoutAllocationAreNotReported(t *testing.T) {
	f := newFixture(t)
	f.delete(&ipamv1alpha1.IPAllocation{ObjectMeta: metav1.ObjectMeta{Name: "tenant.10-0-0-10-32"}})
	c := f.load()
	if got := c.Check(realNow.Add(testGrace/2), testGrace); len(got) != 0 {
		t.Errorf("a claim younger than the grace without its IPAllocation was reported: %v", got)
	}
}

func TestCheckOrphanedAllocations(t *testing.T) {
	f := newFixture(t)
	f.allocation("tenant", "10.0.0.30/32", ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: "default", Name: "gone", UID: "uid-gone"}, "e-gone")
	f.allocation("tenant", "10.0.0.31/32", ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: "default", Name: "web", UID: f.web.UID}, "e-web")
	f.allocation("lb", "10.0.1.128/25", ipamv1alpha1.ClaimRef{Kind: "IPPool", Name: "gone"}, "e-gone")
	// One kipam saw orphaned a moment ago, and releases after its grace.
	seen := f.allocation("tenant", "10.0.0.32/32", ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: "default", Name: "gone2"}, "e-gone2")
	seen.Status.OrphanedAt = &metav1.Time{Time: testNow.Add(-time.Second)}
	if err := k8sClient.Status().Update(f.ctx, seen); err != nil {
		t.Fatal(err)
	}
	expect(t, f.check(),
		"OrphanedAllocation IPAllocation lb.10-0-1-128-25",
		"OrphanedAllocation IPAllocation tenant.10-0-0-30-32",
		"OrphanedAllocation IPAllocation tenant.10-0-0-31-32")
}

func TestCheckStatusDrift(t *testing.T) {
	f := newFixture(t)
	// lb released 10.0.1.16/28 with a grace that has run out by now: a
	// status written while it was held says 16 addresses fewer are
	// available, and a /25 is the largest free block either way.
	f.editLedger("lb", func(s *ipamv1alpha1.IPLedgerSpec) {
		s.Holds = fmt.Sprintf("10.0.1.16/28 %d\n", realNow.Add(-time.Second).Unix())
	})
	setStatus := func(p *ipamv1alpha1.IPPool, edit func(*ipamv1alpha1.IPPoolStatus)) {
		t.Helper()
		edit(&p.Status)
		if err := k8sClient.Status().Update(f.ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	setStatus(f.lb, func(s *ipamv1alpha1.IPPoolStatus) { s.Available = "224" })
	expect(t, f.check())

	setStatus(f.lb, func(s *ipamv1alpha1.IPPoolStatus) { s.Available = "200" })
	setStatus(f.tenant, func(s *ipamv1alpha1.IPPoolStatus) { s.Claims, s.LargestFreePrefix = 5, ptr.To[int32](18) })
	c := f.load()
	problems := c.Check(testNow, testGrace)
	var got []string
	for _, p := range problems {
		got = append(got, p.String())
	}
	want := []string{
		"StatusDrift IPPool lb: its status says available 200 (recounted: 240): the pool controller rewrites it on the pool's next change; if it stays, is kipam running?",
		"StatusDrift IPPool tenant: its status says claims 5 (recounted: 1), largestFreePrefix /18 (recounted: /17): the pool controller rewrites it on the pool's next change; if it stays, is kipam running?",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestCheckClaimOutsideItsPool(t *testing.T) {
	f := newFixture(t)
	f.claim("far", "lb", "10.0.0.64/26")      // in tenant, not in lb
	f.claim("lost", "nowhere", "10.2.0.1/32") // no such pool
	// far lies in tenant, around lb: no overlap with a pool it could be in.
	expect(t, f.check(),
		"OutsidePool IPClaim default/far",
		"OutsidePool IPClaim default/lost")
}

func TestCheckBadLedger(t *testing.T) {
	f := newFixture(t)
	f.editLedger("lb", func(s *ipamv1alpha1.IPLedgerSpec) { s.Allocations += "not a ledger line\n" })
	got := f.check()
	expect(t, got, "BadLedger IPLedger lb")
}

func TestCheckPrefixKeptForItsLastHolderIsTaken(t *testing.T) {
	f := newFixture(t)
	kept := fmt.Sprintf("10.0.0.40/32 default db-0 uid-db %d %d %d kept\n", committed.Unix(), committed.Unix(), testNow.Add(time.Hour).Unix())
	f.editLedger("tenant", func(s *ipamv1alpha1.IPLedgerSpec) { s.Released = kept })
	for _, p := range f.check() {
		if strings.HasPrefix(p, "Overlap") {
			t.Fatalf("a kept prefix alone: %v", p)
		}
	}
	// An entry over it commits its addresses twice.
	f.editLedger("tenant", func(s *ipamv1alpha1.IPLedgerSpec) {
		s.Allocations += fmt.Sprintf("10.0.0.40/30 IPClaim/default %d e-over\n", committed.Unix())
	})
	var found bool
	for _, p := range f.load().Check(testNow, testGrace) {
		found = found || p.Kind == Overlap && strings.Contains(p.Message, "retained for default/db-0")
	}
	if !found {
		t.Fatalf("no overlap with the kept prefix among %v", f.check())
	}
}

func TestAnEarlierPoolsLedgerIsNotRead(t *testing.T) {
	f := newFixture(t)
	if _, ok := f.load().Ledgers["tenant"]; !ok {
		t.Fatal("tenant's own ledger is not read")
	}
	// tenant deleted and created again while the old root lingers: kipam
	// never reads it as the new pool's (restore refuses it), nor does the
	// recount.
	f.editLedger("tenant", func(s *ipamv1alpha1.IPLedgerSpec) { s.PoolUID = "uid-of-an-earlier-tenant" })
	if l, ok := f.load().Ledgers["tenant"]; ok {
		t.Fatalf("an earlier pool's ledger read as tenant's: %v", l.Prefixes())
	}
}

func TestCheckAddressClaims(t *testing.T) {
	f := newFixture(t)
	claim, _ := f.addressClaim("machine-0", "tenant", "10.0.0.11")
	// tenant's status as kipam writes it with the address counted.
	f.tenant.Status.Allocated, f.tenant.Status.Available, f.tenant.Status.Claims = "258", "65278", 2
	if err := k8sClient.Status().Update(f.ctx, f.tenant); err != nil {
		t.Fatal(err)
	}
	expect(t, f.check())
	who := f.load().Who(netip.MustParsePrefix("10.0.0.11/32"))
	if last := who.HeldBy[len(who.HeldBy)-1]; last.Kind != "IPAddressClaim" || last.Name != "machine-0" || last.Holder != "IPAddressClaim/default" {
		t.Errorf("who holds 10.0.0.11: %+v", last)
	}

	// An IPAddress over another claim's address, and its claim's entry
	// recorded for another uid.
	f.addressClaim("machine-1", "lb", "10.0.1.1")
	f.editLedger("lb", func(s *ipamv1alpha1.IPLedgerSpec) {
		s.Allocations = strings.Replace(s.Allocations, "10.0.1.1/32 IPAddressClaim/default", "10.0.1.1/32 IPAddressClaim/other", 1)
	})
	f.lb.Status.Allocated, f.lb.Status.Claims = "17", 2
	f.lb.Status.Available = "239"
	f.lb.Status.Utilization = "6.64%"
	if err := k8sClient.Status().Update(f.ctx, f.lb); err != nil {
		t.Fatal(err)
	}
	expect(t, f.check(),
		"Overlap IPAddress default/machine-1", // inside vip's cidr
		"Overlap IPLedger lb",                 // 10.0.1.1 recorded inside vip's 10.0.1.0/28
		"UnheldEntry IPLedger lb",             // recorded for a claim that does not exist
		"UnrecordedClaim IPAddress default/machine-1")

	// The claim gone (deleted without kipam's finalizer), its records left.
	f.delete(claim)
	got := f.check()
	for _, want := range []string{
		"OrphanedAllocation IPAddress default/machine-0",
		"OrphanedAllocation IPAllocation tenant.10-0-0-11-32",
		"UnheldEntry IPLedger tenant",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("%q not reported: %v", want, got)
		}
	}
}

// dualStack adds a dual-stack claim default/dual to the fixture: IPv4
// 10.0.0.12/32 from tenant (primary) and fd00:1::/64 from pool v6, both
// entries with the ID e-dual, and an IPAllocation for each, as kipam
// would have built them.
func (f *fixture) dualStack() *ipamv1alpha1.IPClaim {
	f.t.Helper()
	f.pool("v6", "fd00:1::/48", "", ipamv1alpha1.IPPoolStatus{})
	f.ledger(ipam.SpaceIPv6, "fd00:1::/48 IPPool/v6 %d e-v6\n")
	f.poolAllocation(f.poolNamed("v6"))
	f.editLedger("tenant", func(s *ipamv1alpha1.IPLedgerSpec) {
		s.Allocations += fmt.Sprintf("10.0.0.12/32 IPClaim/default %d e-dual\n", committed.Unix())
	})
	f.ledger("v6", "fd00:1::/64 IPClaim/default %d e-dual\n")
	c := &ipamv1alpha1.IPClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "dual", Annotations: map[string]string{
			ipam.EntryAnnotation: "e-dual", ipam.PoolAnnotation: "tenant", ipam.SecondaryPoolAnnotation: "v6"}},
		Spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: ipamv1alpha1.RequireDualStack, IPFamilies: []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv4, ipamv1alpha1.IPv6},
			Pools: []string{"tenant", "v6"}, CIDR: "10.0.0.12/32", CIDRs: []string{"10.0.0.12/32", "fd00:1::/64"}},
	}
	f.create(c)
	ref := ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: c.Namespace, Name: c.Name, UID: c.UID}
	f.allocation("tenant", "10.0.0.12/32", ref, "e-dual")
	f.allocation("v6", "fd00:1::/64", ref, "e-dual")
	return c
}

func (f *fixture) poolNamed(name string) *ipamv1alpha1.IPPool {
	f.t.Helper()
	var p ipamv1alpha1.IPPool
	if err := k8sClient.Get(f.ctx, client.ObjectKey{Name: name}, &p); err != nil {
		f.t.Fatal(err)
	}
	return &p
}

// withoutDrift drops the StatusDrift problems: the dual-stack fixture
// does not keep its pools' status.
func withoutDrift(problems []string) []string {
	return slices.DeleteFunc(problems, func(p string) bool { return strings.HasPrefix(p, "StatusDrift ") })
}

func TestCheckDualStackClaim(t *testing.T) {
	t.Run("both entries recorded and bound", func(t *testing.T) {
		f := newFixture(t)
		f.dualStack()
		// Neither entry is UnheldEntry or UnrecordedClaim, neither
		// IPAllocation OrphanedAllocation, the claim's two prefixes are
		// not an Overlap.
		expect(t, withoutDrift(f.check()))
		c := f.load()
		held := c.Who(netip.MustParsePrefix("fd00:1::/64")).HeldBy
		if n := len(held); n != 2 || held[1].Name != "dual" || held[1].Allocation != "v6.fd00-0001-0000-0000-0000-0000-0000-0000-64" {
			t.Errorf("who fd00:1::/64 = %+v; want the v6 pool's entry carried by default/dual", held)
		}
	})
	t.Run("the second family's record broken", func(t *testing.T) {
		f := newFixture(t)
		f.dualStack()
		f.delete(&ipamv1alpha1.IPAllocation{ObjectMeta: metav1.ObjectMeta{Name: ipam.AllocationName("v6", netip.MustParsePrefix("fd00:1::/64"))}})
		f.editLedger("v6", func(s *ipamv1alpha1.IPLedgerSpec) {
			s.Allocations = strings.Replace(s.Allocations, "e-dual", "e-other", 1)
		})
		expect(t, withoutDrift(f.check()),
			"MissingAllocation IPClaim default/dual",
			"UnheldEntry IPLedger v6",
			"UnrecordedClaim IPClaim default/dual")
	})
	t.Run("an IPAllocation of a prefix the claim does not carry", func(t *testing.T) {
		f := newFixture(t)
		c := f.dualStack()
		f.allocation("v6", "fd00:1:0:1::/64", ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: "default", Name: "dual", UID: c.UID}, "e-dual")
		expect(t, withoutDrift(f.check()), "OrphanedAllocation IPAllocation v6.fd00-0001-0000-0001-0000-0000-0000-0000-64")
	})
}
