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

// Package chaos tries to break kipam's two promises, "no prefix is handed
// out twice" and "nothing leaks", the way etcd's robustness tests try to
// break etcd's: a local control plane and three kipam replicas run as
// processes; a bounded load of claim and pool creates and deletes is sent
// and everything the clients were told is recorded on the client side;
// faults are injected on a schedule decided by one seed; then the faults
// stop, everything settles past the orphan grace, and one validation pass
// checks what the clients were told and what the cluster stores.
//
// Run it with make chaos (CHAOS_DURATION, CHAOS_SEED); docs/chaos.md says
// how to read its report.
package chaos

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/testenv"
)

// The run's fixed settings. The orphan grace must exceed 75 s (kipam
// refuses less).
const (
	orphanGrace = 80 * time.Second
	warmup      = 15 * time.Second
)

// poolLease is the replicas' --pool-lease-duration: 10 s, shorter than
// kipam's default, so that a frozen owner's pools move sooner;
// CHAOS_POOL_LEASE sets another (15s, kipam's default, for the failover
// figures at the default settings).
var poolLease = 10 * time.Second

// poolLeaseSetting reads CHAOS_POOL_LEASE into poolLease.
func poolLeaseSetting(t *testing.T) {
	s := os.Getenv("CHAOS_POOL_LEASE")
	if s == "" {
		return
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 3*time.Second {
		t.Fatalf("CHAOS_POOL_LEASE=%q: want a duration of at least 3s", s)
	}
	poolLease = d
}

// load is about 12 operations a second from 24 clients at once: half of
// what kipam's leader releases on two shared cores (its claim controller,
// four workers, about 150 ms a reconcile under load), so that what queues
// up behind a fault drains while the traffic goes on. At 27 a second the
// leader only just kept up, and a backlog left by a fault grew for good.
var load = driverOptions{
	workers:     24,
	churners:    3,
	maxLive:     400,
	thinkMin:    800 * time.Millisecond,
	thinkMax:    3200 * time.Millisecond,
	attemptTime: 70 * time.Second, // past the API server's own 60 s request timeout
}

func settings(t *testing.T) (seed uint64, duration time.Duration) {
	duration = 3 * time.Minute
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CHAOS_DURATION=%q: %v", s, err)
		}
		duration = d
	}
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", s, err)
		}
		return n, duration
	}
	var b [8]byte
	_, _ = crand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) >> 1, duration
}

// faultSelection reads CHAOS_FAULTS: a comma-separated list of fault
// kinds, a kind named n times coming up n times as often
// (CHAOS_FAULTS=kill-owner,kill-owner,stop-owner for failover figures).
func faultSelection(t *testing.T) []string {
	s := os.Getenv("CHAOS_FAULTS")
	if s == "" {
		return nil
	}
	only := strings.Split(s, ",")
	for _, k := range only {
		if !slices.Contains(processFaults, k) && !slices.Contains(backgroundFaults, k) {
			t.Fatalf("CHAOS_FAULTS=%q: no fault kind %q (the kinds: %s)", s, k,
				strings.Join(append(slices.Clone(processFaults), backgroundFaults...), ", "))
		}
	}
	return only
}

