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
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/testenv"
)

// The tests here run against a real API server with kipam's CRDs and no
// kipam: each builds the exact objects of a cluster by hand (what kipam
// would have written, then one thing broken), so that Check sees a state
// nothing repairs under it. That Check finds nothing wrong in a cluster
// kipam itself built is shown by cmd/kubectl-kipam's suite, which runs
// kipam.

var k8sClient client.Client

func TestMain(m *testing.M) {
	os.Exit(func() int {
		env, err := testenv.New(false)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cfg, err := env.Start()
		if err != nil {
			_ = env.Stop()
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer func() { _ = env.Stop() }()
		scheme := runtime.NewScheme()
		if err := ipamv1alpha1.AddToScheme(scheme); err != nil {
			panic(err)
		}
		if err := capiv1beta2.AddToScheme(scheme); err != nil {
			panic(err)
		}
		if k8sClient, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
			panic(err)
		}
		return m.Run()
	}())
}

// committed is when the fixture's entries were committed: an hour before
// the tests' now, and long past their grace.
var (
	realNow   = time.Now()
	testNow   = realNow.Add(time.Hour)
	committed = realNow.Add(-time.Minute)
)

const testGrace = 10 * time.Minute

// fixture is a small consistent cluster, as kipam would have built it:
//
//	ipv4 space  10.0.0.0/16 -> IPPool tenant
//	tenant      10.0.0.10/32 -> IPClaim default/web, 10.0.1.0/24 -> IPPool lb
//	lb          10.0.1.0/28 -> IPClaim default/vip
type fixture struct {
	t      *testing.T
	ctx    context.Context
	tenant *ipamv1alpha1.IPPool
	lb     *ipamv1alpha1.IPPool
	web    *ipamv1alpha1.IPClaim
	vip    *ipamv1alpha1.IPClaim
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: context.Background()}
	t.Cleanup(f.reset)
	f.tenant = f.pool("tenant", "10.0.0.0/16", "", ipamv1alpha1.IPPoolStatus{Capacity: "65536", Allocated: "257", Available: "65279",
		Utilization: "0.39%", LargestFreePrefix: ptr.To[int32](17), Claims: 1, ChildPools: 1})
	f.lb = f.pool("lb", "10.0.1.0/24", "tenant", ipamv1alpha1.IPPoolStatus{Capacity: "256", Allocated: "16", Available: "240",
		Utilization: "6.25%", LargestFreePrefix: ptr.To[int32](25), Claims: 1})
	f.web = f.claim("web", "tenant", "10.0.0.10/32")
	f.vip = f.claim("vip", "lb", "10.0.1.0/28")
	f.ledger(ipam.SpaceIPv4, "10.0.0.0/16 IPPool/tenant %d e-tenant\n")
	f.ledger("tenant", "10.0.0.10/32 IPClaim/default %d e-web\n10.0.1.0/24 IPPool/lb %d e-lb\n")
	f.ledger("lb", "10.0.1.0/28 IPClaim/default %d e-vip\n")
	f.poolAllocation(f.tenant)
	f.poolAllocation(f.lb)
	f.claimAllocation(f.web)
	f.claimAllocation(f.vip)
	return f
}

// reset deletes every kipam object, so that the next test starts empty.
func (f *fixture) reset() {
	for _, obj := range []client.Object{&ipamv1alpha1.IPPool{}, &ipamv1alpha1.IPLedger{}, &ipamv1alpha1.IPAllocation{}} {
		if err := k8sClient.DeleteAllOf(f.ctx, obj); err != nil {
			f.t.Error(err)
		}
	}
	for _, obj := range []client.Object{&ipamv1alpha1.IPClaim{}, &capiv1beta2.IPAddressClaim{}, &capiv1beta2.IPAddress{}} {
		if err := k8sClient.DeleteAllOf(f.ctx, obj, client.InNamespace("default")); err != nil {
			f.t.Error(err)
		}
	}
}

func (f *fixture) create(obj client.Object) {
	f.t.Helper()
	if err := k8sClient.Create(f.ctx, obj); err != nil {
		f.t.Fatal(err)
	}
}

// pool creates a pool with the entry ID e-<name> and status.
func (f *fixture) pool(name, cidr, parent string, status ipamv1alpha1.IPPoolStatus) *ipamv1alpha1.IPPool {
	f.t.Helper()
	p := &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{ipam.EntryAnnotation: "e-" + name}},
		Spec:       ipamv1alpha1.IPPoolSpec{CIDR: cidr, ParentPool: parent},
	}
	f.create(p)
	if status.Capacity != "" {
		p.Status = status
		if err := k8sClient.Status().Update(f.ctx, p); err != nil {
			f.t.Fatal(err)
		}
	}
	return p
}

// claim creates a claim of namespace default bound to cidr in pool, with
// the entry ID e-<name>.
func (f *fixture) claim(name, pool, cidr string) *ipamv1alpha1.IPClaim {
	f.t.Helper()
	c := &ipamv1alpha1.IPClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
			Annotations: map[string]string{ipam.EntryAnnotation: "e-" + name, ipam.PoolAnnotation: pool}},
		Spec: ipamv1alpha1.IPClaimSpec{Pool: pool, CIDR: cidr},
	}
	f.create(c)
	return c
}

