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
	"slices"
	"strconv"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// pagedReader lists as the API server does with a limit: a page at a
// time, each naming where the next starts. A list of a namespace without
// a limit is refused, so that a test sees every read that could return a
// whole namespace's claims at once; a cluster-wide one (pools) is passed
// on. It counts the lists.
type pagedReader struct {
	client.Reader
	size  int // items a page; 0: the limit the caller asks
	lists int
}

func (p *pagedReader) List(ctx context.Context, l client.ObjectList, opts ...client.ListOption) error {
	p.lists++
	o := &client.ListOptions{}
	o.ApplyOptions(opts)
	if o.Limit <= 0 {
		if o.Namespace != "" {
			return fmt.Errorf("an unpaged list of namespace %s", o.Namespace)
		}
		return p.Reader.List(ctx, l, opts...)
	}
	size, from := int(o.Limit), 0
	if p.size > 0 {
		size = p.size
	}
	if o.Continue != "" {
		from, _ = strconv.Atoi(o.Continue)
	}
	o.Limit, o.Continue = 0, ""
	if err := p.Reader.List(ctx, l, o); err != nil {
		return err
	}
	items, err := apimeta.ExtractList(l)
	if err != nil {
		return err
	}
	to := min(from+size, len(items))
	if err := apimeta.SetList(l, items[from:to]); err != nil {
		return err
	}
	if to < len(items) {
		l.(metav1.ListInterface).SetContinue(strconv.Itoa(to))
	}
	return nil
}

// TestASweepKeepsOnlyTheLiveClaimsThatMayCarryItsEntries: confirming an
// entry against the API server reads the namespace's claims in pages and
// keeps only those ipam.Carries could answer for one of the ledger's
// entries (a claim waiting, or one holding one of its prefixes in its
// pool), however many the namespace holds; every one that carries an entry
// is among them, every page read.
func TestASweepKeepsOnlyTheLiveClaimsThatMayCarryItsEntries(t *testing.T) {
	const pool, ns = "p", "tenant"
	claim := func(name, pool, cidr string) ipamv1alpha1.IPClaim {
		c := ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)},
			Spec: ipamv1alpha1.IPClaimSpec{Pool: pool, CIDR: cidr}}
		if cidr != "" {
			c.Annotations = map[string]string{ipam.PoolAnnotation: pool, ipam.EntryAnnotation: "id-" + name}
		}
		return c
	}
	var claims []ipamv1alpha1.IPClaim
	for i := range 3 * livePage {
		claims = append(claims, claim(fmt.Sprintf("other-%d", i), pool, fmt.Sprintf("10.1.%d.%d/32", i/256, i%256)))
	}
	// A claim of a pool selector: its pool is the annotation alone.
	selected := claim("selected", "", "10.0.0.4/32")
	selected.Spec.PoolSelector = &metav1.LabelSelector{}
	selected.Annotations[ipam.PoolAnnotation] = pool
	// A dual-stack claim whose second family is the ledger's pool's.
	dual := claim("dual", "q", "10.9.9.9/32")
	dual.Spec.CIDRs = []string{"10.9.9.9/32", "2001:db8::5/128"}
	dual.Annotations[ipam.PoolAnnotation] = "q"
	dual.Annotations[ipam.SecondaryPoolAnnotation] = pool
	claims = append(claims,
		claim("holder", pool, "10.0.0.1/32"),
		claim("other-pool", "q", "10.0.0.2/32"), // the ledger's prefix, in another pool
		claim("waiting", pool, ""),
		selected, dual,
		ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "elsewhere", Name: "x"}, Spec: ipamv1alpha1.IPClaimSpec{Pool: pool}},
	)
	entries := map[netip.Prefix]ipam.Entry{
		netip.MustParsePrefix("10.0.0.1/32"):     {Holder: ipam.ClaimHolder(ns), ID: "id-holder"},
		netip.MustParsePrefix("10.0.0.2/32"):     {Holder: ipam.ClaimHolder(ns), ID: "id-gone"},
		netip.MustParsePrefix("10.0.0.3/32"):     {Holder: ipam.ClaimHolder(ns), ID: "uid-waiting"},
		netip.MustParsePrefix("10.0.0.4/32"):     {Holder: ipam.ClaimHolder(ns), ID: "id-selected"},
		netip.MustParsePrefix("2001:db8::5/128"): {Holder: ipam.ClaimHolder(ns), ID: "id-dual"},
	}
	sch := runtime.NewScheme()
	if err := ipamv1alpha1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	b := fake.NewClientBuilder().WithScheme(sch)
	for i := range claims {
		b = b.WithObjects(&claims[i])
	}
	r := &pagedReader{Reader: b.Build()}
	live := newLiveClaims(pool, entries)
	kept, err := live.in(context.Background(), r, ns)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range kept {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	if want := []string{"dual", "holder", "selected", "waiting"}; !slices.Equal(names, want) {
		t.Errorf("kept %d of %d claims (%v, ...), want %v", len(names), len(claims), names[:min(len(names), 4)], want)
	}
	inNamespace := len(claims) - 1        // all but x
	pages := (inNamespace-1)/livePage + 1 // every page read
	if r.lists != pages {
		t.Errorf("listed %d pages, want %d", r.lists, pages)
	}
	for p, e := range entries {
		carried := slices.ContainsFunc(kept, func(c ipamv1alpha1.IPClaim) bool { return ipam.Carries(pool, p, e, &c) })
		want := slices.ContainsFunc(claims, func(c ipamv1alpha1.IPClaim) bool { return ipam.Carries(pool, p, e, &c) })
		if carried != want || want != (e.ID != "id-gone") {
			t.Errorf("entry %s (%s): carried among the kept claims %v, among all %v", p, e.ID, carried, want)
		}
	}
	if _, err := live.in(context.Background(), r, ns); err != nil || r.lists != pages {
		t.Errorf("a second look at the namespace listed it again (%d lists, %v)", r.lists, err)
	}
}

