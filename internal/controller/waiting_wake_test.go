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
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// A waiting claim draws on the pool spec.pool names, each of spec.pools
// (one a family), or the pools its spec.poolSelector selects: its
// deletion wakes the ledgers of any of them that record the entry a bind
// left for it, not only spec.pool's (none for a claim without one).
func TestAWaitingClaimsDeletionWakesTheLedgersOfEveryPoolItDrawsOn(t *testing.T) {
	const uid = "3f1f6a36-3b8e-4b8a-9d55-0d6b2f7f3c11"
	for _, tc := range []struct {
		name string
		spec ipamv1alpha1.IPClaimSpec
	}{
		{name: "by selector", spec: ipamv1alpha1.IPClaimSpec{PoolSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "wake"}},
			IPFamily: ipamv1alpha1.IPv4, PrefixLength: ptr.To(int32(32))}},
		{name: "the second family of a dual-stack claim", spec: ipamv1alpha1.IPClaimSpec{Pools: []string{"other-pool", "selected-pool"},
			IPFamilyPolicy: ipamv1alpha1.RequireDualStack, IPFamilies: []ipamv1alpha1.IPFamily{ipamv1alpha1.IPv6, ipamv1alpha1.IPv4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, objs, _ := servedFixture(t)
			claim := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "waiter", UID: uid}, Spec: tc.spec}
			pool := &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "selected-pool", Labels: map[string]string{"tier": "wake"}},
				Spec: ipamv1alpha1.IPPoolSpec{CIDR: "10.252.0.0/24"}}
			ledger := &ipamv1alpha1.IPLedger{
				ObjectMeta: metav1.ObjectMeta{Name: pool.Name, Labels: map[string]string{ipamv1alpha1.LabelPool: pool.Name}},
				Spec: ipamv1alpha1.IPLedgerSpec{Pool: pool.Name, Allocations: fmt.Sprintf("10.252.0.1/32 %s %d %s\n",
					ipam.ClaimHolder("default"), time.Now().Unix(), uid)},
			}
			r := &IPLedgerReconciler{Client: b.WithObjects(append(objs, pool, ledger)...).Build()}
			got := r.ledgerOfClaim(context.Background(), claim, true)
			if len(got) != 1 || got[0].NamespacedName != client.ObjectKeyFromObject(ledger) {
				t.Errorf("the waiting claim's deletion wakes %v; want the ledger recording its bind's entry, %s", got, ledger.Name)
			}
		})
	}
}
