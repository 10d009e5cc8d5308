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

// Command load creates IPClaims against a running kipam from many workers at
// once and reports throughput and latency percentiles of `create` (which
// includes the synchronous allocation), then checks that no two claims
// overlap, waits until every claim is Ready, and reports how many API writes
// each claim cost from create to Ready (from the API server's own
// apiserver_request_total) before it deletes what it made. It only talks to
// the API server of the kubeconfig it is given: point it at the local demo
// cluster.
//
//	go run ./hack/load -kubeconfig .local/demo/cluster/kubeconfig -workers 50 -claims 2000
package main

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster running kipam")
	workers := flag.Int("workers", 50, "concurrent clients")
	claims := flag.Int("claims", 2000, "claims to create in all")
	cidr := flag.String("cidr", "10.200.0.0/16", "CIDR of the pool the run creates")
	bits := flag.Int("prefix-length", 32, "prefix length each claim asks for")
	baseline := flag.Bool("baseline", false, "create ConfigMaps instead of claims: the same client and cluster without kipam, for comparison")
	keep := flag.Bool("keep", false, "leave the pool and its claims in place, to measure a cluster holding them (delete the pool's claims, then the pool, by hand)")
	flag.Parse()
	if err := run(*kubeconfig, *workers, *claims, *cidr, *bits, *baseline, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, workers, total int, cidr string, bits int, baseline, keep bool) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100000, 100000 // measure the server, not client-side throttling
	scheme := runtime.NewScheme()
	if err := ipamv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ctx := context.Background()
	// A pool needs a name: its parent's ledger records it by that name.
	pool := &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("load-%d", time.Now().UnixNano()%1e9)}, Spec: ipamv1alpha1.IPPoolSpec{CIDR: cidr}}
	if err := c.Create(ctx, pool); err != nil {
		return fmt.Errorf("creating the pool: %w", err)
	}
	if !keep {
		defer func() { _ = c.Delete(ctx, pool) }()
	}

	before, err := requests(ctx, cfg)
	if err != nil {
		return fmt.Errorf("reading the API server's request counts: %w", err)
	}
	var (
		next      atomic.Int64
		mu        sync.Mutex
		latencies []time.Duration
		got       []netip.Prefix
		failures  = map[string]int{}
		wg        sync.WaitGroup
	)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(total) {
				claim := &ipamv1alpha1.IPClaim{
					ObjectMeta: metav1.ObjectMeta{GenerateName: "load-", Namespace: "default", Labels: map[string]string{"kipam.dev/load": pool.Name}},
					Spec:       ipamv1alpha1.IPClaimSpec{Pool: pool.Name, PrefixLength: ptr(int32(bits))},
				}
				var obj client.Object = claim
				if baseline {
					obj = &corev1.ConfigMap{ObjectMeta: claim.ObjectMeta, Data: map[string]string{"pool": pool.Name}}
				}
				t0 := time.Now()
				err := c.Create(ctx, obj)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					failures[err.Error()]++
				} else {
					latencies = append(latencies, d)
					if p, err := netip.ParsePrefix(claim.Spec.CIDR); err == nil {
						got = append(got, p)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	slices.Sort(latencies)
	pct := func(q float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(q*float64(len(latencies)-1))]
	}
	fmt.Printf("workers=%d claims=%d ok=%d failed=%d elapsed=%s throughput=%.0f/s p50=%s p95=%s p99=%s max=%s\n",
		workers, total, len(latencies), total-len(latencies), elapsed.Round(time.Millisecond),
		float64(len(latencies))/elapsed.Seconds(), pct(0.50).Round(10*time.Microsecond), pct(0.95).Round(10*time.Microsecond),
		pct(0.99).Round(10*time.Microsecond), pct(1).Round(10*time.Microsecond))
	for msg, n := range failures {
		fmt.Printf("  %d× %s\n", n, msg)
	}

	var b netipx.IPSetBuilder
	for _, p := range got {
		set, _ := b.IPSet()
		if set.OverlapsPrefix(p) {
			return fmt.Errorf("%s was handed out twice or overlaps another claim", p)
		}
		b.AddPrefix(p)
	}
	if !baseline {
		fmt.Printf("overlaps: none among %d prefixes\n", len(got))
	}

	if !baseline {
		lag, err := waitReady(ctx, c, pool.Name, len(got))
		if err != nil {
			return err
		}
		fmt.Printf("ready: the last claim was Ready %s after the last create returned\n", lag.Round(time.Millisecond))
	}
	after, err := requests(ctx, cfg)
	if err != nil {
		return fmt.Errorf("reading the API server's request counts: %w", err)
	}
	printWrites(before, after, len(latencies))

	if keep {
		fmt.Printf("kept: pool %s and the claims labelled kipam.dev/load=%s\n", pool.Name, pool.Name)
		return nil
	}
	var kind client.Object = &ipamv1alpha1.IPClaim{}
	if baseline {
		kind = &corev1.ConfigMap{}
	}
	if err := c.DeleteAllOf(ctx, kind, client.InNamespace("default"), client.MatchingLabels{"kipam.dev/load": pool.Name}); err != nil {
		return fmt.Errorf("cleaning up: %w", err)
	}
	if baseline {
		return nil
	}
	// Wait until every claim is released and gone, so that the next run
	// does not share the cluster with this one's releases.
	t0 := time.Now()
	for {
		var left ipamv1alpha1.IPClaimList
		if err := c.List(ctx, &left, client.InNamespace("default"), client.MatchingLabels{"kipam.dev/load": pool.Name}); err != nil {
			return err
		}
		if len(left.Items) == 0 {
			break
		}
		if time.Since(t0) > 5*time.Minute {
			return fmt.Errorf("%d claims still there 5 minutes after their delete", len(left.Items))
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Printf("released: every claim gone %s after the delete\n", time.Since(t0).Round(time.Millisecond))
	return nil
}

func ptr[T any](v T) *T { return &v }

// waitReady polls until n claims of the pool are Ready and returns how long
// that took after the creates ended. (A measuring tool may poll.)
func waitReady(ctx context.Context, c client.Client, pool string, n int) (time.Duration, error) {
	start := time.Now()
	for {
		var claims ipamv1alpha1.IPClaimList
		if err := c.List(ctx, &claims, client.InNamespace("default"), client.MatchingLabels{"kipam.dev/load": pool}); err != nil {
			return 0, err
		}
		ready := 0
		for i := range claims.Items {
			if meta.IsStatusConditionTrue(claims.Items[i].Status.Conditions, ipamv1alpha1.ConditionReady) {
				ready++
			}
		}
		if ready >= n {
			return time.Since(start), nil
		}
		if time.Since(start) > 5*time.Minute {
			return 0, fmt.Errorf("only %d of %d claims Ready after 5 minutes", ready, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// requestKey is a counter of apiserver_request_total: a verb on a
// resource (and subresource).
type requestKey struct{ verb, resource string }

// requests reads the API server's apiserver_request_total, summed over
// codes and scopes, from its /metrics.
func requests(ctx context.Context, cfg *rest.Config) (map[requestKey]float64, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	out := map[requestKey]float64{}
	f := families["apiserver_request_total"]
	if f == nil {
		return out, nil
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		r := labels["resource"]
		if sub := labels["subresource"]; sub != "" {
			r += "/" + sub
		}
		out[requestKey{labels["verb"], r}] += m.GetCounter().GetValue()
	}
	return out, nil
}

// printWrites prints the writes (POST, PUT, PATCH, APPLY) the API server served
// between two readings, per resource and per claim. Everything counts,
// kipam's writes and the load's own creates alike.
func printWrites(before, after map[requestKey]float64, claims int) {
	if claims == 0 {
		return
	}
	var keys []requestKey
	total := 0.0
	for k, v := range after {
		if d := v - before[k]; d > 0 && (k.verb == "POST" || k.verb == "PUT" || k.verb == "PATCH" || k.verb == "APPLY") {
			keys = append(keys, k)
			total += d
		}
	}
	slices.SortFunc(keys, func(a, b requestKey) int { return cmp.Compare(a.resource+a.verb, b.resource+b.verb) })
	fmt.Printf("writes: %.2f per claim from create to Ready (%.0f in all)\n", total/float64(claims), total)
	for _, k := range keys {
		d := after[k] - before[k]
		fmt.Printf("  %-7s %-28s %8.0f  %.3f per claim\n", k.verb, k.resource, d, d/float64(claims))
	}
}
