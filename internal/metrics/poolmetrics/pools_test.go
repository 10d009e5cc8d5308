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

package poolmetrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

func TestPoolCollector(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := ipamv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	counted := &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "tenant-a"},
		Spec:       ipamv1alpha1.IPPoolSpec{CIDR: "10.10.0.0/16"},
		Status: ipamv1alpha1.IPPoolStatus{
			Capacity: "65536", Allocated: "18", Available: "65508",
			LargestFreePrefix: ptr.To[int32](17), Claims: 4, ChildPools: 1,
			Conditions: []metav1.Condition{{Type: ipamv1alpha1.ConditionExhausted, Status: metav1.ConditionFalse}},
		},
	}
	full := &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "full"},
		Spec:       ipamv1alpha1.IPPoolSpec{CIDR: "2001:db8::/32", ParentPool: "v6"},
		Status: ipamv1alpha1.IPPoolStatus{
			// 2^96: beyond an int64, as IPv6 counts are.
			Capacity: "79228162514264337593543950336", Allocated: "79228162514264337593543950336", Available: "0",
			Claims: 1,
			Conditions: []metav1.Condition{{Type: ipamv1alpha1.ConditionExhausted, Status: metav1.ConditionTrue},
				{Type: ipamv1alpha1.ConditionOverlapping, Status: metav1.ConditionTrue, Reason: ipamv1alpha1.ReasonOverlap}},
		},
	}
	uncounted := &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "new"},
		Spec:       ipamv1alpha1.IPPoolSpec{CIDR: "192.168.0.0/24"},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(counted, full, uncounted).Build()

	want := `
# HELP kipam_pool_allocated_addresses Addresses held by the pool's claims and child pools.
# TYPE kipam_pool_allocated_addresses gauge
kipam_pool_allocated_addresses{pool="full"} 7.922816251426434e+28
kipam_pool_allocated_addresses{pool="tenant-a"} 18
# HELP kipam_pool_available_addresses Addresses neither allocated, reserved nor held back by a reuse grace period. allocated / (allocated + available) is the share of the usable space in use.
# TYPE kipam_pool_available_addresses gauge
kipam_pool_available_addresses{pool="full"} 0
kipam_pool_available_addresses{pool="tenant-a"} 65508
# HELP kipam_pool_capacity_addresses Addresses the pool spans.
# TYPE kipam_pool_capacity_addresses gauge
kipam_pool_capacity_addresses{pool="full"} 7.922816251426434e+28
kipam_pool_capacity_addresses{pool="tenant-a"} 65536
# HELP kipam_pool_child_pools IPPools carved out of the pool.
# TYPE kipam_pool_child_pools gauge
kipam_pool_child_pools{pool="full"} 0
kipam_pool_child_pools{pool="tenant-a"} 1
# HELP kipam_pool_claims IPClaims holding a prefix of the pool.
# TYPE kipam_pool_claims gauge
kipam_pool_claims{pool="full"} 1
kipam_pool_claims{pool="tenant-a"} 4
# HELP kipam_pool_exhausted 1 when the pool's Exhausted condition is True: no prefix of its default length is left.
# TYPE kipam_pool_exhausted gauge
kipam_pool_exhausted{pool="full"} 1
kipam_pool_exhausted{pool="tenant-a"} 0
# HELP kipam_pool_info One series per pool, 1, labelled with its CIDR and parent pool.
# TYPE kipam_pool_info gauge
kipam_pool_info{cidr="10.10.0.0/16",parent="",pool="tenant-a"} 1
kipam_pool_info{cidr="192.168.0.0/24",parent="",pool="new"} 1
kipam_pool_info{cidr="2001:db8::/32",parent="v6",pool="full"} 1
# HELP kipam_pool_overlapping 1 when the pool's Overlapping condition is True: it overlaps another pool, created before kipam recorded every pool's prefix.
# TYPE kipam_pool_overlapping gauge
kipam_pool_overlapping{pool="full"} 1
kipam_pool_overlapping{pool="tenant-a"} 0
# HELP kipam_pool_largest_free_prefix_length Prefix length of the largest free aligned block: the largest claim the pool can still satisfy. Absent when nothing is free.
# TYPE kipam_pool_largest_free_prefix_length gauge
kipam_pool_largest_free_prefix_length{pool="tenant-a"} 17
`
	if err := testutil.CollectAndCompare(NewPoolCollector(c), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// failingReader fails every List, as a cache that has not synced in time.
type failingReader struct{ client.Reader }

func (failingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("cache not synced")
}

func TestPoolCollectorReportsAFailedList(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewPoolCollector(failingReader{}))
	_, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), "cache not synced") {
		t.Errorf("collecting with a failing list: %v, want the list's error", err)
	}
}

