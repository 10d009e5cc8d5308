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
	"io"
	"math/bits"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// level is what -scenario scale measured with a number of live claims.
type level struct {
	live      int
	heap, rss float64       // the manager's, after a forced GC (heap) when -manager-pprof is given
	restart   time.Duration // from SIGTERM of the manager until a create succeeded again; 0 when not measured
	runs      []*result
}

// scale fills -pools pools with live claims up to each of -levels and, at
// zero and at every level, measures the manager's heap and RSS, timed
// creates (deleted again, so the live count stays the level's), and with
// -manager-pidfile how long a restarted manager takes to serve again.
func (h *harness) scale(ctx context.Context, out *csvFile) error {
	if len(h.o.levels) == 0 {
		return errors.New("-scenario scale needs -levels")
	}
	id := fmt.Sprintf("scale-%d", time.Now().Unix()%1e6)
	top := slices.Max(h.o.levels)
	pools, err := h.spreadPools(ctx, id, (top+h.o.claims)/h.o.pools+1)
	defer func() {
		if _, err := h.deleteAll(ctx, claimGVR, id); err != nil {
			fmt.Fprintln(os.Stderr, "load: cleaning up:", err)
		}
		h.deletePools(ctx, pools)
	}()
	if err != nil {
		return err
	}
	h.spread = pools
	fmt.Printf("%d pools of %s ready for %d live claims\n", len(pools), h.o.family, top)

	var levels []*level
	live := 0
	for _, n := range append([]int{0}, h.o.levels...) {
		if n > live {
			t0 := time.Now()
			if err := h.fill(ctx, kipam, id+"-pre", "", n-live); err != nil {
				return err
			}
			fmt.Printf("filled to %d live claims in %s\n", n, time.Since(t0).Round(time.Second))
			live = n
		}
		l := &level{live: live}
		levels = append(levels, l)
		if h.o.managerPidfile != "" {
			if l.restart, err = h.restartManager(ctx); err != nil {
				return err
			}
			fmt.Printf("restart with %d live claims: serving again %s after SIGTERM\n", live, l.restart.Round(10*time.Millisecond))
		}
		if err := h.settle(ctx, l); err != nil {
			return err
		}
		fmt.Printf("%d live claims: kipam's heap %.1f MB, RSS %.1f MB\n", live, l.heap/1e6, l.rss/1e6)
		h.o.preload = live
		for rep := range h.o.reps {
			for _, w := range h.o.workers {
				r := &result{scenario: h.o.scenario, kind: kipam, workers: w, rep: rep, preload: h.o.preload,
					failures: map[string]int{}, latency: newHist(), ready: newHist(), writesBy: map[requestKey]float64{}}
				timed := fmt.Sprintf("%s-%d-%d-%d", id, live, w, rep)
				err := h.timedCreates(ctx, r, claimGVR, timed, "")
				if d, derr := h.deleteAll(ctx, claimGVR, timed); derr != nil {
					r.failures["cleanup: "+derr.Error()]++
				} else {
					r.release = d
				}
				h.results = append(h.results, r)
				l.runs = append(l.runs, r)
				r.print()
				if err := out.write(h, r); err != nil {
					return err
				}
				if err != nil {
					return err
				}
			}
		}
	}
	printScale(h.o, levels)
	return nil
}

// spreadPools creates h.o.pools top-level pools, each with room for per
// claims, side by side in one random block.
func (h *harness) spreadPools(ctx context.Context, id string, per int) ([]string, error) {
	claimBits := h.bits()
	poolLen := claimBits - bits.Len(uint(per)) // room for per + 1 prefixes of claimBits
	blockLen := poolLen - bits.Len(uint(h.o.pools-1))
	for attempt := 0; ; attempt++ {
		block := randomPrefix(h.o.family, blockLen)
		t0 := time.Now()
		names, err := h.carveBlock(ctx, id, block, poolLen)
		if err == nil {
			fmt.Printf("created %d pools in %s\n", len(names), time.Since(t0).Round(100*time.Millisecond))
			return names, nil
		}
		h.deletePools(ctx, names)
		if attempt == 20 || !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("creating %d pools: %w", h.o.pools, err)
		}
	}
}