// TestTheSweepFindsAnAddressClaimOnALaterPage: an entry of an
// IPAddressClaim the cache does not show (yet) is confirmed against the
// API server a page at a time; a claim that carries its entry on the last
// page keeps it, as on the first.
func TestTheSweepFindsAnAddressClaimOnALaterPage(t *testing.T) {
	b, objs, _ := servedFixture(t)
	c := b.WithObjects(objs...).Build()
	ctx := context.Background()
	// The cache lags: it shows none of the claims.
	lagging := interceptor.NewClient(c, interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, opts ...client.ListOption) error {
		if _, ok := l.(*capiv1beta2.IPAddressClaimList); ok {
			return nil
		}
		return c.List(ctx, l, opts...)
	}})
	clock := &fakeClock{t: time.Now()}
	api := &pagedReader{Reader: c, size: 1}
	sweep := &IPLedgerReconciler{Client: lagging, APIReader: api, Manager: ipam.NewManager(ipam.ClientStore{Reader: c, Writer: c}, nil),
		Recorder: nopRecorder{}, OrphanGrace: DefaultOrphanGrace, Now: clock.Now, Sightings: &sightings{}, AddressClaims: true}
	req := ctrl.Request{NamespacedName: client.ObjectKey{Name: "lookup-pool"}}
	if _, err := sweep.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	clock.Add(DefaultOrphanGrace + time.Second)
	if _, err := sweep.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if api.lists < 3 {
		t.Errorf("the API server was listed %d times, want a page a claim", api.lists)
	}
	for i := range 3 {
		if n := entriesOf(t, c, types.UID(fmt.Sprintf("claim-uid-%d", i))); n != 1 {
			t.Errorf("machine-%d: %d entries left, want its one: the sweep released an entry its claim carries", i, n)
		}
	}
}