func TestPoolCollectorNamespaces(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := ipamv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	limited := &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "shared"},
		Spec: ipamv1alpha1.IPPoolSpec{CIDR: "10.20.0.0/16",
			NamespaceLimit: &ipamv1alpha1.NamespaceLimit{Claims: ptr.To[int32](10), AddressSpace: ptr.To[int32](22)}},
	}
	open := &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "open"}, Spec: ipamv1alpha1.IPPoolSpec{CIDR: "10.30.0.0/16"}}
	ledger := func(name, pool, allocations string) *ipamv1alpha1.IPLedger {
		return &ipamv1alpha1.IPLedger{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{ipamv1alpha1.LabelPool: pool}},
			Spec:       ipamv1alpha1.IPLedgerSpec{Pool: pool, Allocations: allocations},
		}
	}
	// What the limit counts: IPClaims and IPAddressClaims of a namespace
	// alike, in the root and in a shard; not a child pool's carve.
	c := fake.NewClientBuilder().WithScheme(scheme).WithIndex(&ipamv1alpha1.IPLedger{}, ipam.LedgerPoolField, ipam.LedgerPool).
		WithObjects(limited, open,
			func() *ipamv1alpha1.IPLedger {
				l := ledger("shared", "shared", "10.20.0.0/24 IPClaim/a 1 e1\n10.20.2.0/30 IPAddressClaim/b 1 e3\n10.20.128.0/20 IPPool/child 1 e4\n")
				l.UID, l.Spec.Shards = "root-uid", "10.20.1.0/24 1\n"
				return l
			}(),
			func() *ipamv1alpha1.IPLedger {
				l := ledger(ipam.ShardName("shared", 1), "shared", "10.20.1.7/32 IPClaim/a 1 e2\n")
				l.Spec.Root, l.Spec.Shard = "root-uid", "10.20.1.0/24"
				return l
			}(),
			ledger("open", "open", "10.30.0.0/24 IPClaim/c 1 e5\n"), // a pool with no limit
		).Build()
	want := `
# HELP kipam_pool_namespace_addresses Addresses the namespace's IPClaims and IPAddressClaims hold from the pool, as its ledgers record them (what spec.namespaceLimit counts), for pools with a spec.namespaceLimit.
# TYPE kipam_pool_namespace_addresses gauge
kipam_pool_namespace_addresses{namespace="a",pool="shared"} 257
kipam_pool_namespace_addresses{namespace="b",pool="shared"} 4
# HELP kipam_pool_namespace_claims Prefixes the namespace's IPClaims and IPAddressClaims hold from the pool, as its ledgers record them (what spec.namespaceLimit counts), for pools with a spec.namespaceLimit.
# TYPE kipam_pool_namespace_claims gauge
kipam_pool_namespace_claims{namespace="a",pool="shared"} 2
kipam_pool_namespace_claims{namespace="b",pool="shared"} 1
# HELP kipam_pool_namespace_limit_addresses The addresses the pool's spec.namespaceLimit.addressSpace allows one namespace.
# TYPE kipam_pool_namespace_limit_addresses gauge
kipam_pool_namespace_limit_addresses{pool="shared"} 1024
# HELP kipam_pool_namespace_limit_claims The pool's spec.namespaceLimit.claims.
# TYPE kipam_pool_namespace_limit_claims gauge
kipam_pool_namespace_limit_claims{pool="shared"} 10
`
	if err := testutil.CollectAndCompare(NewPoolCollector(c), strings.NewReader(want),
		"kipam_pool_namespace_addresses", "kipam_pool_namespace_claims",
		"kipam_pool_namespace_limit_addresses", "kipam_pool_namespace_limit_claims"); err != nil {
		t.Error(err)
	}
}

// ledgersFailingReader lists pools and fails to read ledgers.
type ledgersFailingReader struct{ client.Reader }

func (r ledgersFailingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*ipamv1alpha1.IPLedger); ok {
		return errors.New("ledgers not synced")
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

func TestPoolCollectorReportsAFailedLedgerRead(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := ipamv1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	limited := &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "shared"},
		Spec:       ipamv1alpha1.IPPoolSpec{CIDR: "10.20.0.0/16", NamespaceLimit: &ipamv1alpha1.NamespaceLimit{Claims: ptr.To[int32](1)}},
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewPoolCollector(ledgersFailingReader{fake.NewClientBuilder().WithScheme(scheme).WithObjects(limited).Build()}))
	_, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), "ledgers not synced") {
		t.Errorf("collecting with a failing ledger read: %v, want the read's error", err)
	}
}
