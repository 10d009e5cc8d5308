//go:build chaos

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

package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/testenv"
)

// TestHarness checks the harness's own fault machinery against a live
// cluster, once, without a schedule: that each policy refuses what it
// should (and kipam's retries get through once it stops), that a
// SIGKILLed API server and etcd come back on their ports with their data,
// and that the overlap checker finds an overlap. make chaos runs only
// TestChaos; run this after changing the harness:
//
//	go test -tags chaos ./test/chaos/ -run TestHarness -v
func TestHarness(t *testing.T) {
	assets, err := testenv.Assets()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h := &harness{t: t, seed: 1, root: testenv.Root, assets: assets,
		manager: filepath.Join(testenv.Root, "bin", "manager"), dir: dir, out: io.Discard}
	if testing.Verbose() {
		h.out = os.Stdout
	}
	h.log = newFaultLog(h.out)
	h.hist, h.stats, h.fo = newHistory(), newStats(), &failover{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	h.setUp(ctx)
	defer h.tearDown()
	h.drv = newDriver(h.c, 1, load, h.log, h.hist, h.stats)
	if err := h.drv.createStaticPools(ctx); err != nil {
		t.Fatal(err)
	}
	in := &injector{cp: h.cp, rs: h.rs, drv: h.drv, proxy: h.proxy, c: h.c, log: h.log, fo: h.fo, records: map[string]int{}}

	t.Run("reject-creates refuses names ending in b, c, d or f, after kipam committed them", func(t *testing.T) {
		if err := in.bind(ctx, rejectCreatesPolicy, true); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = in.bind(ctx, rejectCreatesPolicy, false) }()
		create := func() (string, error) {
			c := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{GenerateName: "c-", Namespace: "chaos-a"},
				Spec: ipamv1alpha1.IPClaimSpec{Pool: "c4"}}
			err := h.c.Create(ctx, c)
			if err != nil && !strings.Contains(err.Error(), "chaos: refused after kipam's webhook allowed it") {
				t.Fatalf("create: %v", err)
			}
			return c.Name, err
		}
		// The binding takes a moment to reach the API server's policy
		// cache: until then nothing is refused.
		if err := poll(ctx, 100*time.Millisecond, func(context.Context) error {
			if _, err := create(); err == nil {
				return errors.New("not refused yet")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		refused, allowed := 0, 0
		for range 100 {
			name, err := create()
			switch {
			case err != nil:
				refused++
			case strings.ContainsAny(name[len(name)-1:], "bcdf"):
				t.Fatalf("claim %s was allowed", name)
			default:
				allowed++
			}
		}
		if refused == 0 || allowed == 0 {
			t.Fatalf("%d refused and %d allowed: the policy does not refuse a share", refused, allowed)
		}
		t.Logf("%d of 100 creates refused", refused)
	})

	t.Run("fail-releases holds a claim's release while its switch is on", func(t *testing.T) {
		// A name chaos-reject-creates never refuses: its unbinding may not
		// have reached the API server yet.
		c := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Name: "h-release", Namespace: "chaos-a"},
			Spec: ipamv1alpha1.IPClaimSpec{Pool: "c4"}}
		if err := h.c.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
		// Wait for its IPAllocation, so that the release has both steps.
		var alloc string
		if err := poll(ctx, 200*time.Millisecond, func(ctx context.Context) error {
			var got ipamv1alpha1.IPClaim
			if err := h.c.Get(ctx, client.ObjectKeyFromObject(c), &got); err != nil {
				return err
			}
			if alloc = got.Status.Allocation; alloc == "" {
				return errors.New("no IPAllocation yet")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := in.setSwitch(ctx, true); err != nil {
			t.Fatal(err)
		}
		if err := in.bind(ctx, failReleasesPolicy, true); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = in.bind(ctx, failReleasesPolicy, false) }()
		// The policy is in force once it refuses the delete of the claim's
		// IPAllocation (kipam's own webhook refuses it too, later in the
		// chain: the policy runs first).
		if err := poll(ctx, 200*time.Millisecond, func(ctx context.Context) error {
			err := h.c.Delete(ctx, &ipamv1alpha1.IPAllocation{ObjectMeta: metav1.ObjectMeta{Name: alloc}})
			if err != nil && strings.Contains(err.Error(), "chaos: release refused") {
				return nil
			}
			return fmt.Errorf("delete of IPAllocation %s: %v", alloc, err)
		}); err != nil {
			t.Fatalf("the release policy never refused a delete: %v", err)
		}
		if err := h.c.Delete(ctx, c); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // part of the check: it must still be there
		var got ipamv1alpha1.IPClaim
		if err := h.c.Get(ctx, client.ObjectKeyFromObject(c), &got); err != nil {
			t.Fatalf("the claim went while its release was refused: %v", err)
		}
		if err := in.setSwitch(ctx, false); err != nil {
			t.Fatal(err)
		}
		gctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := h.drv.waitGone(gctx, &ipamv1alpha1.IPClaim{ObjectMeta: c.ObjectMeta}, string(c.UID)); err != nil {
			t.Fatalf("the claim's release did not get through once the switch was off: %v", err)
		}
	})

	t.Run("kube-apiserver and etcd come back on their ports with their data", func(t *testing.T) {
		for _, p := range []*proc{h.cp.etcd, h.cp.apiserver} {
			p.held.Store(true)
			p.kill()
			in.restart(ctx, p)
		}
		var pools ipamv1alpha1.IPPoolList
		if err := poll(ctx, time.Second, func(ctx context.Context) error { return h.c.List(ctx, &pools) }); err != nil {
			t.Fatal(err)
		}
		if len(pools.Items) != len(staticPools) {
			t.Fatalf("%d pools after the restarts, want %d", len(pools.Items), len(staticPools))
		}
		r, err := h.drv.createClaim(ctx, "create-claim", "chaos-a", "c4", 32, 60)
		if err != nil || r == nil {
			t.Fatalf("no claim after the restarts: %v", err)
		}
	})

	t.Run("the overlap checker finds an overlap and spares a pool and its claims", func(t *testing.T) {
		at := time.Now()
		rec := func(kind, object, pool, cidr string, told, end time.Duration) record {
			r := record{Kind: kind, Object: object, Pool: pool, CIDR: netip.MustParsePrefix(cidr), Told: at.Add(told)}
			if end > 0 {
				r.End = at.Add(end)
			}
			return r
		}
		parents := func(p string) []string { return map[string][]string{"child": {"top"}}[p] }
		ok := []record{
			rec("IPPool", "top", "", "10.0.0.0/16", 0, 0),
			rec("IPPool", "child", "top", "10.0.1.0/24", 1, 0),
			rec("IPClaim", "a/x", "child", "10.0.1.0/32", 2, 5),
			rec("IPClaim", "a/y", "child", "10.0.1.0/32", 5, 0), // told as x's delete was sent
			rec("IPClaim", "a/z", "top", "10.0.2.0/24", 3, 0),
		}
		if got := overlaps(ok, parents); len(got) != 0 {
			t.Fatalf("overlaps in a consistent history: %v", got)
		}
		bad := append(ok, rec("IPClaim", "a/w", "top", "10.0.2.128/25", 4, 0))
		if got := overlaps(bad, parents); len(got) != 1 || got[0].b.Object != "a/w" {
			t.Fatalf("want a/w overlapping a/z, got %v", got)
		}
		if got := overlaps(append(ok, rec("IPClaim", "a/v", "top", "10.0.1.128/25", 4, 0)), parents); len(got) != 1 {
			t.Fatalf("want a claim of top inside child to overlap child, got %v", got)
		}
	})
}
