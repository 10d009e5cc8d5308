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

package v1alpha1

import (
	"context"
	"errors"

	"net/netip"
	"testing"

	"go4.org/netipx"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

type noEvents struct{}

func (noEvents) Eventf(runtime.Object, runtime.Object, string, string, string, string, ...any) {}

// FuzzAdmission sends random claims through the allocating webhook, with
// releases in between, and checks that nothing it allows ever overlaps or
// leaves its pool, that what it allows is exactly what its ledger holds, and
// that every denial is an API status with a message.
func FuzzAdmission(f *testing.F) {
	f.Add([]byte{0, 32, 0, 0, 32, 0, 1, 24, 0})
	f.Add([]byte{2, 28, 1, 7, 0, 28, 3, 0, 0, 4, 30, 0})
	f.Add([]byte{1, 64, 0, 1, 120, 2, 9, 1, 1, 128, 0, 5})
	// dual-stack: both, then exhausting the IPv6 pool under
	// RequireDualStack and PreferDualStack
	f.Add([]byte{10, 0, 0, 21, 8, 1, 10, 80, 0, 10, 80, 1, 32, 80, 2, 43, 80, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := runtime.NewScheme()
		_ = clientgoscheme.AddToScheme(s)
		_ = ipamv1alpha1.AddToScheme(s)
		pools := []*ipamv1alpha1.IPPool{
			{ObjectMeta: metav1.ObjectMeta{Name: "v4", UID: "u4", Generation: 1, Finalizers: []string{ipamv1alpha1.PoolFinalizer}},
				Spec: ipamv1alpha1.IPPoolSpec{CIDR: "10.0.0.0/24", Reserved: []string{"10.0.0.8-10.0.0.19"}, ExcludeLast: 1}},
			{ObjectMeta: metav1.ObjectMeta{Name: "v6", UID: "u6", Generation: 1, Finalizers: []string{ipamv1alpha1.PoolFinalizer}},
				Spec: ipamv1alpha1.IPPoolSpec{CIDR: "2001:db8::/120"}},
		}
		c := fake.NewClientBuilder().WithScheme(s).
			WithObjects(pools[0], pools[1], &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}}).
			WithIndex(&ipamv1alpha1.IPClaim{}, ipam.IndexWaiting, ipam.WaitingIndex).
			WithIndex(&ipamv1alpha1.IPLedger{}, ipam.LedgerPoolField, ipam.LedgerPool).Build()
		m := ipam.NewManager(ipam.ClientStore{Reader: c, Writer: c}, nil)
		// A pool is served only once its prefix is recorded in its
		// parent's ledger (here the space of its family), as kipam's pool
		// webhook records it; without it every claim is 429 "not ready".
		for _, p := range pools {
			cidr := netip.MustParsePrefix(p.Spec.CIDR)
			if _, err := m.Allocate(context.Background(), ipam.Request{Pool: ipam.Space(cidr.Addr()), CIDR: cidr, Bits: cidr.Bits(),
				Holder: ipam.PoolHolder(p.Name), ID: ipam.PoolEntryID(p)}); err != nil {
				t.Fatal(err)
			}
		}
		a := &IPClaimAllocator{Resolver: &ipam.Resolver{Reader: c, APIReader: c}, Manager: m, Recorder: noEvents{}}

		held := map[string][]netip.Prefix{}
		ids := map[string]string{} // "<pool>/<cidr>": the entry the claim carries ("dual": recorded in entries)
		entries = map[string]string{}
		for len(data) >= 3 {
			op, arg, extra := data[0], data[1], data[2]
			data = data[3:]
			pool := pools[op%2]
			prefix := netip.MustParsePrefix(pool.Spec.CIDR)
			if op%7 == 6 && len(held[pool.Name]) > 0 { // release one
				i := int(arg) % len(held[pool.Name])
				p := held[pool.Name][i]
				id := ids[pool.Name+"/"+p.String()]
				if id == "dual" {
					id = entries[pool.Name+"/"+p.String()]
				}
				freed, err := m.Release(context.Background(), pool, p, ipam.ClaimHolder("default"), id, 0, nil)
				if err != nil || !freed {
					t.Fatalf("release %s: freed %v, %v", p, freed, err)
				}
				held[pool.Name] = append(held[pool.Name][:i], held[pool.Name][i+1:]...)
				continue
			}
			if op%11 == 10 {
				for name, ps := range dualStackClaim(t, a, arg, extra, op%5 == 4) {
					held[name] = append(held[name], ps...)
					for _, p := range ps {
						ids[name+"/"+p.String()] = "dual"
					}
				}
				continue
			}
			claim := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{GenerateName: "c-", Namespace: "default"},
				Spec: ipamv1alpha1.IPClaimSpec{Pool: pool.Name}}
			bits := int32(arg) % 130
			if op%3 == 1 {
				// a specific prefix, canonical or not
				addr := prefix.Addr().As16()
				addr[15] = extra
				var ip netip.Addr
				if prefix.Addr().Is4() {
					ip = netip.AddrFrom4([4]byte(addr[12:]))
				} else {
					ip = netip.AddrFrom16(addr)
				}
				claim.Spec.CIDR = netip.PrefixFrom(ip, int(bits)%(ip.BitLen()+1)).String()
			} else if op%3 == 2 {
				claim.Spec.PrefixLength = &bits
			}
			dry := op%5 == 4
			req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Operation: admissionv1.Create, Namespace: "default", DryRun: &dry}}
			err := a.Default(admission.NewContextWithRequest(context.Background(), req), claim)
			if err != nil {
				var status apierrors.APIStatus
				if !errors.As(err, &status) || status.Status().Message == "" {
					t.Fatalf("claim %+v: denial is not a clear API status: %v", claim.Spec, err)
				}
				continue
			}
			p, perr := netip.ParsePrefix(claim.Spec.CIDR)
			if perr != nil {
				t.Fatalf("allowed claim carries no CIDR: %+v", claim.Spec)
			}
			if p.Bits() < prefix.Bits() || !prefix.Contains(p.Addr()) {
				t.Fatalf("allowed %s outside pool %s", p, prefix)
			}
			if !dry {
				held[pool.Name] = append(held[pool.Name], p)
				ids[pool.Name+"/"+p.String()] = claim.Annotations[ipam.EntryAnnotation]
			}
		}
		for _, pool := range pools {
			var b netipx.IPSetBuilder
			for _, p := range held[pool.Name] {
				set, _ := b.IPSet()
				if set.OverlapsPrefix(p) {
					t.Fatalf("pool %s: %s allowed while overlapping another allowed prefix (all: %v)", pool.Name, p, held[pool.Name])
				}
				b.AddPrefix(p)
			}
			l, err := ipam.ReadLedger(context.Background(), c, pool.Name)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(l.Allocations), len(held[pool.Name]); got != want {
				t.Fatalf("pool %s: ledger holds %d, webhook allowed %d", pool.Name, got, want)
			}
			for p := range l.Allocations {
				set, _ := b.IPSet()
				if !set.ContainsPrefix(p) {
					t.Fatalf("pool %s: ledger holds %s that no allowed claim carries", pool.Name, p)
				}
			}
		}
	})
}

