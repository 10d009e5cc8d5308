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
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// injector carries out the schedule.
type injector struct {
	cp     *controlPlane
	rs     *replicaSet
	drv    *driver
	proxy  *apiProxy
	c      client.Client
	log    *faultLog
	fo     *failover
	start  time.Time // of the traffic, which step offsets count from
	probes sync.WaitGroup

	// leakSeq numbers the leak probes.
	leakSeq atomic.Int64

	// records counts what direct deletes of kipam's records got.
	mu      sync.Mutex
	records map[string]int
}

// run carries out steps in order until ctx ends; a step starts at its
// planned offset, or, if the one before it ran long, its planned gap after
// that one ended, so that faults do not bunch up after a slow one.
func (in *injector) run(ctx context.Context, steps []step) {
	var notBefore time.Time
	for _, st := range steps {
		start := in.start.Add(st.At)
		if notBefore.After(start) {
			start = notBefore
		}
		if wait := time.Until(start); wait > 0 && !sleepCtx(ctx, wait) {
			return
		}
		if ctx.Err() != nil {
			return
		}
		in.do(ctx, st)
		notBefore = time.Now().Add(st.Gap)
	}
}

func (in *injector) do(ctx context.Context, st step) {
	if slices.Contains(processFaults, st.Kind) {
		// A process fault hits a cluster that has recovered from the last
		// one, so that it is the fault it says (a replica still in its
		// crash-loop back-off cannot be frozen).
		in.waitHealthy(ctx, st.Kind, true)
	} else if st.Kind == faultDeleteRecords {
		in.waitHealthy(ctx, st.Kind, false)
	}
	if ctx.Err() != nil {
		return
	}
	switch st.Kind {
	case faultKillOwner, faultStopOwner:
		in.ownerFault(ctx, st)
	case faultRestartReplicas:
		in.restartReplicas(ctx, st)
	case faultRestartAPIServer:
		in.restartProcess(ctx, st, in.cp.apiserver)
	case faultRestartEtcd:
		in.restartProcess(ctx, st, in.cp.etcd)
	case faultRecreatePool:
		in.recreatePool(ctx, st)
	case faultRejectCreates:
		in.policyWindow(ctx, st, rejectCreatesPolicy, in.leakProbe)
	case faultFailReleases:
		in.policyWindow(ctx, st, failReleasesPolicy, func(ctx context.Context) { in.toggleSwitch(ctx, st) })
	case faultAmbiguousWrites:
		in.ambiguousWrites(ctx, st)
	case faultMidflight:
		in.log.begin(st.Kind, "every claim created is deleted as soon as its create returns")
		in.drv.midflight.Store(true)
		sleepCtx(ctx, st.Hold)
		in.drv.midflight.Store(false)
		in.log.finish(st.Kind, "")
	case faultDeleteRecords:
		in.deleteRecords(ctx, st)
	case faultClockOffset:
		in.clockOffset(ctx, st)
	}
}

// clockOffset restarts one replica with kipam's clock moved by st.Shift
// (--clock-offset, a test-only flag: a Go binary reads the clock through
// the vDSO, out of libfaketime's reach), and after st.Hold restarts it on
// the host's clock again. SIGTERM both times, so the window is the offset
// and not a crash.
func (in *injector) clockOffset(ctx context.Context, st step) {
	r := in.rs.replicas[st.Pick%len(in.rs.replicas)]
	bg := context.WithoutCancel(ctx)
	in.log.begin(st.Kind, "replica %s restarted with its clock %+.0fs off for %s", r.id, st.Shift.Seconds(), st.Hold.Round(100*time.Millisecond))
	r.proc.setExtra("--clock-offset=" + st.Shift.String())
	r.down("term")
	if err := r.up(bg); err != nil {
		in.log.event("harness", "replica %s did not start with its clock off: %v", r.id, err)
	}
	sleepCtx(ctx, st.Hold)
	r.proc.setExtra()
	r.down("term")
	if err := r.up(bg); err != nil {
		in.log.event("harness", "replica %s did not start again on the host's clock: %v", r.id, err)
	}
	in.log.finish(st.Kind, "replica %s runs on the host's clock again", r.id)
}

