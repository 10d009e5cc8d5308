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

package ipam

import (
	"context"
	"fmt"
	"io"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// BenchmarkReadLedgerFromCache reads one pool's sharded ledger from an
// informer cache that holds the ledgers of `pools` pools, as the sweeps,
// the pool controller and the claim controllers do for every event: the
// cost must not grow with the number of pools.
//
//	go test -run '^$' -bench ReadLedgerFromCache -benchtime 2000x ./internal/ipam
func BenchmarkReadLedgerFromCache(b *testing.B) {
	c, cfg := apiServerConfig(b)
	ctx := context.Background()
	m := NewManager(ClientStore{Reader: c, Writer: c}, nil)
	created := 0
	for _, pools := range []int{10, 100, 1_000} {
		for ; created < pools; created++ {
			pool := &ipamv1alpha1.IPPool{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("read-%d", created), Finalizers: []string{ipamv1alpha1.PoolFinalizer}},
				Spec:       ipamv1alpha1.IPPoolSpec{CIDR: fmt.Sprintf("10.%d.%d.0/22", created/64, created%64*4)},
			}
			if err := c.Create(ctx, pool); err != nil {
				b.Fatal(err)
			}
			if ShardBits(pool) == 0 {
				b.Fatalf("pool %s is not sharded", pool.Spec.CIDR)
			}
			placeTop(b, m, pool)
			fill(b, m, pool, 1) // the root ledger and one shard
		}
		cached := startCache(b, cfg, c.Scheme())
		b.Run(fmt.Sprintf("pools=%d", pools), func(b *testing.B) {
			for b.Loop() {
				l, err := ReadLedger(ctx, cached, "read-0")
				if err != nil {
					b.Fatal(err)
				}
				if len(l.Allocations) != 1 {
					b.Fatalf("read %d entries, want 1", len(l.Allocations))
				}
			}
		})
	}
}

// startCache starts an informer cache of the API server for the test, set
// up as the manager's (IndexLedgers), and returns it once synced.
func startCache(tb testing.TB, cfg *rest.Config, scheme *runtime.Scheme) cache.Cache {
	tb.Helper()
	log.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	c, err := cache.New(cfg, cache.Options{Scheme: scheme})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	tb.Cleanup(stop)
	if err := IndexLedgers(ctx, c); err != nil {
		tb.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		tb.Fatal("the cache did not start")
	}
	// The first list starts the ledgers' informer and waits for its sync.
	if err := c.List(ctx, &ipamv1alpha1.IPLedgerList{}); err != nil {
		tb.Fatal(err)
	}
	return c
}