func TestChaos(t *testing.T) {
	seed, duration := settings(t)
	only := faultSelection(t)
	poolLeaseSetting(t)
	replay := fmt.Sprintf("make chaos CHAOS_SEED=%d CHAOS_DURATION=%s", seed, duration)
	if len(only) > 0 {
		replay += " CHAOS_FAULTS=" + strings.Join(only, ",")
	}
	if os.Getenv("CHAOS_POOL_LEASE") != "" {
		replay += " CHAOS_POOL_LEASE=" + poolLease.String()
	}
	if m := os.Getenv("CHAOS_MANAGER"); m != "" {
		replay = "CHAOS_MANAGER=" + m + " " + replay
	}
	fmt.Printf("chaos: seed %d, duration %s (replay: %s)\n", seed, duration, replay)

	root := testenv.Root
	assets, err := testenv.Assets()
	if err != nil {
		t.Fatal(err)
	}
	manager := filepath.Join(root, "bin", "manager")
	if m := os.Getenv("CHAOS_MANAGER"); m != "" {
		manager = m // another build of kipam, e.g. one with a bug put in to see the suite catch it
	}
	if _, err := os.Stat(manager); err != nil {
		t.Fatalf("no kipam manager at %s: run make build (make chaos does): %v", manager, err)
	}
	runDir := filepath.Join(root, ".local", "chaos", fmt.Sprintf("%s-seed%d", time.Now().Format("20060102-150405"), seed))
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	reportFile, err := os.Create(filepath.Join(runDir, "report.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer reportFile.Close()
	out := io.MultiWriter(os.Stdout, reportFile)
	// client-go logs what it retries through klog; that goes to a file.
	klogFile, err := os.Create(filepath.Join(runDir, "client-go.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer klogFile.Close()
	klog.LogToStderr(false)
	klog.SetOutput(klogFile)
	fmt.Fprintf(out, "chaos: seed %d, duration %s, kipam %s, state and logs in %s\n", seed, duration, manager, runDir)
	// go test runs with -timeout 0 (the run's length is the caller's);
	// this is the watchdog, with every goroutine's stack if it fires.
	watchdog := time.AfterFunc(h0(duration), func() {
		debug.SetTraceback("all")
		panic(fmt.Sprintf("chaos: seed %d: the run took longer than %s; stacks follow", seed, h0(duration)))
	})
	defer watchdog.Stop()
	h := &harness{t: t, seed: seed, duration: duration, only: only, replay: replay, root: root, assets: assets,
		manager: manager, dir: runDir, out: out}
	ok := h.run()
	if !ok {
		t.Fail()
	} else if err := os.RemoveAll(filepath.Join(runDir, "etcd-data")); err != nil {
		// A run that passed keeps its report, history and logs; its etcd
		// data (hundreds of MB after a long run) goes.
		t.Logf("removing the etcd data of a run that passed: %v", err)
	}
	fmt.Fprintf(out, "chaos: seed %d: %s (replay: %s; report, history and logs in %s)\n", seed, map[bool]string{true: "PASS", false: "FAIL"}[ok], replay, runDir)
}

// h0 is how long a run of duration may take in all: setting up, the
// faults, settling past the orphan grace and checking.
func h0(duration time.Duration) time.Duration { return duration + 45*time.Minute }

// harness is one chaos run.
type harness struct {
	t                    *testing.T
	seed                 uint64
	duration             time.Duration
	only                 []string // CHAOS_FAULTS: the fault kinds to inject, and how often (all when empty)
	replay               string
	root, assets         string
	manager, dir         string
	out                  io.Writer
	log                  *faultLog
	cp                   *controlPlane
	rs                   *replicaSet
	lb                   *lbProxy
	proxy                *apiProxy
	c                    client.Client
	drv                  *driver
	hist                 *history
	stats                *stats
	fo                   *failover
	in                   *injector
	counters             counters
	supervisors          sync.WaitGroup
	cancelSupervisors    context.CancelFunc
	problems, livenesses []string
}

// fatal stops the run on a harness failure (not a finding about kipam).
func (h *harness) fatal(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("harness: "+format, args...)
}

func (h *harness) run() bool {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.log = newFaultLog(h.out)
	h.hist, h.stats, h.fo = newHistory(), newStats(), &failover{}
	h.setUp(ctx)
	defer h.tearDown()

	sched := makeSchedule(h.seed, warmup, h.duration, poolLease, orphanGrace, h.only)
	sched.write(h.out)
	h.log.rebase()
	h.log.event("harness", "the traffic starts: the schedule's offsets, and the log's from here on, count from now")

	// Traffic.
	h.drv = newDriver(h.c, h.seed, load, h.log, h.hist, h.stats)
	if err := h.drv.createStaticPools(ctx); err != nil {
		h.fatal("creating the pools: %v", err)
	}
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	var traffic sync.WaitGroup
	for i := range load.workers {
		traffic.Go(func() { h.drv.worker(trafficCtx, i) })
	}
	for i := range load.churners {
		traffic.Go(func() { h.drv.churner(trafficCtx, i) })
	}
	traffic.Go(func() { h.drv.sampleRecent(trafficCtx) })

	// Faults.
	h.in = &injector{cp: h.cp, rs: h.rs, drv: h.drv, proxy: h.proxy, c: h.c, log: h.log, fo: h.fo,
		start: h.log.origin(), records: map[string]int{}}
	faultCtx, stopFaults := context.WithTimeout(ctx, h.duration)
	var tracks sync.WaitGroup
	tracks.Go(func() { h.in.run(faultCtx, sched.process) })
	tracks.Go(func() { h.in.run(faultCtx, sched.background) })
	<-faultCtx.Done()
	h.log.event("harness", "the run's time is up: stopping the traffic; no new faults")
	stopTraffic()
	traffic.Wait()
	h.log.event("harness", "traffic stopped; waiting for the faults in progress to end")
	tracks.Wait()
	stopFaults()
	h.log.event("harness", "faults over; waiting for the failover probes")
	h.in.probes.Wait()

	return h.settleAndCheck(ctx)
}

func (h *harness) setUp(ctx context.Context) {
	p, err := newPKI(filepath.Join(h.dir, "pki"))
	if err != nil {
		h.fatal("%v", err)
	}
	h.log.event("harness", "starting etcd, kube-apiserver and kube-controller-manager")
	if h.cp, err = startControlPlane(ctx, h.assets, h.dir, p); err != nil {
		h.fatal("%v", err)
	}
	cfg, err := h.cp.admin.restConfig()
	if err != nil {
		h.fatal("%v", err)
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return countingTransport{next: rt} }
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, ipamv1alpha1.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			h.fatal("%v", err)
		}
	}
	if h.c, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		h.fatal("%v", err)
	}

	// The replicas share one webhook serving certificate (they forward to
	// each other presenting it); the third reaches the API server through
	// the ambiguous-write proxy.
	certDir := filepath.Join(h.dir, "webhook-certs")
	if _, _, err := p.writePair(certDir, "", true, "kipam-webhook"); err != nil {
		h.fatal("%v", err)
	}
	ports, err := freePorts(9)
	if err != nil {
		h.fatal("%v", err)
	}
	proxyUser, err := p.newUser("chaos-api-proxy", h.cp.apiURL)
	if err != nil {
		h.fatal("%v", err)
	}
	proxyCrt, proxyKey, err := p.writePair(filepath.Join(h.dir, "api-proxy"), "serving", true, "chaos-api-proxy")
	if err != nil {
		h.fatal("%v", err)
	}
	proxyLog, err := os.Create(filepath.Join(h.dir, "api-proxy.log"))
	if err != nil {
		h.fatal("%v", err)
	}
	if h.proxy, err = newAPIProxy(h.cp.apiURL, p, proxyCrt, proxyKey, proxyUser, h.seed, proxyLog); err != nil {
		h.fatal("%v", err)
	}
	opts := replicaOptions{manager: h.manager, dir: h.dir, certDir: certDir, orphanGrace: orphanGrace, leaseDuration: poolLease}
	h.rs = &replicaSet{}
	var backends []string
	for i, id := range []string{"kipam-a", "kipam-b", "kipam-c"} {
		server := h.cp.apiURL
		if id == "kipam-c" {
			server = h.proxy.url()
		}
		u, err := p.newUser(id, server)
		if err != nil {
			h.fatal("%v", err)
		}
		r := newReplica(opts, id, u.kubeconfig, ports[3*i:3*i+3])
		h.rs.replicas = append(h.rs.replicas, r)
		backends = append(backends, r.webhookAddr())
	}
	if h.lb, err = newLBProxy(backends); err != nil {
		h.fatal("%v", err)
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := install(ictx, h.c, h.root, h.lb.addr(), p.caPEM); err != nil {
		h.fatal("installing kipam's CRDs, webhooks and the policies: %v", err)
	}
	h.log.event("harness", "starting kipam-a, kipam-b and kipam-c (webhooks behind %s; kipam-c's API server is %s)", h.lb.addr(), h.proxy.url())
	for _, r := range h.rs.replicas {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		err := r.proc.start(sctx)
		cancel()
		if err != nil {
			h.fatal("%v", err)
		}
	}
	sctx, cancelSupervisors := context.WithCancel(ctx)
	h.cancelSupervisors = cancelSupervisors
	events := func(format string, args ...any) { h.log.event("supervisor", format, args...) }
	for _, pr := range h.procs() {
		h.supervisors.Go(func() { pr.supervise(sctx, events) })
	}
	adminHTTP, err := h.cp.admin.httpClient(p)
	if err != nil {
		h.fatal("%v", err)
	}
	plain := &http.Client{}
	h.supervisors.Go(func() {
		h.counters.run(sctx, func() []scrapeTarget {
			out := []scrapeTarget{{name: "kube-apiserver", url: h.cp.apiURL + "/metrics", client: adminHTTP}}
			for _, r := range h.rs.replicas {
				if !r.proc.isStopped() {
					out = append(out, scrapeTarget{name: r.id, url: fmt.Sprintf("http://127.0.0.1:%d/metrics", r.metricsPort), client: plain})
				}
			}
			return out
		})
	})
	fmt.Fprintf(h.out, "cluster: %s (etcd %s), kipam orphan grace %s, pool Leases %s, %d workers, %d churners, at most %d live claims\n",
		h.cp.apiURL, h.cp.etcdURL, orphanGrace, poolLease, load.workers, load.churners, load.maxLive)
	fmt.Fprintf(h.out, "kubectl: KUBECONFIG=%s %s get kipam -A\n", h.cp.admin.kubeconfig, filepath.Join(h.assets, "kubectl"))
}

func (h *harness) procs() []*proc {
	out := []*proc{h.cp.etcd, h.cp.apiserver, h.cp.kcm}
	for _, r := range h.rs.replicas {
		out = append(out, r.proc)
	}
	return out
}

func (h *harness) tearDown() {
	if h.cancelSupervisors != nil {
		h.cancelSupervisors()
		h.supervisors.Wait()
	}
	if h.rs != nil {
		var wg sync.WaitGroup
		for _, r := range h.rs.replicas {
			wg.Go(func() { r.proc.terminate(20 * time.Second) })
		}
		wg.Wait()
	}
	if h.lb != nil {
		h.lb.close()
	}
	if h.proxy != nil {
		h.proxy.close()
	}
	if h.cp != nil {
		h.cp.stop()
	}
}

// settleAndCheck lets everything recover, waits past the orphan grace and
// runs the end check; it reports and returns whether kipam kept its
// promises.
func (h *harness) settleAndCheck(ctx context.Context) bool {
	h.log.event("harness", "recovering: every process running and ready")
	rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	for _, pr := range []*proc{h.cp.etcd, h.cp.apiserver, h.cp.kcm} {
		if err := poll(rctx, time.Second, pr.ready); err != nil {
			h.fatal("%s does not serve after the faults: %v", pr.name, err)
		}
	}
	if err := h.rs.waitReady(rctx); err != nil {
		h.fatal("%v", err)
	}
	// Deletes that gave up during the run, then every object no client was
	// told of.
	h.drv.mu.Lock()
	leftover := h.drv.leftover
	h.drv.leftover = nil
	h.drv.mu.Unlock()
	for _, r := range leftover {
		h.drv.deleteClaim(rctx, "delete-claim", r)
	}
	var n int
	if err := poll(rctx, 2*time.Second, func(ctx context.Context) error {
		var err error
		n, err = h.drv.discover(ctx)
		return err
	}); err != nil {
		h.fatal("listing what the cluster holds: %v", err)
	}
	h.log.event("harness", "%d claims or pools found that no client was told of (creates whose answers were lost); recorded as told now", n)

	// kipam may still be working through releases queued behind the
	// faults (its claim controller runs on the leader only): let it
	// finish, so that the grace below starts from a cluster at rest. A
	// claim or pool still being deleted after 10 minutes is left for the
	// checks to report.
	drained := time.Now()
	dctx, cancelDrain := context.WithTimeout(ctx, 10*time.Minute)
	defer cancelDrain()
	if err := poll(dctx, 5*time.Second, func(ctx context.Context) error {
		n, err := deleting(ctx, h.c)
		if err == nil && n > 0 {
			err = fmt.Errorf("%d claims and pools still being deleted", n)
		}
		return err
	}); err != nil {
		h.log.event("harness", "LIVENESS: deletions not done %s after the traffic stopped: %v", time.Since(drained).Round(time.Second), err)
	} else if time.Since(drained) > 5*time.Second {
		h.log.event("harness", "kipam finished the releases queued behind the faults %s after the traffic stopped", time.Since(drained).Round(time.Second))
	}

	quiet := time.Now()
	settle := quiet.Add(orphanGrace + 15*time.Second)
	h.log.event("harness", "waiting past the orphan grace (%s) until %s before checking", orphanGrace, h.log.since(settle))
	time.Sleep(time.Until(settle))

	// kipam repairs what it finds within the orphan grace of seeing it,
	// and a leader change restarts that grace: poll the check until it is
	// clean, for up to two graces and a few minutes more on a loaded
	// machine, and report what is left then.
	checkGrace = orphanGrace + 30*time.Second
	deadline := quiet.Add(2*orphanGrace + 5*time.Minute)
	var cluster, clientSide []string
	var clusterErr error
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		cluster, clusterErr = clusterProblems(cctx, h.c)
		var err error
		clientSide, err = clientProblems(cctx, h.c, h.hist)
		cancel()
		if err != nil {
			h.log.event("harness", "client-side check could not read the cluster: %v", err)
		} else if len(cluster) == 0 && len(clientSide) == 0 {
			h.log.event("harness", "the cluster settled %s after the traffic stopped", time.Since(quiet).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			break
		}
		h.log.event("harness", "not settled yet: %d cluster problems, %d client-side; checking again in 10s", len(cluster), len(clientSide))
		time.Sleep(10 * time.Second)
	}

	records := h.hist.snapshot()
	dups := overlaps(records, h.drv.ancestors)
	if err := h.hist.write(filepath.Join(h.dir, "history.jsonl")); err != nil {
		h.log.event("harness", "writing the history: %v", err)
	}
	return h.report(records, dups, cluster, clusterErr, clientSide)
}

func (h *harness) report(records []record, dups []overlap, cluster []string, clusterErr error, clientSide []string) bool {
	w := h.out
	fmt.Fprintf(w, "\n===== chaos report: seed %d, duration %s =====\n", h.seed, h.duration)
	injected := h.log.injected()
	kinds := make([]string, 0, len(injected))
	for k := range injected {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	fmt.Fprintf(w, "faults injected:")
	for _, k := range kinds {
		fmt.Fprintf(w, " %s=%d", k, injected[k])
	}
	fmt.Fprintln(w)
	if len(h.in.records) > 0 {
		fmt.Fprintf(w, "direct deletes of kipam's records:")
		keys := make([]string, 0, len(h.in.records))
		for k := range h.in.records {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, " [%s: %d]", k, h.in.records[k])
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "ambiguous ledger writes (kipam-c's API proxy): %v\n", h.proxy.snapshot())
	for _, pr := range h.procs() {
		if ex := pr.exits(); len(ex) > 0 {
			fmt.Fprintf(w, "%s exited on its own %d times and was started again (last: %s)\n", pr.name, len(ex), ex[len(ex)-1])
		}
	}
	h.stats.write(w)
	h.fo.write(w)
	h.counters.write(w)
	claims, pools := 0, 0
	for _, r := range records {
		if r.Kind == "IPClaim" {
			claims++
		} else {
			pools++
		}
	}
	fmt.Fprintf(w, "told: %d claim prefixes and %d pool prefixes\n", claims, pools)

	ok := true
	fmt.Fprintf(w, "\nCHECK never twice (client side): ")
	if len(dups) == 0 {
		fmt.Fprintf(w, "ok: no two prefixes told to clients overlapped while both were live\n")
	} else {
		ok = false
		fmt.Fprintf(w, "FAIL: %d overlapping pairs\n", len(dups))
		var last string
		lastAt := 0
		for i, d := range dups {
			if i == 20 {
				fmt.Fprintf(w, "... %d more in history.jsonl\n", len(dups)-i)
				break
			}
			fmt.Fprintf(w, "overlap %d (seed %d):\n%s", i+1, h.seed, d.describe())
			t0 := d.b.Told
			if d.a.Told.Before(t0) {
				t0 = d.a.Told
			}
			// The faults and what the harness saw from 15 s before the
			// first was told to 5 s after the second; not the detail of
			// each direct delete.
			var b strings.Builder
			for _, l := range h.log.around(t0.Add(-15*time.Second), d.b.Told.Add(5*time.Second), 0) {
				if !strings.Contains(l, faultDeleteRecords+": delete ") {
					fmt.Fprintf(&b, "    %s\n", l)
				}
			}
			if b.String() == last {
				fmt.Fprintf(w, "  what the harness did around then: as for overlap %d\n", lastAt)
				continue
			}
			last, lastAt = b.String(), i+1
			fmt.Fprintf(w, "  what the harness did around then:\n%s", last)
		}
	}
	fmt.Fprintf(w, "CHECK clients vs cluster: ")
	if len(clientSide) == 0 {
		fmt.Fprintf(w, "ok: every claim a client holds exists with the prefix it was told; nothing deleted lingers\n")
	} else {
		ok = false
		fmt.Fprintf(w, "FAIL: %d problems\n", len(clientSide))
		for _, p := range clientSide {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	fmt.Fprintf(w, "CHECK cluster state (nothing leaks, records agree): ")
	switch {
	case clusterErr != nil:
		ok = false
		fmt.Fprintf(w, "NOT RUN: %v\n", clusterErr)
	case len(cluster) == 0:
		fmt.Fprintf(w, "ok\n")
	default:
		ok = false
		fmt.Fprintf(w, "FAIL: %d problems\n", len(cluster))
		for _, p := range cluster {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	if lv := h.log.matching("LIVENESS"); len(lv) > 0 {
		fmt.Fprintf(w, "liveness notes (not failures):\n")
		for _, l := range lv {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	return ok
}