// waitHealthy waits, for up to 3 minutes, until the control plane serves
// and (with replicas) every replica runs, not stopped, and is ready.
func (in *injector) waitHealthy(ctx context.Context, kind string, replicas bool) {
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	err := poll(wctx, 500*time.Millisecond, func(ctx context.Context) error {
		for _, p := range []*proc{in.cp.etcd, in.cp.apiserver} {
			if err := p.ready(ctx); err != nil {
				return err
			}
		}
		if !replicas {
			return nil
		}
		for _, r := range in.rs.replicas {
			if r.proc.isStopped() || !r.proc.running() {
				return fmt.Errorf("replica %s is not running", r.id)
			}
			if err := r.proc.ready(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case err != nil && ctx.Err() == nil:
		in.log.event("harness", "%s: the cluster was still not healthy after 3 minutes (%v); injecting anyway", kind, err)
	case time.Since(start) > 2*time.Second:
		in.log.event("harness", "%s: waited %s for the cluster to recover from the last fault", kind, time.Since(start).Round(100*time.Millisecond))
	}
}

// owner is the replica holding pool's Lease, nil when none holds a live one.
func (in *injector) owner(ctx context.Context, pool string) *replica {
	var l coordinationv1.Lease
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := in.c.Get(gctx, client.ObjectKey{Namespace: leaseNamespace, Name: ipam.LeaseName(pool)}, &l); err != nil {
		return nil
	}
	holder := ptr.Deref(l.Spec.HolderIdentity, "")
	if holder == "" || l.Spec.RenewTime == nil ||
		l.Spec.RenewTime.Add(time.Duration(ptr.Deref(l.Spec.LeaseDurationSeconds, 15))*time.Second).Before(time.Now()) {
		return nil
	}
	return in.rs.byID(holder)
}

// victim is the owner of the busiest pool, or a replica the step picks.
func (in *injector) victim(ctx context.Context, st step) (string, *replica, string) {
	pool := in.drv.busiestPool()
	if r := in.owner(ctx, pool); r != nil {
		return pool, r, "owner of the busiest pool"
	}
	return pool, in.rs.replicas[st.Pick%len(in.rs.replicas)], "no live Lease on the busiest pool: picked by the seed"
}

// ownerFault kills or freezes the owner of the busiest pool.
func (in *injector) ownerFault(ctx context.Context, st step) {
	pool, r, why := in.victim(ctx, st)
	bg := context.WithoutCancel(ctx)
	t0 := time.Now()
	if st.Kind == faultKillOwner {
		in.log.begin(st.Kind, "SIGKILL replica %s (%s %s), down for %s", r.id, why, pool, st.Hold)
		r.down("kill")
	} else {
		in.log.begin(st.Kind, "SIGSTOP replica %s (%s %s) for %s (its pool Leases last %s)", r.id, why, pool, st.Hold, poolLease)
		if err := r.proc.signal(syscall.SIGSTOP); err != nil {
			in.log.finish(st.Kind, "could not stop %s: %v", r.id, err)
			return
		}
	}
	in.probe(st.Kind, pool, r.id, t0)
	sleepCtx(ctx, st.Hold)
	if st.Kind == faultKillOwner {
		if err := r.up(bg); err != nil {
			in.log.event("harness", "replica %s did not start again: %v", r.id, err)
		}
		in.log.finish(st.Kind, "replica %s started again", r.id)
	} else {
		_ = r.proc.signal(syscall.SIGCONT)
		in.log.finish(st.Kind, "SIGCONT replica %s", r.id)
	}
}

// restartReplicas takes every replica down at once and starts them again.
func (in *injector) restartReplicas(ctx context.Context, st step) {
	pool := in.drv.busiestPool()
	bg := context.WithoutCancel(ctx)
	in.log.begin(st.Kind, "every replica down (%s) for %s", st.How, st.Hold)
	t0 := time.Now()
	var wg sync.WaitGroup
	for _, r := range in.rs.replicas {
		wg.Go(func() { r.down(st.How) })
	}
	wg.Wait()
	in.probe(st.Kind, pool, "all", t0)
	sleepCtx(ctx, st.Hold)
	for _, r := range in.rs.replicas {
		wg.Go(func() {
			if err := r.up(bg); err != nil {
				in.log.event("harness", "replica %s did not start again: %v", r.id, err)
			}
		})
	}
	wg.Wait()
	in.log.finish(st.Kind, "every replica started again")
}

// restartProcess takes a control-plane process down and starts it again
// on its ports and data.
func (in *injector) restartProcess(ctx context.Context, st step, p *proc) {
	pool := in.drv.busiestPool()
	in.log.begin(st.Kind, "%s down (%s) for %s", p.name, st.How, st.Hold)
	t0 := time.Now()
	p.held.Store(true)
	if st.How == "term" {
		p.terminate(30 * time.Second)
	} else {
		p.kill()
	}
	stopped := time.Since(t0)
	in.probe(st.Kind, pool, p.name, t0)
	sleepCtx(ctx, st.Hold)
	restart := time.Now()
	in.restart(context.WithoutCancel(ctx), p)
	in.log.finish(st.Kind, "%s serves again: it took %s to exit, was down %s, and took %s to serve", p.name,
		stopped.Round(100*time.Millisecond), time.Since(t0).Round(100*time.Millisecond), time.Since(restart).Round(100*time.Millisecond))
}

// restart starts p again, a few times if it fails (a port taken meanwhile
// by another process on this machine is not something to retry for long).
func (in *injector) restart(ctx context.Context, p *proc) {
	defer p.held.Store(false)
	for attempt := 1; ; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		err := p.start(sctx)
		cancel()
		if err == nil {
			return
		}
		in.log.event("harness", "%s did not start again (attempt %d): %v", p.name, attempt, err)
		if attempt == 5 {
			panic(fmt.Sprintf("harness: %s cannot be started again: %v", p.name, err))
		}
		time.Sleep(2 * time.Second)
	}
}

// probe measures, in the background, how long after t0 a claim in pool is
// created again, and released.
func (in *injector) probe(kind, pool, victim string, t0 time.Time) {
	in.probes.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		s := failoverSample{pool: pool, victim: victim}
		defer func() { in.fo.add(kind, s) }()
		bits := in.drv.pools[pool].def.defaultLen
		for ctx.Err() == nil {
			r, _ := in.drv.createClaim(ctx, "probe-create", "chaos-a", pool, bits, 1)
			if r == nil || !in.drv.takeRecord(r) {
				sleepCtx(ctx, 250*time.Millisecond)
				continue
			}
			s.created = time.Since(t0)
			ns, name, _ := splitName(r.Object)
			in.drv.deleteClaim(ctx, "probe-delete", r)
			released := "its release was not done within 10 minutes"
			if err := in.drv.waitGone(ctx, &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, r.UID); err == nil {
				s.released = time.Since(t0)
				released = "released it after " + s.released.Round(100*time.Millisecond).String()
			}
			in.log.event("probe", "after %s of %s: pool %s created a claim after %s, %s",
				kind, victim, pool, s.created.Round(100*time.Millisecond), released)
			return
		}
		in.log.event("probe", "after %s of %s: pool %s served no claim within 10 minutes", kind, victim, pool)
	})
}

