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

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// -scenario capi measures Cluster API's IPAM contract: IPAddressClaims
// from a kipam pool (kind capi), created to Ready, where Ready is the
// claim's status.addressRef set and its IPAddress created; beside them, in
// the same session and interleaved run by run, kipam's own IPClaims
// (kind kipam, to Ready) and, with -incluster, IPAddressClaims from an
// InClusterIPPool of Cluster API's in-cluster provider, which must be
// running against the same API server (kind incluster). Each kind has its
// own /16 pool, filled with -preloads live objects of its kind (0 first,
// then up to each level) before its timed runs at that level.

const (
	capiKipam     = "capi"
	capiInCluster = "incluster"
)

var (
	addressClaimGVR = schema.GroupVersionResource{Group: "ipam.cluster.x-k8s.io", Version: "v1beta2", Resource: "ipaddressclaims"}
	addressGVR      = schema.GroupVersionResource{Group: "ipam.cluster.x-k8s.io", Version: "v1beta2", Resource: "ipaddresses"}
	inClusterGVR    = schema.GroupVersionResource{Group: "ipam.cluster.x-k8s.io", Version: "v1alpha2", Resource: "inclusterippools"}
)

// capiKinds are the kinds a capi run alternates between.
func (h *harness) capiKinds() []string {
	kinds := []string{kipam, capiKipam}
	if h.o.noIPClaims {
		kinds = kinds[1:]
	}
	if h.o.inCluster {
		kinds = append(kinds, capiInCluster)
	}
	return kinds
}

// gvrOf is the resource a kind's objects are created as.
func gvrOf(kind string) schema.GroupVersionResource {
	switch kind {
	case bare:
		return bareGVR
	case capiKipam, capiInCluster:
		return addressClaimGVR
	}
	return claimGVR
}

// capiPool is one kind's pool at one level of a capi run.
type capiPool struct {
	kind, name, id string
	live           int // preloaded objects in it
}

// capi runs -scenario capi: for each level of -preloads, each kind's pool
// filled to it, then -reps repetitions of every -workers value, the kinds
// in turn (their order rotating from one repetition to the next).
func (h *harness) capi(ctx context.Context, out *csvFile) (err error) {
	id := fmt.Sprintf("capi-%d", time.Now().Unix()%1e6)
	var pools []*capiPool
	defer func() {
		for _, p := range pools {
			if _, derr := h.deleteAll(ctx, gvrOf(p.kind), p.id); derr != nil {
				err = errors.Join(err, derr)
			}
			h.deleteCapiPool(ctx, p)
		}
	}()
	for _, k := range h.capiKinds() {
		p := &capiPool{kind: k, id: id + "-" + k}
		if p.name, err = h.createCapiPool(ctx, k, p.id); err != nil {
			return err
		}
		pools = append(pools, p)
	}
	for _, level := range h.o.preloads {
		for _, p := range pools {
			if level > p.live {
				if err := h.fill(ctx, p.kind, p.id+"-pre", p.name, level-p.live); err != nil {
					return fmt.Errorf("preloading the %s pool to %d: %w", kindOf(p.kind), level, err)
				}
				p.live = level
			}
		}
		for rep := range h.o.reps {
			for _, w := range h.o.workers {
				for i := range pools {
					p := pools[(i+rep)%len(pools)]
					if err := h.beforeRun(ctx, p, w, rep); err != nil {
						return err
					}
					h.seq++
					if err := h.record(out)(h.capiOnce(ctx, p, w, rep, fmt.Sprintf("%s-%d", id, h.seq))); err != nil {
						return err
					}
				}
			}
		}
	}
	h.capiSummary()
	return nil
}

// beforeRun waits until kipam's work queues are empty, then runs
// -before-run, if given, before a timed run of p's kind.
func (h *harness) beforeRun(ctx context.Context, p *capiPool, workers, rep int) error {
	if err := h.idle(ctx); err != nil {
		return fmt.Errorf("before a timed run of %s at %d live: %w", kindOf(p.kind), p.live, err)
	}
	if h.o.beforeRun == "" {
		return nil
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", h.o.beforeRun)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = append(os.Environ(), "LOAD_KIND="+p.kind, "LOAD_POOL="+p.name, fmt.Sprintf("LOAD_LIVE=%d", p.live),
		fmt.Sprintf("LOAD_WORKERS=%d", workers), fmt.Sprintf("LOAD_REP=%d", rep))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("-before-run: %w", err)
	}
	return nil
}

// capiOnce times -claims creates of p's kind, then deletes them.
func (h *harness) capiOnce(ctx context.Context, p *capiPool, workers, rep int, id string) (*result, error) {
	r := &result{scenario: h.o.scenario, kind: p.kind, workers: workers, rep: rep, preload: p.live,
		failures: map[string]int{}, latency: newHist(), ready: newHist(), writesBy: map[requestKey]float64{}}
	gvr := gvrOf(p.kind)
	defer func() {
		d, err := h.deleteAll(ctx, gvr, id)
		if err != nil {
			r.failures["cleanup: "+err.Error()]++
		}
		r.release = d
	}()
	return r, h.timedCreates(ctx, r, gvr, id, p.name)
}

