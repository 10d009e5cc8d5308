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
	"net/netip"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/testenv"
)

// BenchmarkCommitOnAPIServer measures one claim's commit, alone (one
// caller, so one ledger write per op), against a real kube-apiserver and
// etcd, in pools already holding `live` allocations: with a sharded ledger
// the cost must not grow with the pool.
//
//	go test -run '^$' -bench CommitOnAPIServer -benchtime 300x ./internal/ipam
func BenchmarkCommitOnAPIServer(b *testing.B) {
	c := apiServer(b)
	ctx := context.Background()
	for i, live := range []int{0, 1_000, 10_000} {
		pool := &ipamv1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", live), Finalizers: []string{ipamv1alpha1.PoolFinalizer}},
			Spec:       ipamv1alpha1.IPPoolSpec{CIDR: fmt.Sprintf("10.%d.0.0/16", i)},
		}
		if err := c.Create(ctx, pool); err != nil {
			b.Fatal(err)
		}
		m := NewManager(ClientStore{Reader: c, Writer: c}, nil)
		placeTop(b, m, pool)
		fill(b, m, pool, live)
		b.Run(fmt.Sprintf("live=%d", live), func(b *testing.B) {
			for b.Loop() {
				id := NewEntryID()
				p, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: "IPClaim/bench", ID: id})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := m.Release(ctx, pool, p, "IPClaim/bench", id, 0, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(2*b.N)/1000, "ms/commit")
		})
	}
}

// apiServer starts a kube-apiserver and etcd for the test and returns a
// client of it, unthrottled.
func apiServer(tb testing.TB) client.Client {
	tb.Helper()
	c, _ := apiServerConfig(tb)
	return c
}

// apiServerConfig is apiServer, with the client's config.
func apiServerConfig(tb testing.TB) (client.Client, *rest.Config) {
	tb.Helper()
	env, err := testenv.New(false)
	if err != nil {
		tb.Fatal(err)
	}
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop() // what started before the failure (a CRD refused) still runs
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = env.Stop() })
	cfg.QPS, cfg.Burst = -1, 0
	scheme := runtime.NewScheme()
	if err := ipamv1alpha1.AddToScheme(scheme); err != nil {
		tb.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		tb.Fatal(err)
	}
	return c, cfg
}

// placeTop records a top-level pool's prefix in the address space of its
// family, as kipam's webhook does when it creates the pool: a pool whose
// prefix is not recorded is not served.
func placeTop(tb testing.TB, m *Manager, pool *ipamv1alpha1.IPPool) {
	tb.Helper()
	cidr := netip.MustParsePrefix(pool.Spec.CIDR)
	if _, err := m.Allocate(context.Background(), Request{Pool: Space(cidr.Addr()), CIDR: cidr, Bits: cidr.Bits(),
		Holder: PoolHolder(pool.Name), ID: PoolEntryID(pool), Adopt: true}); err != nil {
		tb.Fatal(err)
	}
}

// fill allocates n hosts from 64 callers at once, so that they batch.
func fill(b *testing.B, m *Manager, pool *ipamv1alpha1.IPPool, n int) {
	b.Helper()
	var wg sync.WaitGroup
	work := make(chan struct{}, n)
	for range n {
		work <- struct{}{}
	}
	close(work)
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			for range work {
				if _, err := m.Allocate(context.Background(), Request{Pool: pool, Bits: 32, Holder: "IPClaim/bench"}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