// leakPool is where leak probes ask for their prefixes, from leakPrefixes:
// far above what first fit hands out in the load's /16.
const (
	leakPool     = "c4"
	leakPrefixes = "10.200.254.%d/28"
)

// leakProbe measures leak repair while the create-refusing policy is
// bound: it creates a claim for a given /28 under a name the policy
// refuses (after kipam's webhook committed the prefix), then asks with
// dry-run creates, every half second, whether the prefix is free again.
// The time from the refusal until it is free is kipam's orphan grace, the
// sweep, and the pool's reuse grace. A create that the policy did not
// refuse yet (its binding takes a moment) is deleted, and tried again on
// the next /28.
func (in *injector) leakProbe(window context.Context) {
	in.probes.Go(func() {
		bg, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		var (
			n    int64
			cidr string
			t0   time.Time
		)
		for window.Err() == nil && t0.IsZero() {
			n = in.leakSeq.Add(1)
			cidr = fmt.Sprintf(leakPrefixes, 16*(n%16))
			c := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "chaos-a", Name: fmt.Sprintf("c-leakprobe-%d-b", n)},
				Spec: ipamv1alpha1.IPClaimSpec{Pool: leakPool, CIDR: cidr}}
			cctx, ccancel := context.WithTimeout(window, 20*time.Second)
			err := in.c.Create(cctx, c)
			ccancel()
			switch {
			case err == nil:
				_ = in.c.Delete(bg, c)
				_ = in.drv.waitGone(bg, c, string(c.UID))
			case strings.Contains(err.Error(), rejectCreatesMessage):
				t0 = time.Now()
			default:
				in.log.event("probe", "leak probe %s in %s: %v", cidr, leakPool, err)
				sleepCtx(window, time.Second)
			}
		}
		if t0.IsZero() {
			return
		}
		prefix := netip.MustParsePrefix(cidr)
		for bg.Err() == nil {
			// Free means released from the stored ledger, and past the
			// pool's reuse grace (the dry run). A dry run alone is not
			// enough: a replica serving the pool while its owner is
			// unreachable answers it from its own allocator, which may
			// not have seen the commit (docs/chaos.md).
			if _, recorded, err := ipam.LookupEntry(bg, in.c, leakPool, prefix); err != nil || recorded {
				sleepCtx(bg, 500*time.Millisecond)
				continue
			}
			check := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "chaos-a", Name: fmt.Sprintf("leakcheck-%d", n)},
				Spec: ipamv1alpha1.IPClaimSpec{Pool: leakPool, CIDR: cidr}}
			if err := in.c.Create(bg, check, client.DryRunAll); err == nil {
				d := time.Since(t0)
				in.fo.addLeak(d)
				in.log.event("probe", "leak probe: %s in %s, refused after kipam committed it, was free again after %s", cidr, leakPool, d.Round(100*time.Millisecond))
				return
			}
			sleepCtx(bg, 500*time.Millisecond)
		}
		in.fo.addLeak(0)
		in.log.event("probe", "leak probe: %s in %s, refused after kipam committed it, was not free again within 10 minutes", cidr, leakPool)
	})
}