// entries are the entry IDs of the dual-stack claims FuzzAdmission's
// webhook allowed, by "<pool>/<cidr>".
var entries map[string]string

// dualStackClaim sends one dual-stack claim through the webhook: its
// policy, family order, pools (now and then one missing, or one twice)
// and lengths from arg and extra. It checks what the webhook answers
// and returns what it allowed, by pool (nothing for a dry run).
func dualStackClaim(t *testing.T, a *IPClaimAllocator, arg, extra byte, dry bool) map[string][]netip.Prefix {
	t.Helper()
	policy := []ipamv1alpha1.IPFamilyPolicy{ipamv1alpha1.RequireDualStack, ipamv1alpha1.PreferDualStack}[extra%2]
	families := []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv4, ipamv1alpha1.IPv6}
	poolOf := map[ipamv1alpha1.IPFamily]string{ipamv1alpha1.IPv4: "v4", ipamv1alpha1.IPv6: "v6"}
	lengths := map[ipamv1alpha1.IPFamily]int32{ipamv1alpha1.IPv4: 24 + int32(arg%9), ipamv1alpha1.IPv6: 120 + int32(arg/9%9)}
	if arg%2 == 1 {
		families[0], families[1] = families[1], families[0]
	}
	switch extra / 2 % 8 {
	case 6:
		poolOf[families[1]] = "missing"
	case 7:
		poolOf[families[1]] = poolOf[families[0]]
	}
	claim := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{GenerateName: "d-", Namespace: "default"},
		Spec: ipamv1alpha1.IPClaimSpec{IPFamilyPolicy: policy, IPFamilies: families,
			Pools: []string{poolOf[families[0]], poolOf[families[1]]}, PrefixLengths: []int32{lengths[families[0]], lengths[families[1]]}}}
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Operation: admissionv1.Create, Namespace: "default", DryRun: &dry}}
	err := a.Default(admission.NewContextWithRequest(context.Background(), req), claim)
	if err != nil {
		var status apierrors.APIStatus
		if !errors.As(err, &status) || status.Status().Message == "" {
			t.Fatalf("dual-stack claim %+v: denial is not a clear API status: %v", claim.Spec, err)
		}
		return nil
	}
	cidrs := claim.Spec.CIDRs
	switch {
	case len(cidrs) == 0 || len(cidrs) > 2 || claim.Spec.CIDR != cidrs[0]:
		t.Fatalf("allowed dual-stack claim carries cidr %q and cidrs %q", claim.Spec.CIDR, cidrs)
	case policy == ipamv1alpha1.RequireDualStack && len(cidrs) != 2:
		t.Fatalf("RequireDualStack allowed with %q", cidrs)
	case len(cidrs) == 1 && claim.Annotations[ipam.FallbackAnnotation] == "":
		t.Fatalf("PreferDualStack fell back to %q without saying why", cidrs)
	}
	pools := []string{claim.Annotations[ipam.PoolAnnotation], claim.Annotations[ipam.SecondaryPoolAnnotation]}
	out := map[string][]netip.Prefix{}
	for i, c := range cidrs {
		p := netip.MustParsePrefix(c)
		want := ipamv1alpha1.IPv4
		if p.Addr().Is6() {
			want = ipamv1alpha1.IPv6
		}
		if len(cidrs) == 2 && want != families[i] {
			t.Fatalf("cidrs %q are not in the order of ipFamilies %q", cidrs, families)
		}
		if pools[i] != poolOf[want] {
			t.Fatalf("%s recorded in pool %q, asked of %q", p, pools[i], poolOf[want])
		}
		if int32(p.Bits()) != lengths[want] {
			t.Fatalf("%s allowed for a /%d", p, lengths[want])
		}
		if !dry {
			out[pools[i]] = append(out[pools[i]], p)
			entries[pools[i]+"/"+c] = claim.Annotations[ipam.EntryAnnotation]
		}
	}
	return out
}
