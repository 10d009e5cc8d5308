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
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go4.org/netipx"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	watchtools "k8s.io/client-go/tools/watch"
)

var (
	claimGVR = schema.GroupVersionResource{Group: "ipam.kipam.dev", Version: "v1alpha1", Resource: "ipclaims"}
	bareGVR  = schema.GroupVersionResource{Group: bareGroup, Version: "v1alpha1", Resource: "ipclaims"}
	poolGVR  = schema.GroupVersionResource{Group: "ipam.kipam.dev", Version: "v1alpha1", Resource: "ippools"}
)

const (
	namespace = "default"
	runLabel  = "kipam.dev/load"
	kipam     = "kipam"
	bare      = "bare"
)

// harness holds the clients and the results of one invocation.
type harness struct {
	o       options
	cfg     *rest.Config
	dyn     dynamic.Interface
	kube    kubernetes.Interface
	timeout time.Duration
	results []*result
	seq     int      // runs so far, for names
	spread  []string // -scenario scale: the claims go to these pools in turn
	// next counts the claims sent to spread. In turn, not at random: the
	// pools are sized for an even share (spreadPools), and 100,000 claims
	// drawn at random over 1,000 pools of 126 addresses filled some of them.
	next atomic.Uint64
}

// result is what one run measured.
type result struct {
	scenario, kind string
	workers        int
	rate           float64
	rep            int
	preload        int // live objects in the pool
	n, ok          int
	failures       map[string]int
	elapsed        time.Duration
	latency        *hdrhistogram.Histogram // create (or list, or denial) latency, µs
	ready          *hdrhistogram.Histogram // create call to Ready seen (kipam) or to the watch event (bare), µs
	lastReady      time.Duration           // last Ready (or event) after the last create returned
	duplicates     int
	writes         float64 // API writes per object, from create to Ready
	writesBy       map[requestKey]float64
	release        time.Duration
	process        processDelta
}

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
}

func run(ctx context.Context, o options) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100000, 100000 // measure the server, not client-side throttling
	h := &harness{o: o, cfg: cfg}
	if h.timeout, err = time.ParseDuration(o.readyTimeout); err != nil {
		return fmt.Errorf("-ready-timeout: %w", err)
	}
	if h.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return err
	}
	if h.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if err := installBare(ctx, cfg, o.crd); err != nil {
		return fmt.Errorf("installing the bare CRD: %w", err)
	}
	out, err := openCSV(o.csv)
	if err != nil {
		return err
	}
	defer out.Close()

	if o.scenario == "scale" {
		err := h.scale(ctx, out)
		return errors.Join(err, h.check())
	}
	if o.scenario == "capi" {
		err := h.capi(ctx, out)
		return errors.Join(err, h.check())
	}
	loads := o.workers
	if o.rate > 0 {
		loads = []int{0}
	}
	for rep := range o.reps {
		for _, w := range loads {
			// Alternate which kind goes first, so neither always meets the
			// other's leftovers.
			kinds := []string{bare, kipam}
			if rep%2 == 1 {
				kinds = []string{kipam, bare}
			}
			for _, kind := range kinds {
				if err := h.record(out)(h.runOnce(ctx, kind, w, rep)); err != nil {
					return err
				}
			}
		}
	}
	h.summary()
	return h.check()
}

// record returns what keeps a run's result (printed, and a CSV row),
// if it has one, and returns the run's error.
func (h *harness) record(out *csvFile) func(*result, error) error {
	return func(r *result, err error) error {
		if r != nil {
			h.results = append(h.results, r)
			r.print()
			if werr := out.write(h, r); werr != nil {
				return werr
			}
		}
		return err
	}
}