// recreatePool deletes a leaf pool and creates it again under its name.
func (in *injector) recreatePool(ctx context.Context, st step) {
	var candidates []*poolState
	for _, name := range in.drv.poolOrder {
		if ps := in.drv.pools[name]; ps.def.recreatable {
			candidates = append(candidates, ps)
		}
	}
	ps := candidates[st.Pick%len(candidates)]
	name := ps.def.name
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	// Close it: creates in flight finish first, new ones go elsewhere.
	ps.gate.Lock()
	ps.open.Store(false)
	ps.gate.Unlock()
	defer ps.open.Store(true)
	pr := in.drv.poolRecord(name)
	if pr == nil {
		in.log.event("harness", "recreate-pool: no live record of pool %s", name)
		return
	}
	claims := in.drv.takePool(name)
	in.log.begin(st.Kind, "pool %s (%s, uid %s) with %d live claims, %s", name, pr.CIDR, pr.UID, len(claims), st.How)
	if st.How == "pool-first" {
		_ = in.drv.deletePool(bg, pr)
	}
	for _, r := range claims {
		in.drv.deleteClaim(bg, "delete-claim", r)
	}
	if st.How != "pool-first" {
		_ = in.drv.deletePool(bg, pr)
	}
	if err := in.drv.waitGone(bg, &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}}, pr.UID); err != nil {
		in.log.finish(st.Kind, "LIVENESS: pool %s was not gone within 10 minutes: %v; it stays closed", name, err)
		ps.open.Store(false)
		return
	}
	r, err := in.drv.createPool(bg, "create-pool", ps.def, name, 200, true)
	if err != nil || r == nil {
		why := "its create was refused or never answered (see the denials and failures of create-pool)"
		if err != nil {
			why = err.Error()
		}
		in.log.finish(st.Kind, "LIVENESS: pool %s could not be created again: %s; it stays closed", name, why)
		ps.open.Store(false)
		return
	}
	in.log.finish(st.Kind, "pool %s created again as %s (uid %s)", name, r.CIDR, r.UID)
}