// ledger writes pool's root ledger; every %d in allocations is the commit
// time of the fixture.
func (f *fixture) ledger(pool, allocations string) {
	f.t.Helper()
	n := strings.Count(allocations, "%d")
	args := make([]any, n)
	for i := range args {
		args[i] = committed.Unix()
	}
	// A root records its pool's uid, as kipam's do (an address space has
	// none).
	var owner ipamv1alpha1.IPPool
	if err := k8sClient.Get(f.ctx, client.ObjectKey{Name: pool}, &owner); client.IgnoreNotFound(err) != nil {
		f.t.Fatal(err)
	}
	f.create(&ipamv1alpha1.IPLedger{
		ObjectMeta: metav1.ObjectMeta{Name: pool, Labels: map[string]string{ipamv1alpha1.LabelPool: pool}},
		Spec:       ipamv1alpha1.IPLedgerSpec{Pool: pool, PoolUID: string(owner.UID), Allocations: fmt.Sprintf(allocations, args...)},
	})
}

// editLedger changes pool's root ledger.
func (f *fixture) editLedger(pool string, edit func(*ipamv1alpha1.IPLedgerSpec)) {
	f.t.Helper()
	var l ipamv1alpha1.IPLedger
	if err := k8sClient.Get(f.ctx, client.ObjectKey{Name: pool}, &l); err != nil {
		f.t.Fatal(err)
	}
	edit(&l.Spec)
	if err := k8sClient.Update(f.ctx, &l); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) allocation(pool, cidr string, ref ipamv1alpha1.ClaimRef, entry string) *ipamv1alpha1.IPAllocation {
	f.t.Helper()
	a := &ipamv1alpha1.IPAllocation{
		ObjectMeta: metav1.ObjectMeta{Name: ipam.AllocationName(pool, netip.MustParsePrefix(cidr))},
		Spec:       ipamv1alpha1.IPAllocationSpec{Pool: pool, CIDR: cidr, ClaimRef: ref, Entry: entry},
	}
	f.create(a)
	return a
}

func (f *fixture) poolAllocation(p *ipamv1alpha1.IPPool) {
	f.allocation(ipam.ParentOf(p), p.Spec.CIDR, ipamv1alpha1.ClaimRef{Kind: "IPPool", Name: p.Name, UID: p.UID}, "e-"+p.Name)
}

func (f *fixture) claimAllocation(c *ipamv1alpha1.IPClaim) {
	f.allocation(c.Spec.Pool, c.Spec.CIDR, ipamv1alpha1.ClaimRef{Kind: "IPClaim", Namespace: c.Namespace, Name: c.Name, UID: c.UID}, "e-"+c.Name)
}

func (f *fixture) delete(obj client.Object) {
	f.t.Helper()
	if err := k8sClient.Delete(f.ctx, obj); err != nil {
		f.t.Fatal(err)
	}
}

// load reads the cluster as Load does, at realNow.
func (f *fixture) load() *Cluster {
	f.t.Helper()
	c, err := Load(f.ctx, k8sClient)
	if err != nil {
		f.t.Fatal(err)
	}
	c.At = realNow
	return c
}

// check runs Check at testNow and returns "<kind> <object>" per problem.
func (f *fixture) check() []string {
	f.t.Helper()
	var out []string
	for _, p := range f.load().Check(testNow, testGrace) {
		f.t.Log(p)
		out = append(out, string(p.Kind)+" "+p.Object)
	}
	return out
}

// addressClaim creates a Cluster API IPAddressClaim of namespace default
// answered, as kipam would, with addr from pool: its IPAddress, its
// ledger entry (appended to pool's root) and its IPAllocation.
func (f *fixture) addressClaim(name, pool, addr string) (*capiv1beta2.IPAddressClaim, *capiv1beta2.IPAddress) {
	f.t.Helper()
	ref := capiv1beta2.IPPoolReference{APIGroup: ipamv1alpha1.GroupVersion.Group, Kind: "IPPool", Name: pool}
	c := &capiv1beta2.IPAddressClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       capiv1beta2.IPAddressClaimSpec{PoolRef: ref},
	}
	f.create(c)
	a := &capiv1beta2.IPAddress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: capiv1beta2.GroupVersion.String(), Kind: "IPAddressClaim", Name: name, UID: c.UID, Controller: ptr.To(true),
		}}},
		Spec: capiv1beta2.IPAddressSpec{ClaimRef: capiv1beta2.IPAddressClaimReference{Name: name}, PoolRef: ref, Address: addr, Prefix: ptr.To[int32](16)},
	}
	f.create(a)
	f.editLedger(pool, func(s *ipamv1alpha1.IPLedgerSpec) {
		s.Allocations += fmt.Sprintf("%s/32 IPAddressClaim/default %d %s\n", addr, committed.Unix(), c.UID)
	})
	f.allocation(pool, addr+"/32", ipamv1alpha1.ClaimRef{Kind: "IPAddressClaim", Namespace: "default", Name: name, UID: c.UID}, string(c.UID))
	return c, a
}