// runOnce runs the scenario once for one kind of object.
func (h *harness) runOnce(ctx context.Context, kind string, workers, rep int) (*result, error) {
	h.seq++
	id := fmt.Sprintf("run-%d-%d", time.Now().Unix()%1e6, h.seq)
	r := &result{scenario: h.o.scenario, kind: kind, workers: workers, rate: h.o.rate, rep: rep, preload: h.o.preload,
		failures: map[string]int{}, latency: newHist(), ready: newHist(), writesBy: map[requestKey]float64{}}
	gvr := bareGVR
	pool := "unused"
	if kind == kipam {
		gvr = claimGVR
		pools, err := h.createPools(ctx, id)
		defer h.deletePools(ctx, pools)
		if err != nil {
			return nil, err
		}
		pool = pools[len(pools)-1]
	}
	defer func() {
		d, err := h.deleteAll(ctx, gvr, id)
		if err != nil {
			r.failures["cleanup: "+err.Error()]++
		}
		if kind == kipam {
			r.release = d
		}
	}()

	switch h.o.scenario {
	case "create":
		if h.o.preload > 0 {
			if err := h.fill(ctx, kind, id+"-pre", pool, h.o.preload); err != nil {
				return r, err
			}
		}
		return r, h.timedCreates(ctx, r, gvr, id, pool)
	case "exhaustion":
		// A pool of -exhaust-size claims, filled; every timed create is
		// denied.
		if kind == kipam {
			if err := h.fill(ctx, kind, id+"-pre", pool, h.o.exhaustSize); err != nil {
				return r, err
			}
		}
		return r, h.timedCreates(ctx, r, gvr, id, pool)
	case "list":
		if err := h.fill(ctx, kind, id, pool, h.o.claims); err != nil {
			return r, err
		}
		return r, h.timedLists(ctx, r, gvr, id)
	}
	return nil, fmt.Errorf("unknown -scenario %q (create, exhaustion, list)", h.o.scenario)
}

// object is what every create sends: an IPClaim of the run's pool, in
// kipam's group or the bare one, or an IPAddressClaim (-scenario capi).
func (h *harness) object(kind, id, pool string) *unstructured.Unstructured {
	gvr := gvrOf(kind)
	if gvr == addressClaimGVR {
		return addressClaim(kind, id, pool)
	}
	if len(h.spread) > 0 {
		pool = h.spread[(h.next.Add(1)-1)%uint64(len(h.spread))]
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(),
		"kind":       "IPClaim",
		"metadata": map[string]any{
			"generateName": "load-",
			"namespace":    namespace,
			"labels":       map[string]any{runLabel: id},
		},
		"spec": map[string]any{"pool": pool, "prefixLength": int64(h.bits())},
	}}
	return u
}

func (h *harness) bits() int {
	switch {
	case h.o.prefixLength > 0:
		return h.o.prefixLength
	case h.o.family == "ipv6":
		return 64
	}
	return 32
}

// timedCreates creates h.o.claims objects, closed-loop or open-loop, and
// measures them.
func (h *harness) timedCreates(ctx context.Context, r *result, gvr schema.GroupVersionResource, id, pool string) error {
	tracker, err := h.track(ctx, gvr, id)
	if err != nil {
		return err
	}
	defer tracker.stop()
	before, err := requests(ctx, h.kube)
	if err != nil {
		return err
	}
	procBefore := h.process(ctx)

	var (
		mu        sync.Mutex
		got       []netip.Prefix
		lastDone  time.Time
		denials   = h.o.scenario == "exhaustion" && r.kind == kipam
		createOne = func(due time.Time) {
			obj := h.object(r.kind, id, pool)
			created, err := h.dyn.Resource(gvr).Namespace(namespace).Create(ctx, obj, metav1.CreateOptions{})
			done := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if done.After(lastDone) {
				lastDone = done
			}
			switch {
			case denials && err != nil && strings.Contains(err.Error(), "exhausted"):
				r.ok++
				_ = r.latency.RecordValue(done.Sub(due).Microseconds())
			case denials && err == nil:
				r.failures["created from a full pool"]++
			case err != nil:
				r.failures[shorten(err)]++
			default:
				r.ok++
				_ = r.latency.RecordValue(done.Sub(due).Microseconds())
				tracker.sent(created.GetName(), due)
				if s, _, _ := unstructured.NestedString(created.Object, "spec", "cidr"); s != "" {
					if p, err := netip.ParsePrefix(s); err == nil {
						got = append(got, p)
					}
				} else if r.kind == kipam {
					r.failures[noCIDR]++
				}
			}
		}
	)
	start := time.Now()
	if h.o.rate > 0 {
		// Open loop: the i-th create is due at start + i/rate, whatever
		// happened to the ones before it.
		var wg sync.WaitGroup
		for i := range h.o.claims {
			due := start.Add(time.Duration(float64(i) / h.o.rate * float64(time.Second)))
			time.Sleep(time.Until(due))
			wg.Go(func() { createOne(due) })
		}
		wg.Wait()
	} else {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range r.workers {
			wg.Go(func() {
				for next.Add(1) <= int64(h.o.claims) {
					createOne(time.Now())
				}
			})
		}
		wg.Wait()
	}
	r.elapsed = lastDone.Sub(start)
	r.n = h.o.claims
	r.duplicates = duplicates(got)

	if !denials {
		last, err := tracker.wait(ctx, r.ok-r.failures[noCIDR], h.timeout)
		if err != nil {
			return err
		}
		if last.After(lastDone) {
			r.lastReady = last.Sub(lastDone)
		}
		tracker.fill(r.ready)
		if gvr == addressClaimGVR {
			r.duplicates = duplicates(tracker.answers())
		}
	}
	after, err := requests(ctx, h.kube)
	if err != nil {
		return err
	}
	r.writes, r.writesBy = writes(before, after, r.n)
	r.process = h.process(ctx).since(procBefore)
	return nil
}

