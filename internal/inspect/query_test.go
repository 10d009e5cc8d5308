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
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

func TestTree(t *testing.T) {
	f := newFixture(t)
	meta.SetStatusCondition(&f.tenant.Status.Conditions, metav1.Condition{Type: ipamv1alpha1.ConditionExhausted,
		Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonPoolExhausted, Message: "no /32 left"})
	if err := k8sClient.Status().Update(f.ctx, f.tenant); err != nil {
		t.Fatal(err)
	}
	f.pool("stray", "10.3.0.0/24", "gone", ipamv1alpha1.IPPoolStatus{})
	f.pool("v6", "2001:db8::/48", "", ipamv1alpha1.IPPoolStatus{})
	c := f.load()
	nodes, err := c.Tree("")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var walk func(n *Node, depth int)
	walk = func(n *Node, depth int) {
		line := fmt.Sprintf("%s%s %s %v", strings.Repeat("  ", depth), n.Name, n.CIDR, n.Warnings)
		if n.Usage != nil {
			line += fmt.Sprintf(" %s claims=%d children=%d used=%.4f", n.Usage.Utilization, n.Usage.Claims, n.Usage.ChildPools, n.Used)
		}
		lines = append(lines, line)
		for _, ch := range n.Children {
			walk(ch, depth+1)
		}
	}
	for _, n := range nodes {
		walk(n, 0)
	}
	want := []string{
		"ipv4.space.kipam.dev 0.0.0.0/0 []",
		"  tenant 10.0.0.0/16 [Exhausted] 0.39% claims=1 children=1 used=0.0039",
		"    lb 10.0.1.0/24 [] 6.25% claims=1 children=0 used=0.0625",
		"  stray 10.3.0.0/24 [ParentMissing: gone] 0% claims=0 children=0 used=0.0000",
		"ipv6.space.kipam.dev ::/0 []",
		"  v6 2001:db8::/48 [] 0% claims=0 children=0 used=0.0000",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	sub, err := c.Tree("lb")
	if err != nil || len(sub) != 1 || sub[0].Name != "lb" || len(sub[0].Children) != 0 {
		t.Errorf("Tree(lb) = %v, %v; want lb alone", sub, err)
	}
	if _, err := c.Tree("nope"); err == nil {
		t.Error("Tree of a pool that does not exist did not fail")
	}
}

func TestFree(t *testing.T) {
	f := newFixture(t)
	c := f.load()
	all, err := c.Free("tenant", 0)
	if err != nil {
		t.Fatal(err)
	}
	// The largest blocks first; together exactly what is not allocated.
	var b strings.Builder
	total := new(big.Int)
	for i, p := range all {
		if i > 0 && p.Bits() < all[i-1].Bits() {
			t.Errorf("%s comes after the smaller %s", p, all[i-1])
		}
		for _, q := range all[:i] {
			if p.Overlaps(q) {
				t.Errorf("%s overlaps %s", p, q)
			}
		}
		total.Add(total, big.NewInt(1<<(32-p.Bits())))
		fmt.Fprintf(&b, "%s ", p)
	}
	want := "10.0.128.0/17 10.0.64.0/18 10.0.32.0/19 10.0.16.0/20 10.0.8.0/21 10.0.4.0/22 10.0.2.0/23 10.0.0.128/25 " +
		"10.0.0.64/26 10.0.0.32/27 10.0.0.16/28 10.0.0.0/29 10.0.0.12/30 10.0.0.8/31 10.0.0.11/32 "
	if b.String() != want {
		t.Errorf("free blocks:\n  %s\nwant\n  %s", b.String(), want)
	}
	if total.String() != "65279" {
		t.Errorf("the free blocks add up to %s addresses, want 65279", total)
	}
	if first, err := c.Free("tenant", 2); err != nil || !slices.Equal(first, all[:2]) {
		t.Errorf("Free(tenant, 2) = %v, %v; want %v", first, err, all[:2])
	}

	n, first, err := c.Fit("tenant", 24, 3)
	if err != nil || n.String() != "254" || fmt.Sprint(first) != "[10.0.2.0/24 10.0.3.0/24 10.0.4.0/24]" {
		t.Errorf("Fit(tenant, /24) = %v %v %v; want 254 and 10.0.2.0/24 on", n, first, err)
	}
	n, first, err = c.Fit("lb", 28, 2)
	if err != nil || n.String() != "15" || fmt.Sprint(first) != "[10.0.1.16/28 10.0.1.32/28]" {
		t.Errorf("Fit(lb, /28) = %v %v %v; want 15 and 10.0.1.16/28 on", n, first, err)
	}
	if _, _, err := c.Fit("lb", 23, 1); err == nil || !strings.Contains(err.Error(), "from /24 to /32") {
		t.Errorf("Fit(lb, /23) = %v, want an error saying what lb holds", err)
	}
	if _, err := c.Free("nope", 1); err == nil {
		t.Error("Free of a pool that does not exist did not fail")
	}
}

func TestWho(t *testing.T) {
	f := newFixture(t)
	c := f.load()
	who := func(q string) string {
		var lines []string
		p, err := netip.ParsePrefix(q)
		if err != nil {
			p = netip.PrefixFrom(netip.MustParseAddr(q), 32)
		}
		ans := c.Who(p)
		for _, h := range ans.HeldBy {
			lines = append(lines, fmt.Sprintf("%s %s %s %s/%s/%s %s since=%v", h.Pool, h.CIDR, h.Holder, h.Kind, h.Namespace, h.Name,
				h.Allocation, h.Since != nil))
		}
		return strings.Join(append(lines, "state: "+ans.State), "\n")
	}
	for _, tc := range []struct{ q, want string }{
		{"10.0.0.10", "ipv4.space.kipam.dev 10.0.0.0/16 IPPool/tenant IPPool//tenant ipv4.space.kipam.dev.10-0-0-0-16 since=true\n" +
			"tenant 10.0.0.10/32 IPClaim/default IPClaim/default/web tenant.10-0-0-10-32 since=true\nstate: "},
		{"10.0.1.0/24", "ipv4.space.kipam.dev 10.0.0.0/16 IPPool/tenant IPPool//tenant ipv4.space.kipam.dev.10-0-0-0-16 since=true\n" +
			"tenant 10.0.1.0/24 IPPool/lb IPPool//lb tenant.10-0-1-0-24 since=true\n" +
			"lb 10.0.1.0/28 IPClaim/default IPClaim/default/vip lb.10-0-1-0-28 since=true\nstate: partly allocated in pool lb"},
		{"10.0.0.11", "ipv4.space.kipam.dev 10.0.0.0/16 IPPool/tenant IPPool//tenant ipv4.space.kipam.dev.10-0-0-0-16 since=true\nstate: free in pool tenant"},
		{"10.9.0.0/16", "state: in no pool"},
	} {
		if got := who(tc.q); got != tc.want {
			t.Errorf("who %s:\n%s\nwant:\n%s", tc.q, got, tc.want)
		}
	}
	// An entry no claim carries has no carrier, and a hold says until when.
	f.editLedger("lb", func(s *ipamv1alpha1.IPLedgerSpec) {
		s.Allocations += fmt.Sprintf("10.0.1.32/28 IPClaim/default %d lost\n", committed.Unix())
		s.Holds = fmt.Sprintf("10.0.1.16/28 %d\n", testNow.Unix())
	})
	c = f.load()
	if got := c.Who(netip.MustParsePrefix("10.0.1.32/28")).HeldBy; len(got) != 3 || got[2].Name != "" || got[2].Entry != "lost" {
		t.Errorf("who 10.0.1.32/28 = %+v; want its entry with no carrier", got)
	}
	if got := c.Who(netip.MustParsePrefix("10.0.1.20/32")).State; !strings.HasPrefix(got, "held in pool lb until ") {
		t.Errorf("who 10.0.1.20 says %q, want held in pool lb", got)
	}
	reserved := f.pool("edge", "10.5.0.0/24", "", ipamv1alpha1.IPPoolStatus{})
	reserved.Spec.ExcludeFirst = 4
	if err := k8sClient.Update(f.ctx, reserved); err != nil {
		t.Fatal(err)
	}
	if got := f.load().Who(netip.MustParsePrefix("10.5.0.1/32")).State; got != "reserved in pool edge" {
		t.Errorf("who 10.5.0.1 says %q, want reserved in pool edge", got)
	}
}