// createCapiPool creates kind's /16 pool: a kipam IPPool, or an
// InClusterIPPool in namespace default. A prefix already taken is
// skipped.
func (h *harness) createCapiPool(ctx context.Context, kind, id string) (string, error) {
	name := "load-" + id
	for attempt := 0; ; attempt++ {
		cidr := randomPrefix("ipv4", 16)
		var err error
		if kind == capiInCluster {
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": inClusterGVR.GroupVersion().String(), "kind": "InClusterIPPool",
				"metadata": map[string]any{"name": name, "namespace": namespace, "labels": map[string]any{runLabel: "pool"}},
				"spec":     map[string]any{"addresses": []any{cidr.String()}, "prefix": int64(16)},
			}}
			_, err = h.dyn.Resource(inClusterGVR).Namespace(namespace).Create(ctx, u, metav1.CreateOptions{})
		} else {
			_, err = h.dyn.Resource(poolGVR).Create(ctx, pool(name, map[string]any{"cidr": cidr.String(), "reuseGracePeriodSeconds": int64(0)}), metav1.CreateOptions{})
		}
		if err == nil {
			return name, nil
		}
		if attempt == 20 || !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
			return "", fmt.Errorf("creating the %s pool: %w", kindOf(kind), err)
		}
	}
}

func (h *harness) deleteCapiPool(ctx context.Context, p *capiPool) {
	if p.kind == capiInCluster {
		_ = h.dyn.Resource(inClusterGVR).Namespace(namespace).Delete(ctx, p.name, metav1.DeleteOptions{})
		return
	}
	_ = h.dyn.Resource(poolGVR).Delete(ctx, p.name, metav1.DeleteOptions{})
}

// addressClaim is an IPAddressClaim of pool, served by kipam (kind capi)
// or by the in-cluster provider.
func addressClaim(kind, id, pool string) *unstructured.Unstructured {
	ref := map[string]any{"apiGroup": "ipam.kipam.dev", "kind": "IPPool", "name": pool}
	if kind == capiInCluster {
		ref = map[string]any{"apiGroup": "ipam.cluster.x-k8s.io", "kind": "InClusterIPPool", "name": pool}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": addressClaimGVR.GroupVersion().String(),
		"kind":       "IPAddressClaim",
		"metadata": map[string]any{
			"generateName": "load-",
			"namespace":    namespace,
			"labels":       map[string]any{runLabel: id},
		},
		"spec": map[string]any{"poolRef": ref},
	}}
}

// hasAddressRef reports whether an IPAddressClaim was answered.
func hasAddressRef(u *unstructured.Unstructured) bool {
	name, _, _ := unstructured.NestedString(u.Object, "status", "addressRef", "name")
	return name != ""
}

// readyThroughput is addresses made Ready per second: from the first
// create to the last Ready.
func (r *result) readyThroughput() float64 {
	if d := r.elapsed + r.lastReady; d > 0 {
		return float64(r.ready.TotalCount()) / d.Seconds()
	}
	return 0
}

// capiSummary prints, per level and load, each kind's create-to-Ready
// (median over the repetitions) and addresses per second, with the ratio
// of kipam's IPAddressClaims to the in-cluster provider's.
func (h *harness) capiSummary() {
	type key struct {
		preload int
		load    string
		kind    string
	}
	groups := map[key][]*result{}
	for _, r := range h.results {
		k := key{r.preload, r.load(), r.kind}
		groups[k] = append(groups[k], r)
	}
	median := func(rs []*result, f func(*result) float64) float64 {
		v := make([]float64, 0, len(rs))
		for _, r := range rs {
			v = append(v, f(r))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	q := func(p float64) func(*result) float64 {
		return func(r *result) float64 { return ms(r.ready.ValueAtQuantile(p)) }
	}
	fmt.Printf("\nsummary of capi: create to Ready, median over %d repetitions of %d objects\n\n", h.o.reps, h.o.claims)
	fmt.Println("| live in the pool | load | kind | p50 ms | p95 ms | p99 ms | addresses/s | p95 over the in-cluster provider's |")
	fmt.Println("|--:|---|---|--:|--:|--:|--:|--:|")
	for _, level := range h.o.preloads {
		for _, w := range h.o.workers {
			load := fmt.Sprintf("%d workers", w)
			in := groups[key{level, load, capiInCluster}]
			for _, kind := range h.capiKinds() {
				rs := groups[key{level, load, kind}]
				if len(rs) == 0 {
					continue
				}
				ratio := ""
				if len(in) > 0 && kind != capiInCluster {
					ratio = fmt.Sprintf("%.2f×", median(rs, q(95))/median(in, q(95)))
				}
				fmt.Printf("| %d | %s | %s | %s | %s | %s | %s | %s |\n", level, load, kindOf(kind),
					num(median(rs, q(50))), num(median(rs, q(95))), num(median(rs, q(99))), num(median(rs, (*result).readyThroughput)), ratio)
			}
		}
	}
}

// preloadList parses -preloads: non-negative numbers, ascending.
func preloadList(list string) ([]int, error) {
	var ns []int
	for f := range strings.SplitSeq(list, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err != nil || n < 0 {
			return nil, fmt.Errorf("-preloads: %q is not a number of at least 0", f)
		}
		ns = append(ns, n)
	}
	if !slices.IsSorted(ns) {
		return nil, errors.New("-preloads: the levels go up (each fills the pools further)")
	}
	return ns, nil
}