// noCIDR is the failure of a claim created without a prefix: never Ready.
const noCIDR = "create response without spec.cidr"

// fill creates n objects of kind with 50 workers, untimed, and waits until
// they are Ready (or seen).
func (h *harness) fill(ctx context.Context, kind, id, pool string, n int) error {
	gvr := gvrOf(kind)
	tracker, err := h.track(ctx, gvr, id)
	if err != nil {
		return err
	}
	defer tracker.stop()
	var next atomic.Int64
	var failed atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if _, err := h.dyn.Resource(gvr).Namespace(namespace).Create(ctx, h.object(kind, id, pool), metav1.CreateOptions{}); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		return fmt.Errorf("filling %s: %d creates failed, the first: %v", pool, failed.Load(), first.Load())
	}
	_, err = tracker.wait(ctx, n, h.timeout)
	return err
}

// timedLists lists the run's objects 20 times and measures each list.
func (h *harness) timedLists(ctx context.Context, r *result, gvr schema.GroupVersionResource, id string) error {
	start := time.Now()
	for range 20 {
		t0 := time.Now()
		l, err := h.dyn.Resource(gvr).Namespace(namespace).List(ctx, metav1.ListOptions{LabelSelector: runLabel + "=" + id})
		if err != nil {
			return err
		}
		_ = r.latency.RecordValue(time.Since(t0).Microseconds())
		if len(l.Items) != h.o.claims {
			r.failures[fmt.Sprintf("listed %d of %d", len(l.Items), h.o.claims)]++
		}
		r.ok++
		r.n++
	}
	r.elapsed = time.Since(start)
	return nil
}

// createPools creates the run's pools: a top-level pool and, for -depth,
// a chain of children one bit longer each, the last one sized for the
// claims. A top-level prefix already taken (by an earlier run still in its
// grace, or anything else) is skipped.
func (h *harness) createPools(ctx context.Context, id string) ([]string, error) {
	leaf := 16 // a /16 of hosts or a /48 of /64s
	if h.o.family == "ipv6" {
		leaf = 48
	}
	if h.o.scenario == "exhaustion" {
		leaf += 16 - bits.Len(uint(h.o.exhaustSize)-1) // room for -exhaust-size claims
	}
	top := leaf - (h.o.depth - 1)
	var names []string
	for attempt := 0; ; attempt++ {
		cidr := randomPrefix(h.o.family, top)
		name := fmt.Sprintf("load-%s-0", id)
		_, err := h.dyn.Resource(poolGVR).Create(ctx, pool(name, map[string]any{"cidr": cidr.String(), "reuseGracePeriodSeconds": int64(0)}), metav1.CreateOptions{})
		if err == nil {
			names = append(names, name)
			break
		}
		if attempt == 20 || !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("creating a top-level pool: %w", err)
		}
	}
	for level := 1; level < h.o.depth; level++ {
		name := fmt.Sprintf("load-%s-%d", id, level)
		spec := map[string]any{"parentPool": names[len(names)-1], "prefixLength": int64(top + level), "reuseGracePeriodSeconds": int64(0)}
		if _, err := h.dyn.Resource(poolGVR).Create(ctx, pool(name, spec), metav1.CreateOptions{}); err != nil {
			return names, fmt.Errorf("carving %s: %w", name, err)
		}
		names = append(names, name)
	}
	return names, nil
}

func pool(name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": poolGVR.GroupVersion().String(), "kind": "IPPool",
		"metadata": map[string]any{"name": name, "labels": map[string]any{runLabel: "pool"}},
		"spec":     spec,
	}}
}

