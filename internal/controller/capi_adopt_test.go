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
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// versionCountingStore is a ledger store that counts the consistent reads
// of a pool's ledgers' versions: what an Adopt costs each batch of the
// pool's commit queue.
type versionCountingStore struct {
	ipam.ClientStore
	versions *int
}

func (s versionCountingStore) Versions(ctx context.Context, pool string, names []string) (map[string]string, error) {
	*s.versions++
	return s.ClientStore.Versions(ctx, pool, names)
}

// servedFixture is addressClaimFixture with a pool kipam serves: its
// ledger records the pool's uid, and the address space records its prefix.
func servedFixture(t *testing.T) (*fake.ClientBuilder, []client.Object, *ipamv1alpha1.IPLedger) {
	t.Helper()
	b, objs := addressClaimFixture(t, 3)
	ledger := objs[len(objs)-1].(*ipamv1alpha1.IPLedger)
	ledger.Spec.PoolUID = "pool-uid"
	space := &ipamv1alpha1.IPLedger{
		ObjectMeta: metav1.ObjectMeta{Name: ipam.SpaceIPv4},
		Spec: ipamv1alpha1.IPLedgerSpec{Pool: ipam.SpaceIPv4, Allocations: fmt.Sprintf("10.251.0.0/24 %s %d pool-uid\n",
			ipam.PoolHolder("lookup-pool"), time.Now().Add(-time.Hour).Unix())},
	}
	return b, append(objs, space), ledger
}

// addressClaimReconciler is an IPAddressClaimReconciler reading and
// writing c alone, its addresses committed by m (a Manager on c when nil).
func addressClaimReconciler(c client.Client, m *ipam.Manager) *IPAddressClaimReconciler {
	if m == nil {
		m = ipam.NewManager(ipam.ClientStore{Reader: c, Writer: c}, nil)
	}
	return &IPAddressClaimReconciler{Client: c, APIReader: c, Manager: m, Resolver: &ipam.Resolver{Reader: c, APIReader: c},
		Recorder: nopRecorder{}, Now: time.Now}
}

// newAddressClaim is an IPAddressClaim of the fixture's pool.
func newAddressClaim(name string, uid types.UID, finalizers ...string) *capiv1beta2.IPAddressClaim {
	return &capiv1beta2.IPAddressClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: uid, Finalizers: finalizers},
		Spec: capiv1beta2.IPAddressClaimSpec{PoolRef: capiv1beta2.IPPoolReference{
			APIGroup: ipamv1alpha1.GroupVersion.Group, Kind: "IPPool", Name: "lookup-pool"}},
	}
}

// answeredAddress reconciles claim once and returns the address its
// IPAddress carries, failing unless the claim is Ready with it.
func answeredAddress(t *testing.T, r *IPAddressClaimReconciler, c client.Client, claim *capiv1beta2.IPAddressClaim) string {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(claim)}); err != nil {
		t.Fatal(err)
	}
	var got capiv1beta2.IPAddressClaim
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(claim), &got); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(got.Status.Conditions, capiv1beta2.ReadyCondition) || got.Status.AddressRef.Name != claim.Name {
		t.Fatalf("claim %s is not answered after its reconcile: %+v", claim.Name, got.Status)
	}
	var addr capiv1beta2.IPAddress
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(claim), &addr); err != nil {
		t.Fatalf("claim %s is Ready without its IPAddress: %v", claim.Name, err)
	}
	return addr.Spec.Address
}

// entriesOf counts the entries the pool's ledger records for uid.
func entriesOf(t *testing.T, c client.Client, uid types.UID) int {
	t.Helper()
	l, err := ipam.ReadLedger(context.Background(), c, "lookup-pool")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range l.Allocations {
		if e.Is(ipam.AddressClaimHolder("default"), string(uid)) {
			n++
		}
	}
	return n
}