// policyWindow binds a policy for the step's hold, running during (if
// set) alongside.
func (in *injector) policyWindow(ctx context.Context, st step, policy string, during func(context.Context)) {
	bg := context.WithoutCancel(ctx)
	in.log.begin(st.Kind, "policy %s bound for %s", policy, st.Hold)
	if err := in.bind(bg, policy, true); err != nil {
		in.log.finish(st.Kind, "could not bind: %v", err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, st.Hold)
	if during != nil {
		during(wctx)
	}
	<-wctx.Done()
	cancel()
	if err := in.bind(bg, policy, false); err != nil {
		panic(fmt.Sprintf("harness: could not unbind policy %s: %v", policy, err))
	}
	in.log.finish(st.Kind, "policy %s unbound", policy)
}

// toggleSwitch turns the release policy's switch on for share of the time,
// in slices of 0.1 to 1 s, until ctx ends, and leaves it off.
func (in *injector) toggleSwitch(ctx context.Context, st step) {
	rng := rand.New(rand.NewPCG(st.Seed, 7))
	for ctx.Err() == nil {
		on := rng.Float64() < st.Share
		_ = in.setSwitch(ctx, on)
		sleepCtx(ctx, between(rng, 100*time.Millisecond, time.Second))
	}
	if err := poll(context.WithoutCancel(ctx), time.Second, func(ctx context.Context) error { return in.setSwitch(ctx, false) }); err != nil {
		panic(fmt.Sprintf("harness: could not turn the release policy's switch off: %v", err))
	}
}

// ambiguousWrites arms the API proxy of the replica behind it.
func (in *injector) ambiguousWrites(ctx context.Context, st step) {
	in.log.begin(st.Kind, "replica %s's ledger writes: %.0f%% dropped or delayed after they went through, for %s",
		in.rs.replicas[len(in.rs.replicas)-1].id, 100*st.Share, st.Hold)
	before := in.proxy.snapshot()
	in.proxy.arm(st.Share)
	sleepCtx(ctx, st.Hold)
	in.proxy.disarm()
	after := in.proxy.snapshot()
	in.log.finish(st.Kind, "dropped %d, delayed %d", after["dropped"]-before["dropped"], after["delayed"]-before["delayed"])
}

// deleteRecords tries to delete IPAllocations and IPLedgers directly, as
// a careless user would. A delete that is refused is what kipam promises
// for a live holder; one that is accepted must be harmless, which the end
// check judges.
func (in *injector) deleteRecords(ctx context.Context, st step) {
	rng := rand.New(rand.NewPCG(st.Seed, 9))
	in.log.begin(st.Kind, "%d IPAllocations and %d IPLedgers", st.N, st.N)
	defer in.log.finish(st.Kind, "")
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var allocs ipamv1alpha1.IPAllocationList
	var ledgers ipamv1alpha1.IPLedgerList
	if err := in.c.List(lctx, &allocs); err != nil {
		in.log.event(st.Kind, "listing IPAllocations: %v", err)
		return
	}
	if err := in.c.List(lctx, &ledgers); err != nil {
		in.log.event(st.Kind, "listing IPLedgers: %v", err)
		return
	}
	try := func(kind string, obj client.Object) {
		o := in.drv.newOp("delete-" + kind)
		dctx, cancel := context.WithTimeout(withOp(ctx, o), 30*time.Second)
		err := in.c.Delete(dctx, obj)
		cancel()
		outcome := outcomeOf(err)
		in.drv.stats.done(o, outcome, err)
		what := "accepted"
		switch {
		case apierrors.IsNotFound(err):
			what = "gone already"
		case outcome == denied:
			what = "refused"
		case err != nil:
			what = "failed"
		}
		in.mu.Lock()
		in.records[kind+" "+what]++
		in.mu.Unlock()
		in.log.event(st.Kind, "delete %s %s: %s %v", kind, obj.GetName(), what, errOrEmpty(err))
	}
	for range st.N {
		if len(allocs.Items) > 0 {
			a := allocs.Items[rng.IntN(len(allocs.Items))]
			try("IPAllocation", &ipamv1alpha1.IPAllocation{ObjectMeta: metav1.ObjectMeta{Name: a.Name}})
		}
		if len(ledgers.Items) > 0 {
			l := ledgers.Items[rng.IntN(len(ledgers.Items))]
			try("IPLedger", &ipamv1alpha1.IPLedger{ObjectMeta: metav1.ObjectMeta{Name: l.Name}})
		}
	}
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return "(" + s + ")"
}