// carveBlock creates the pools one after another from block's first
// address, 10 at a time (top-level pools all commit to their family's
// address space, one ledger).
func (h *harness) carveBlock(ctx context.Context, id string, block netip.Prefix, poolLen int) ([]string, error) {
	names := make([]string, h.o.pools)
	errs := make([]error, h.o.pools)
	sem := make(chan struct{}, 10)
	addr := block.Addr()
	done := make(chan struct{})
	for i := range h.o.pools {
		p := netip.PrefixFrom(addr, poolLen)
		names[i] = fmt.Sprintf("%s-%d", id, i)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; done <- struct{}{} }()
			_, errs[i] = h.dyn.Resource(poolGVR).Create(ctx, pool(names[i], map[string]any{
				"cidr": p.String(), "reuseGracePeriodSeconds": int64(0)}), metav1.CreateOptions{})
		}()
		addr = nextPrefix(p)
	}
	for range h.o.pools {
		<-done
	}
	var created []string
	for i, err := range errs {
		if err == nil {
			created = append(created, names[i])
		}
	}
	return created, errors.Join(errs...)
}

// nextPrefix is the first address after p.
func nextPrefix(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	host := len(a)*8 - p.Bits()
	// Add 1 << host to the address, from its last byte.
	carry := uint(1) << (host % 8)
	for i := len(a) - 1 - host/8; i >= 0 && carry > 0; i-- {
		s := uint(a[i]) + carry
		a[i], carry = byte(s), s>>8
	}
	next, _ := netip.AddrFromSlice(a)
	return next
}

// idle waits until the manager's work queues have read empty three
// seconds running: work left from what came before (a fill, the deletes
// of a run: their sweeps and releases) no longer shares the API server
// with what comes next. Without -manager-metrics there is nothing to
// wait for.
func (h *harness) idle(ctx context.Context) error {
	t0 := time.Now()
	for idle := 0; idle < 3; {
		switch n := h.queued(ctx); {
		case n < 0:
			return nil
		case n == 0:
			idle++
		default:
			idle = 0
		}
		if time.Since(t0) > h.timeout {
			return fmt.Errorf("kipam's work queues still not empty after %s", h.timeout)
		}
		time.Sleep(time.Second) // a measuring tool may poll
	}
	return nil
}

// settle waits until the manager's work queues are empty (what it holds
// then is what it holds for the live claims, not for work in flight), makes
// it collect its garbage twice (through its pprof heap endpoint, whose
// profile it keeps in -profile-dir; twice, so that pooled buffers go too)
// and reads its heap and RSS.
func (h *harness) settle(ctx context.Context, l *level) error {
	if err := h.idle(ctx); err != nil {
		return fmt.Errorf("%w after %d live claims were Ready", err, l.live)
	}
	if h.o.managerPprof != "" {
		keep := ""
		if h.o.profileDir != "" {
			keep = filepath.Join(h.o.profileDir, fmt.Sprintf("heap-%d-%d.pb.gz", h.o.pools, l.live))
		}
		if err := h.collect(ctx, ""); err != nil {
			return err
		}
		if err := h.collect(ctx, keep); err != nil {
			return err
		}
	}
	s := h.process(ctx)
	l.heap, l.rss = s.heap, s.rss
	return nil
}