// randomPrefix is a random prefix of the given length in 10.0.0.0/8 or
// fd00::/8.
func randomPrefix(family string, bits int) netip.Prefix {
	if family == "ipv6" {
		var b [16]byte
		b[0] = 0xfd
		for i := 1; i < 16; i++ {
			b[i] = byte(rand.IntN(256))
		}
		p, _ := netip.AddrFrom16(b).Prefix(bits)
		return p
	}
	v := uint32(10)<<24 | rand.Uint32()>>8
	p, _ := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).Prefix(bits)
	return p
}

// deletePools deletes the run's pools, children first. Their claims are
// gone by then; a pool drains in the background.
func (h *harness) deletePools(ctx context.Context, names []string) {
	for i := len(names) - 1; i >= 0; i-- {
		_ = h.dyn.Resource(poolGVR).Delete(ctx, names[i], metav1.DeleteOptions{})
	}
}

// deleteAll deletes the run's objects and waits until they are gone (for
// IPClaims: released), so the next run does not share the cluster with
// this one's releases. It returns how long that took.
func (h *harness) deleteAll(ctx context.Context, gvr schema.GroupVersionResource, id string) (time.Duration, error) {
	sel := metav1.ListOptions{LabelSelector: fmt.Sprintf("%s in (%s,%s-pre)", runLabel, id, id)}
	t0 := time.Now()
	// A collection of many thousands may take the API server longer than
	// its request timeout; it goes on deleting, and the loop below waits.
	if err := h.dyn.Resource(gvr).Namespace(namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil && !apierrors.IsServerTimeout(err) && !apierrors.IsTimeout(err) {
		return 0, err
	}
	for {
		l, err := h.dyn.Resource(gvr).Namespace(namespace).List(ctx, sel)
		if err != nil {
			return 0, err
		}
		if len(l.Items) == 0 {
			return time.Since(t0), nil
		}
		if time.Since(t0) > h.timeout {
			return 0, fmt.Errorf("%d objects still there %s after their delete", len(l.Items), h.timeout)
		}
		time.Sleep(100 * time.Millisecond) // a measuring tool may poll
	}
}

// duplicates counts the prefixes that overlap one given before them.
func duplicates(got []netip.Prefix) int {
	var b netipx.IPSetBuilder
	n := 0
	for _, p := range got {
		set, _ := b.IPSet()
		if set.OverlapsPrefix(p) {
			n++
		}
		b.AddPrefix(p)
	}
	return n
}

func shorten(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return fmt.Sprintf("%s: %s", status.Status().Reason, firstLine(status.Status().Message))
	}
	return firstLine(err.Error())
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// tracker follows a run's objects through a watch opened before the first
// create: when each was first seen, and for IPClaims when it was first
// Ready; for IPAddressClaims when it had its status.addressRef and its
// IPAddress (named after it) was created, whichever came later (a second
// watch, of IPAddresses).
type tracker struct {
	cancel context.CancelFunc
	done   chan struct{}
	claims bool

	mu    sync.Mutex
	start map[string]time.Time // when its create was sent
	seen  map[string]time.Time // added, or Ready for claims
	// For IPAddressClaims: [0] answered, [1] its IPAddress created; seen
	// once both are.
	halves    *[2]map[string]time.Time
	addresses map[string]netip.Prefix // IPAddressClaims: the address each got
	last      time.Time
	cond      *sync.Cond
}

func (h *harness) track(ctx context.Context, gvr schema.GroupVersionResource, id string) (*tracker, error) {
	wctx, cancel := context.WithCancel(ctx)
	t := &tracker{cancel: cancel, done: make(chan struct{}), claims: gvr != bareGVR, start: map[string]time.Time{}, seen: map[string]time.Time{},
		addresses: map[string]netip.Prefix{}}
	t.cond = sync.NewCond(&t.mu)
	ready := func(u *unstructured.Unstructured) bool { return gvr == bareGVR || isReady(u) }
	if gvr == addressClaimGVR {
		ready = hasAddressRef
		t.halves = &[2]map[string]time.Time{{}, {}}
	}
	watches := []func() error{func() error {
		return t.watch(wctx, h.dyn.Resource(gvr).Namespace(namespace), runLabel+"="+id, 0, ready, nil)
	}}
	if gvr == addressClaimGVR {
		addressed := func(u *unstructured.Unstructured) {
			addr, _, _ := unstructured.NestedString(u.Object, "spec", "address")
			bits, _, _ := unstructured.NestedInt64(u.Object, "spec", "prefix")
			if a, err := netip.ParseAddr(addr); err == nil && bits >= 0 {
				t.addresses[u.GetName()] = netip.PrefixFrom(a, a.BitLen())
			}
		}
		watches = append(watches, func() error {
			return t.watch(wctx, h.dyn.Resource(addressGVR).Namespace(namespace), "", 1, func(*unstructured.Unstructured) bool { return true }, addressed)
		})
	}
	var wg sync.WaitGroup
	errs := make([]error, len(watches))
	for i, w := range watches {
		wg.Go(func() { errs[i] = w() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		cancel()
		return nil, err
	}
	go func() {
		<-wctx.Done()
		close(t.done)
	}()
	return t, nil
}

// watch follows res (those matching sel) from now on, and counts an
// object seen once ready says so; for IPAddressClaims (half 0) and their
// IPAddresses (half 1), once both halves were (note records what an
// event tells).
func (t *tracker) watch(ctx context.Context, res dynamic.ResourceInterface, sel string, half int, ready func(*unstructured.Unstructured) bool, note func(*unstructured.Unstructured)) error {
	l, err := res.List(ctx, metav1.ListOptions{LabelSelector: sel, Limit: 1})
	if err != nil {
		return err
	}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, l.GetResourceVersion(), &watchLister{res: res, sel: sel})
	if err != nil {
		return err
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				if ev.Type != watch.Added && ev.Type != watch.Modified {
					continue
				}
				u, ok := ev.Object.(*unstructured.Unstructured)
				if !ok || !ready(u) {
					continue
				}
				now := time.Now()
				t.mu.Lock()
				if note != nil {
					note(u)
				}
				t.saw(u.GetName(), half, now)
				t.mu.Unlock()
			}
		}
	}()
	return nil
}