// A claim whose entry the pool owner's memory does not record is
// allocated without reading the pool's ledgers' versions (AdoptKnown's
// miss), whether it holds kipam's finalizer from its create (kipam's
// admission webhook) or gets it from its reconcile: that read, in the
// pool's commit queue ahead of every batch, took longer than the batch's
// write under a burst of claims on a loaded API server (a consistent
// list), and each claim of the burst waited for it.
func TestAFreshAddressClaimIsAllocatedWithoutReadingTheLedgers(t *testing.T) {
	b, objs, _ := servedFixture(t)
	first, second := newAddressClaim("machine-new", "claim-uid-new"), newAddressClaim("machine-next", "claim-uid-next", ipamv1alpha1.ClaimFinalizer)
	c := b.WithObjects(append(objs, first, second)...).WithStatusSubresource(&capiv1beta2.IPAddressClaim{}).Build()
	versions := 0
	m := ipam.NewManager(versionCountingStore{ipam.ClientStore{Reader: c, Writer: c}, &versions}, nil)
	r := addressClaimReconciler(c, m)
	held := map[string]bool{"10.251.0.1": true, "10.251.0.2": true, "10.251.0.3": true}
	for _, claim := range []*capiv1beta2.IPAddressClaim{first, second} {
		// The first builds the pool's memory from its ledgers; the second
		// is answered from memory, fenced by its write.
		versions = 0
		got := answeredAddress(t, r, c, claim)
		if held[got] {
			t.Errorf("claim %s got %s, which another claim holds", claim.Name, got)
		}
		held[got] = true
		if n := entriesOf(t, c, claim.UID); n != 1 {
			t.Errorf("the pool records %d entries for claim %s, want 1", n, claim.Name)
		}
		if versions != 0 {
			t.Errorf("allocating for claim %s, whose entry memory does not record, read the pool's ledgers' versions %d times, want none", claim.Name, versions)
		}
	}
}

// A claim that holds the finalizer may hold an entry an earlier pass
// committed before it could create its IPAddress: that entry is its
// answer, never a second one. So is a claim whose cached copy lacks the
// finalizer an earlier pass stored (the finalizer's patch, made against
// the cached resourceVersion, conflicts, and the claim read from the API
// server holds it), and a claim whose finalizer someone else removed after
// its IPAddress was created.
func TestAnAddressClaimThatMayHoldAnEntryAdoptsIt(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		finalizer, stale, ipa bool
	}{
		{name: "it holds the finalizer", finalizer: true},
		{name: "the cache is behind", finalizer: true, stale: true},
		{name: "its finalizer was removed after its IPAddress was created", ipa: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, objs, ledger := servedFixture(t)
			claim := newAddressClaim("machine-half", "claim-uid-half")
			if tc.finalizer {
				claim.Finalizers = []string{ipamv1alpha1.ClaimFinalizer}
			}
			ledger.Spec.Allocations += fmt.Sprintf("10.251.0.9/32 %s %d %s\n", ipam.AddressClaimHolder("default"),
				time.Now().Add(-time.Minute).Unix(), claim.UID)
			objs = append(objs, claim)
			if tc.ipa {
				objs = append(objs, &capiv1beta2.IPAddress{
					ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: claim.Name, Finalizers: []string{ipamv1alpha1.AddressFinalizer},
						OwnerReferences: []metav1.OwnerReference{{APIVersion: capiv1beta2.GroupVersion.String(), Kind: "IPAddressClaim",
							Name: claim.Name, UID: claim.UID, Controller: ptr.To(true)}}},
					Spec: capiv1beta2.IPAddressSpec{ClaimRef: capiv1beta2.IPAddressClaimReference{Name: claim.Name}, PoolRef: claim.Spec.PoolRef,
						Address: "10.251.0.9", Prefix: ptr.To(int32(24))},
				})
			}
			store := b.WithObjects(objs...).WithStatusSubresource(&capiv1beta2.IPAddressClaim{}).Build()
			c := client.Client(store)
			conflicts := 0
			if tc.stale {
				c = interceptor.NewClient(store, interceptor.Funcs{
					Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
						err := c.Get(ctx, key, obj, opts...)
						if cl, ok := obj.(*capiv1beta2.IPAddressClaim); ok && err == nil {
							cl.Finalizers, cl.ResourceVersion = nil, "1" // as cached before the earlier pass
						}
						return err
					},
					Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
						if _, ok := obj.(*capiv1beta2.IPAddressClaim); ok {
							if data, _ := patch.Data(obj); strings.Contains(string(data), `"resourceVersion":"1"`) {
								conflicts++
								return apierrors.NewConflict(schema.GroupResource{Group: capiv1beta2.GroupVersion.Group, Resource: "ipaddressclaims"},
									obj.GetName(), fmt.Errorf("the object has been modified"))
							}
						}
						return c.Patch(ctx, obj, patch, opts...)
					},
				})
			}
			r := &IPAddressClaimReconciler{Client: c, APIReader: store, Manager: ipam.NewManager(ipam.ClientStore{Reader: store, Writer: store}, nil),
				Resolver: &ipam.Resolver{Reader: store, APIReader: store}, Recorder: nopRecorder{}, Now: time.Now}
			if got := answeredAddress(t, r, store, claim); got != "10.251.0.9" {
				t.Errorf("the claim got %s, want 10.251.0.9, the entry an earlier pass committed for it", got)
			}
			if n := entriesOf(t, store, claim.UID); n != 1 {
				t.Errorf("the pool records %d entries for the claim, want 1", n)
			}
			if tc.stale && conflicts != 1 {
				t.Errorf("the finalizer's patch against the stale cache conflicted %d times, want once", conflicts)
			}
		})
	}
}

