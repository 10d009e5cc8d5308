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

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

type heldListKey struct{}

// Two creates of pool x over the same cidr at once: attempt A commits the
// entry and is denied after its commit (its list of the pools fails);
// meanwhile attempt B takes the entry over (Request.Reclaim) and is
// stored. A's denial gave back the entry by holder and ID alone, which
// freed the prefix stored pool x carries: its parent then handed an
// address inside x out again (found in review). A gives back its entry as
// it recorded it, time included, and B's renewal makes that a no-op.
func TestACarveDeniedAfterItsCommitLeavesTheEntryAnotherCreateTookOver(t *testing.T) {
	parent := &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "uid-p", Generation: 1, Finalizers: []string{ipamv1alpha1.PoolFinalizer}},
		Spec:       ipamv1alpha1.IPPoolSpec{CIDR: "10.50.0.0/16"},
	}
	c := fake.NewClientBuilder().WithScheme(answerScheme(t)).WithObjects(parent).WithIndex(&ipamv1alpha1.IPLedger{}, ipam.LedgerPoolField, ipam.LedgerPool).Build()
	reached, proceed := make(chan struct{}), make(chan struct{})
	ic := interceptor.NewClient(c, interceptor.Funcs{
		List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if _, ok := list.(*ipamv1alpha1.IPPoolList); ok && ctx.Value(heldListKey{}) != nil {
				close(reached) // A has committed: the list follows the commit
				<-proceed
				return errors.New("etcdserver: request timed out")
			}
			return cl.List(ctx, list, opts...)
		},
	})
	m := ipam.NewManager(ipam.ClientStore{Reader: c, Writer: c}, nil)
	ctx := context.Background()
	pcidr := netip.MustParsePrefix(parent.Spec.CIDR)
	if _, err := m.Allocate(ctx, ipam.Request{Pool: ipam.Space(pcidr.Addr()), CIDR: pcidr, Bits: pcidr.Bits(),
		Holder: ipam.PoolHolder("p"), ID: ipam.PoolEntryID(parent)}); err != nil {
		t.Fatal(err)
	}
	a := &IPPoolAllocator{Manager: m, Reader: ic, APIReader: ic}
	v := &IPPoolValidator{APIReader: ic}
	x := netip.MustParsePrefix("10.50.1.0/24")
	newX := func() *ipamv1alpha1.IPPool {
		return &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: ipamv1alpha1.IPPoolSpec{CIDR: x.String(), ParentPool: "p"}}
	}
	admit := func(ctx context.Context) context.Context {
		return admission.NewContextWithRequest(ctx, admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Operation: admissionv1.Create}})
	}

	first := make(chan error, 1)
	go func() { first <- a.Default(admit(context.WithValue(ctx, heldListKey{}, true)), newX()) }()
	<-reached
	e, ok, err := ipam.LookupEntry(ctx, c, "p", x)
	if err != nil || !ok {
		t.Fatalf("attempt A's commit: recorded %v, %v", ok, err)
	}
	b := newX()
	if err := a.Default(admit(ctx), b); err != nil {
		t.Fatalf("attempt B: %v", err)
	}
	if got := b.Annotations[ipam.EntryAnnotation]; got != e.ID {
		t.Fatalf("attempt B carries entry %q, want the one it took over, %q", got, e.ID)
	}
	if _, err := v.ValidateCreate(admit(ctx), b); err != nil {
		t.Fatalf("attempt B's validation: %v", err)
	}
	b.UID = "uid-x"
	if err := c.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	q, err := m.Allocate(ctx, ipam.Request{Pool: b, Bits: 32, Holder: ipam.ClaimHolder("ns"), ID: "claim-in-x"})
	if err != nil {
		t.Fatalf("a claim from x: %v", err)
	}

	close(proceed)
	if err := <-first; err == nil {
		t.Fatal("attempt A was not denied")
	}
	if got, ok, err := ipam.LookupEntry(ctx, c, "p", x); err != nil || !ok || !got.Is(ipam.PoolHolder("x"), e.ID) {
		t.Errorf("after attempt A's denial p's ledger records %s as %+v (recorded %v, %v); want pool x's entry %s, which the stored pool carries", x, got, ok, err, e.ID)
	}
	if dup, err := m.Allocate(ctx, ipam.Request{Pool: parent, CIDR: q, Bits: 32, Holder: ipam.ClaimHolder("other"), ID: "claim-in-p"}); err == nil {
		t.Errorf("%s, held by a claim of pool x, was handed out again by its parent as %s", q, dup)
	}
}