// saw counts name seen at now (its half for an IPAddressClaim: seen when
// the other half was too). Called with t.mu held.
func (t *tracker) saw(name string, half int, now time.Time) {
	if _, ok := t.seen[name]; ok {
		return
	}
	if t.halves != nil {
		if _, ok := t.halves[half][name]; !ok {
			t.halves[half][name] = now
		}
		if _, ok := t.halves[1-half][name]; !ok {
			return
		}
	}
	t.seen[name] = now
	t.last = now
	t.cond.Broadcast()
}

func isReady(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" && m["status"] == "True" {
			return true
		}
	}
	return false
}

func (t *tracker) sent(name string, at time.Time) {
	t.mu.Lock()
	t.start[name] = at
	t.mu.Unlock()
}

// wait blocks until n objects were seen (Ready), and returns when the last
// of them was.
func (t *tracker) wait(ctx context.Context, n int, timeout time.Duration) (time.Time, error) {
	timer := time.AfterFunc(timeout, func() { t.mu.Lock(); t.cond.Broadcast(); t.mu.Unlock() })
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.seen) < n {
		if time.Now().After(deadline) || ctx.Err() != nil {
			what := "seen"
			if t.claims {
				what = "Ready"
			}
			return time.Time{}, fmt.Errorf("only %d of %d objects %s after %s", len(t.seen), n, what, timeout)
		}
		t.cond.Wait()
	}
	return t.last, nil
}

// fill records, for every object created in the run, the time from its
// create call to when it was seen (Ready).
func (t *tracker) fill(h *hdrhistogram.Histogram) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, s := range t.start {
		if seen, ok := t.seen[name]; ok {
			_ = h.RecordValue(max(seen.Sub(s).Microseconds(), 0))
		}
	}
}

// answers are the addresses the run's IPAddressClaims got.
func (t *tracker) answers() []netip.Prefix {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []netip.Prefix
	for name := range t.start {
		if p, ok := t.addresses[name]; ok {
			out = append(out, p)
		}
	}
	return out
}

func (t *tracker) stop() {
	t.cancel()
	<-t.done
}

// watchLister lets a RetryWatcher re-open the run's watch.
type watchLister struct {
	res dynamic.ResourceInterface
	sel string
}

func (l *watchLister) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.LabelSelector = l.sel
	opts.AllowWatchBookmarks = true
	return l.res.Watch(ctx, opts)
}