// collect makes the manager collect its garbage, through its pprof heap
// endpoint, and keeps the heap profile in path unless it is empty.
func (h *harness) collect(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.o.managerPprof+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("-manager-pprof: %w", err)
	}
	defer resp.Body.Close()
	w := io.Discard
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// restartManager stops the manager named by -manager-pidfile with SIGTERM,
// starts it again with the same command line, environment, directory and
// log, and returns how long it took from the signal until a claim create
// succeeded again.
func (h *harness) restartManager(ctx context.Context) (time.Duration, error) {
	raw, err := os.ReadFile(h.o.managerPidfile)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", h.o.managerPidfile, err)
	}
	proc := fmt.Sprintf("/proc/%d/", pid)
	cmdline, err := os.ReadFile(proc + "cmdline")
	if err != nil {
		return 0, err
	}
	environ, err := os.ReadFile(proc + "environ")
	if err != nil {
		return 0, err
	}
	dir, err := os.Readlink(proc + "cwd")
	if err != nil {
		return 0, err
	}
	logPath, err := os.Readlink(proc + "fd/1")
	if err != nil {
		return 0, err
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")

	t0 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return 0, err
	}
	for running(pid) {
		if time.Since(t0) > time.Minute {
			return 0, fmt.Errorf("manager %d still running a minute after SIGTERM", pid)
		}
		time.Sleep(10 * time.Millisecond) // a measuring tool may poll
	}
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	defer log.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = strings.Split(strings.TrimRight(string(environ), "\x00"), "\x00")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	if err := os.WriteFile(h.o.managerPidfile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return 0, err
	}
	_ = cmd.Process.Release()

	probe := h.object(kipam, fmt.Sprintf("restart-%d", pid), "")
	for {
		created, err := h.dyn.Resource(claimGVR).Namespace(namespace).Create(ctx, probe, metav1.CreateOptions{})
		if err == nil {
			took := time.Since(t0)
			return took, h.dyn.Resource(claimGVR).Namespace(namespace).Delete(ctx, created.GetName(), metav1.DeleteOptions{})
		}
		if time.Since(t0) > 10*time.Minute {
			return 0, fmt.Errorf("no claim created within 10 minutes of the restart: %w", err)
		}
		time.Sleep(50 * time.Millisecond) // a measuring tool may poll
	}
}

// running reports whether pid is a live process (not gone, not a zombie
// waiting for this process, its parent after a restart, to reap it).
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command, which is in parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// printScale prints one row per level: memory per live claim, and the
// median create latency beside the empty cluster's.
func printScale(o options, levels []*level) {
	fmt.Printf("\nscale: %s, %d pool(s); create latency the median over %d repetitions, its ratio to 0 live claims\n\n", o.family, o.pools, o.reps)
	fmt.Println("| live claims | heap | RSS | heap per claim | RSS per claim | workers | p50 ms | p95 ms | p99 ms | p95 ratio | restart |")
	fmt.Println("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	base := map[int]float64{}
	for _, l := range levels {
		for _, w := range o.workers {
			var p50, p95, p99 []float64
			for _, r := range l.runs {
				if r.workers == w {
					p50 = append(p50, ms(r.latency.ValueAtQuantile(50)))
					p95 = append(p95, ms(r.latency.ValueAtQuantile(95)))
					p99 = append(p99, ms(r.latency.ValueAtQuantile(99)))
				}
			}
			if len(p95) == 0 {
				continue
			}
			med := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
			if l.live == 0 {
				base[w] = med(slices.Clone(p95))
			}
			perHeap, perRSS, restart := "", "", ""
			if l.live > 0 {
				perHeap = fmt.Sprintf("%.0f B", (l.heap-levels[0].heap)/float64(l.live))
				perRSS = fmt.Sprintf("%.0f B", (l.rss-levels[0].rss)/float64(l.live))
			}
			if l.restart > 0 {
				restart = l.restart.Round(10 * time.Millisecond).String()
			}
			fmt.Printf("| %d | %.1f MB | %.1f MB | %s | %s | %d | %s | %s | %s | %.2f× | %s |\n", l.live, l.heap/1e6, l.rss/1e6,
				perHeap, perRSS, w, num(med(p50)), num(med(p95)), num(med(p99)), med(p95)/base[w], restart)
		}
	}
}
