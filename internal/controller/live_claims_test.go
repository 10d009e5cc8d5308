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

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

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
	claims = append(claims,
		claim("holder", pool, "10.0.0.1/32"),
		claim("other-pool", "q", "10.0.0.2/32"), // the ledger's prefix, in another pool
		claim("waiting", pool, ""),
		ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "elsewhere", Name: "x"}, Spec: ipamv1alpha1.IPClaimSpec{Pool: pool}},
	)
	entries := map[netip.Prefix]ipam.Entry{
		netip.MustParsePrefix("10.0.0.1/32"): {Holder: ipam.ClaimHolder(ns), ID: "id-holder"},
		netip.MustParsePrefix("10.0.0.2/32"): {Holder: ipam.ClaimHolder(ns), ID: "id-gone"},
		netip.MustParsePrefix("10.0.0.3/32"): {Holder: ipam.ClaimHolder(ns), ID: "uid-waiting"},
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
	if want := []string{"holder", "waiting"}; !slices.Equal(names, want) {
		t.Errorf("kept %d of %d claims (%v, ...), want %v", len(names), len(claims), names[:min(len(names), 4)], want)
	}
	inNamespace := len(claims) - 1
	pages := (inNamespace-1)/livePage + 1 // every page read
	if r.lists != pages {
		t.Errorf("listed %d pages, want %d", r.lists, pages)
	}
	for p, e := range entries {
		carried := slices.ContainsFunc(kept, func(c ipamv1alpha1.IPClaim) bool { return ipam.Carries(pool, p, e, &c) })
		want := slices.ContainsFunc(claims, func(c ipamv1alpha1.IPClaim) bool { return ipam.Carries(pool, p, e, &c) })
		if carried != want {
			t.Errorf("entry %s (%s): carried among the kept claims %v, among all %v", p, e.ID, carried, want)
		}
	}
	if _, err := live.in(context.Background(), r, ns); err != nil || r.lists != pages {
		t.Errorf("a second look at the namespace listed it again (%d lists, %v)", r.lists, err)
	}
}