// An address's two records, its IPAllocation and its IPAddress, are
// created at once once its entry is committed: one round trip to the API
// server before the claim is answered, not two in turn. The IPAllocation's
// create here is answered only once the IPAddress's was made, which two
// creates in turn never do (it gives up after a while, and says so).
func TestAnAddressClaimsRecordsAreCreatedAtOnce(t *testing.T) {
	b, objs, _ := servedFixture(t)
	claim := newAddressClaim("machine-new", "claim-uid-new")
	addressSent := make(chan struct{})
	overlapped := false
	c := b.WithObjects(append(objs, claim)...).WithStatusSubresource(&capiv1beta2.IPAddressClaim{}).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				switch obj.(type) {
				case *capiv1beta2.IPAddress:
					close(addressSent)
				case *ipamv1alpha1.IPAllocation:
					select {
					case <-addressSent:
						overlapped = true
					case <-time.After(10 * time.Second):
					}
				}
				return c.Create(ctx, obj, opts...)
			},
		}).Build()
	r := addressClaimReconciler(c, nil)
	answeredAddress(t, r, c, claim)
	if !overlapped {
		t.Error("the IPAddress was not created while the IPAllocation's create was under way: the records were created in turn")
	}
	var allocs ipamv1alpha1.IPAllocationList
	if err := c.List(context.Background(), &allocs); err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := range allocs.Items {
		if allocs.Items[i].Spec.ClaimRef.UID == claim.UID {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d IPAllocations record the claim, want 1", n)
	}
}

// eventCounter counts the Events a reconciler records.
type eventCounter struct{ n *int }

func (e eventCounter) Eventf(runtime.Object, runtime.Object, string, string, string, string, ...any) {
	*e.n++
}

// A claim answered costs no Event: its Ready condition says what one
// would, and every claim of a burst would pay the write.
func TestAnAnsweredAddressClaimRecordsNoEvent(t *testing.T) {
	b, objs, _ := servedFixture(t)
	claim := newAddressClaim("machine-quiet", "claim-uid-quiet")
	c := b.WithObjects(append(objs, claim)...).WithStatusSubresource(&capiv1beta2.IPAddressClaim{}).Build()
	events := 0
	r := addressClaimReconciler(c, nil)
	r.Recorder = eventCounter{&events}
	answeredAddress(t, r, c, claim)
	if events != 0 {
		t.Errorf("answering a claim recorded %d Events, want none", events)
	}
}
