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
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// opLabel names the client operation that created an object, so that a
// create whose answer was lost can be looked up.
const opLabel = "chaos.kipam.dev/op"

// namespaces the claims are spread over.
var namespaces = []string{"chaos-a", "chaos-b", "chaos-c"}

// poolDef is a pool of the tree the driver works on.
type poolDef struct {
	name         string
	cidr         string // a top-level pool's
	parent       string // a child's, carved with prefixLength
	prefixLength int32
	defaultLen   int32
	strategy     ipamv1alpha1.AllocationStrategy
	reuse        int64
	excludeFirst int64
	excludeLast  int64
	reserved     []string
	claimLens    []int32 // what claims in it ask for, drawn uniformly
	weight       int     // share of the workers' creates
	recreatable  bool    // a leaf the recreate-pool fault may delete and create again
	// retain keeps released prefixes for their claims' identities
	// (spec.retainReleased); claims in it carry one of stickyKeys sticky
	// keys, so that identities come back while their prefixes are kept.
	retain     time.Duration
	stickyKeys int
}

// staticPools is the tree the workers claim from: both families, three
// levels, mixed prefix lengths, first fit and random, with and without a
// reuse grace; c4s is small, so that it runs out now and then.
var staticPools = []poolDef{
	{name: "c4", cidr: "10.200.0.0/16", defaultLen: 32, claimLens: []int32{32, 32, 32, 30, 28, 26, 24}, weight: 4},
	{name: "c4-a", parent: "c4", prefixLength: 20, defaultLen: 32, reuse: 2, claimLens: []int32{32, 31, 30, 29, 28}, weight: 3},
	{name: "c4-a-x", parent: "c4-a", prefixLength: 24, defaultLen: 32, strategy: ipamv1alpha1.Random,
		claimLens: []int32{32, 32, 30, 28}, weight: 2, recreatable: true},
	{name: "c4-b", parent: "c4", prefixLength: 22, defaultLen: 30, claimLens: []int32{30, 32, 29}, weight: 2, recreatable: true},
	{name: "c4-r", parent: "c4", prefixLength: 25, defaultLen: 32, retain: 10 * time.Minute, stickyKeys: 40,
		claimLens: []int32{32}, weight: 2},
	{name: "c4s", cidr: "10.201.0.0/23", defaultLen: 32, excludeFirst: 1, excludeLast: 1, reserved: []string{"10.201.0.128/28"},
		claimLens: []int32{32, 30, 28, 27}, weight: 2},
	{name: "c6", cidr: "fd00:c6::/48", defaultLen: 64, claimLens: []int32{64, 64, 60, 56, 120, 128}, weight: 3},
	{name: "c6-a", parent: "c6", prefixLength: 56, defaultLen: 64, reuse: 1, claimLens: []int32{64, 64, 62, 120, 128}, weight: 3},
	{name: "c6-a-x", parent: "c6-a", prefixLength: 60, defaultLen: 128, strategy: ipamv1alpha1.Random,
		claimLens: []int32{128, 124, 120, 64}, weight: 2, recreatable: true},
	{name: "c6r", cidr: "fd00:c7::/112", defaultLen: 128, strategy: ipamv1alpha1.Random, claimLens: []int32{128, 126, 124, 120}, weight: 2},
	{name: "c6-r", parent: "c6-a", prefixLength: 120, defaultLen: 128, reuse: 2, retain: 10 * time.Minute, stickyKeys: 40,
		claimLens: []int32{128, 126}, weight: 2},
}

// carveParents are where the churners carve short-lived child pools, and
// the lengths they carve and claim.
var carveParents = []struct {
	parent    string
	lengths   []int32
	claimLens []int32
}{
	{"c4", []int32{24, 26}, []int32{32, 30}},
	{"c4-a", []int32{26, 27}, []int32{32}},
	{"c6", []int32{56, 60}, []int32{64, 120, 128}},
	{"c6-a", []int32{60, 64}, []int32{120, 128}},
}

// poolState is a static pool as the workers see it.
type poolState struct {
	def  poolDef
	gate sync.RWMutex // creates hold it shared; recreate-pool holds it to close the pool
	open atomic.Bool
	// creates counts creates sent to it, to find the busiest pool.
	creates atomic.Int64
}

// driverOptions bound the load.
type driverOptions struct {
	workers     int
	churners    int
	maxLive     int
	thinkMin    time.Duration
	thinkMax    time.Duration
	attemptTime time.Duration // one attempt's deadline
}

// driver sends the clients' requests and records what they were told.
type driver struct {
	c      client.Client
	opts   driverOptions
	seed   uint64
	faults *faultLog
	hist   *history
	stats  *stats

	pools     map[string]*poolState
	poolOrder []string

	mu       sync.Mutex
	parentOf map[string]string
	live     []*record // claims live from the clients' view, not being deleted by anyone
	leftover []*record // deletes that gave up, retried at the end

	midflight atomic.Bool // every create is followed at once by its delete
	opSeq     atomic.Uint64
	suffixRng *rand.Rand
	suffixMu  sync.Mutex
	// recent holds, every 5 s, each pool's creates counter, to find the
	// pool that received the most creates in the last 30 s.
	recentMu sync.Mutex
	recent   []map[string]int64
}

func newDriver(c client.Client, seed uint64, opts driverOptions, faults *faultLog, hist *history, st *stats) *driver {
	d := &driver{c: c, seed: seed, opts: opts, faults: faults, hist: hist, stats: st,
		pools: map[string]*poolState{}, parentOf: map[string]string{},
		suffixRng: rand.New(rand.NewPCG(seed, 0x5f))}
	for _, def := range staticPools {
		ps := &poolState{def: def}
		d.pools[def.name] = ps
		d.poolOrder = append(d.poolOrder, def.name)
		if def.parent != "" {
			d.parentOf[def.name] = def.parent
		}
	}
	return d
}

// ancestors returns pool's parents by name, nearest first.
func (d *driver) ancestors(pool string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for p, ok := d.parentOf[pool]; ok && len(out) < 16; p, ok = d.parentOf[p] {
		out = append(out, p)
	}
	return out
}

func (d *driver) newOp(kind string) *op {
	return &op{id: fmt.Sprintf("o%d", d.opSeq.Add(1)), kind: kind, faults: d.faults.active(), start: time.Now()}
}

// outcomeOf sorts an error: nil is allowed; a definite refusal is denied;
// anything else (429 after client-go's retries, 5xx, a timeout, a broken
// connection, a webhook that did not answer) may have been stored and is
// retried.
func outcomeOf(err error) string {
	switch {
	case err == nil:
		return allowed
	case apierrors.IsTooManyRequests(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
		apierrors.IsInternalError(err), apierrors.IsServiceUnavailable(err), apierrors.IsUnexpectedServerError(err):
		return failed
	case apierrors.IsAlreadyExists(err), apierrors.IsInvalid(err), apierrors.IsForbidden(err), apierrors.IsBadRequest(err),
		apierrors.IsNotFound(err), apierrors.IsConflict(err), apierrors.IsMethodNotSupported(err), apierrors.IsUnauthorized(err):
		return denied
	default:
		return failed
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func backoff(attempt int) time.Duration {
	return min(time.Duration(attempt+1)*500*time.Millisecond, 5*time.Second)
}

// createClaim creates a claim in pool for a prefix of bits, retrying what
// has no definite answer for as long as ctx allows, and returns what the
// client was told (nil if nothing). After an ambiguous failure it looks
// the claim up by its op label before trying again.
func (d *driver) createClaim(ctx context.Context, kind, ns, pool string, bits int32, maxAttempts int) (*record, error) {
	return d.createStickyClaim(ctx, kind, ns, pool, bits, "", maxAttempts)
}

// createStickyClaim is createClaim with a spec.stickyKey (none if "").
func (d *driver) createStickyClaim(ctx context.Context, kind, ns, pool string, bits int32, sticky string, maxAttempts int) (*record, error) {
	o := d.newOp(kind)
	if ps := d.pools[pool]; ps != nil {
		ps.creates.Add(1)
	}
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			o.retries.Add(1)
			if !sleepCtx(ctx, backoff(attempt)) {
				break
			}
		}
		claim := &ipamv1alpha1.IPClaim{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "c-", Namespace: ns, Labels: map[string]string{opLabel: o.id}},
			Spec:       ipamv1alpha1.IPClaimSpec{Pool: pool, PrefixLength: ptr.To(bits), StickyKey: sticky},
		}
		actx, cancel := context.WithTimeout(withOp(ctx, o), d.opts.attemptTime)
		err := d.c.Create(actx, claim)
		cancel()
		switch outcomeOf(err) {
		case allowed:
			r, rerr := d.toldClaim(claim, o, "create")
			d.stats.done(o, allowed, nil)
			return r, rerr
		case denied:
			d.stats.done(o, denied, err)
			return nil, nil
		}
		lastErr = err
		if r := d.lookupClaim(ctx, o, ns); r != nil {
			d.stats.done(o, allowed, nil)
			return r, nil
		}
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	d.stats.done(o, failed, lastErr)
	return nil, nil
}

// lookupClaim reads the claims labelled with o's id, after a create whose
// answer was lost; it records and returns the one it finds, if any.
func (d *driver) lookupClaim(ctx context.Context, o *op, ns string) *record {
	var list ipamv1alpha1.IPClaimList
	err := poll(ctx, time.Second, func(ctx context.Context) error {
		lctx, cancel := context.WithTimeout(ctx, d.opts.attemptTime)
		defer cancel()
		return d.c.List(lctx, &list, client.InNamespace(ns), client.MatchingLabels{opLabel: o.id})
	})
	if err != nil {
		return nil // the end's discovery finds it, if it exists
	}
	var first *record
	for i := range list.Items {
		c := &list.Items[i]
		if c.DeletionTimestamp != nil {
			continue
		}
		r, err := d.toldClaim(c, o, "lookup")
		if err == nil && first == nil {
			first = r
		}
	}
	return first
}

// toldClaim records the prefix a claim carries as told now, and adds it to
// the live claims.
func (d *driver) toldClaim(c *ipamv1alpha1.IPClaim, o *op, how string) (*record, error) {
	now := time.Now()
	prefix, err := netip.ParsePrefix(c.Spec.CIDR)
	if err != nil {
		return nil, fmt.Errorf("claim %s/%s came back with spec.cidr %q: %w", c.Namespace, c.Name, c.Spec.CIDR, err)
	}
	r := &record{Kind: "IPClaim", Object: c.Namespace + "/" + c.Name, UID: string(c.UID), Pool: c.Spec.Pool, CIDR: prefix,
		Told: now, How: how, Op: o.id, FaultsAtTold: d.faults.active()}
	if kept := d.hist.add(r); kept != r {
		return kept, nil
	}
	d.mu.Lock()
	d.live = append(d.live, r)
	d.mu.Unlock()
	return r, nil
}

// takeLive removes and returns a random live claim (nil if none), so that
// no one else deletes it.
func (d *driver) takeLive(rng *rand.Rand) *record {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.live) == 0 {
		return nil
	}
	i := rng.IntN(len(d.live))
	r := d.live[i]
	d.live[i] = d.live[len(d.live)-1]
	d.live = d.live[:len(d.live)-1]
	return r
}

// takeRecord removes r from the live claims; false if someone took it.
func (d *driver) takeRecord(r *record) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := slices.Index(d.live, r)
	if i < 0 {
		return false
	}
	d.live = slices.Delete(d.live, i, i+1)
	return true
}

// takePool removes and returns every live claim of pool.
func (d *driver) takePool(pool string) []*record {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*record
	kept := d.live[:0]
	for _, r := range d.live {
		if r.Pool == pool {
			out = append(out, r)
		} else {
			kept = append(kept, r)
		}
	}
	d.live = kept
	return out
}

func (d *driver) liveCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.live)
}

// deleteClaim ends r from the client's view now and deletes the claim,
// retrying until it is accepted or gone; a delete that gives up is kept
// for the end.
func (d *driver) deleteClaim(ctx context.Context, kind string, r *record) {
	o := d.newOp(kind)
	d.hist.end(r, time.Now(), o.faults)
	ns, name, _ := splitName(r.Object)
	obj := &ipamv1alpha1.IPClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	err := d.deleteObject(ctx, o, obj, r.UID)
	if err != nil {
		d.mu.Lock()
		d.leftover = append(d.leftover, r)
		d.mu.Unlock()
	}
}

// deleteObject deletes obj (if it still has uid), retrying until the API
// server accepts the delete or says it is gone, or ctx ends.
func (d *driver) deleteObject(ctx context.Context, o *op, obj client.Object, uid string) error {
	var lastErr error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			o.retries.Add(1)
			if !sleepCtx(ctx, backoff(attempt)) {
				break
			}
		}
		actx, cancel := context.WithTimeout(withOp(ctx, o), d.opts.attemptTime)
		var opts []client.DeleteOption
		if uid != "" {
			opts = append(opts, client.Preconditions{UID: ptr.To(types.UID(uid))})
		}
		err := d.c.Delete(actx, obj, opts...)
		cancel()
		if err == nil || apierrors.IsNotFound(err) || (apierrors.IsConflict(err) && uid != "") {
			// A Conflict on the uid precondition: that object is gone and
			// another of its name exists.
			d.stats.done(o, allowed, nil)
			return nil
		}
		if outcomeOf(err) == denied {
			d.stats.done(o, denied, err)
			return err
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	d.stats.done(o, failed, lastErr)
	return lastErr
}

// pickPool draws an open static pool by weight.
func (d *driver) pickPool(rng *rand.Rand) *poolState {
	total := 0
	for _, name := range d.poolOrder {
		if ps := d.pools[name]; ps.open.Load() {
			total += ps.def.weight
		}
	}
	if total == 0 {
		return nil
	}
	n := rng.IntN(total)
	for _, name := range d.poolOrder {
		ps := d.pools[name]
		if !ps.open.Load() {
			continue
		}
		if n < ps.def.weight {
			return ps
		}
		n -= ps.def.weight
	}
	return nil
}

// worker creates and deletes claims until ctx ends.
func (d *driver) worker(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(d.seed, uint64(1000+id)))
	for ctx.Err() == nil {
		think := d.opts.thinkMin + time.Duration(rng.Int64N(int64(d.opts.thinkMax-d.opts.thinkMin)+1))
		if !sleepCtx(ctx, think) {
			return
		}
		if d.liveCount() >= d.opts.maxLive || rng.Float64() < 0.4 {
			if r := d.takeLive(rng); r != nil {
				d.deleteClaim(ctx, "delete-claim", r)
				continue
			}
		}
		ps := d.pickPool(rng)
		if ps == nil {
			continue
		}
		bits := ps.def.claimLens[rng.IntN(len(ps.def.claimLens))]
		ns := namespaces[rng.IntN(len(namespaces))]
		if !ps.gate.TryRLock() {
			continue // being closed by recreate-pool
		}
		if !ps.open.Load() {
			ps.gate.RUnlock()
			continue
		}
		sticky := ""
		if ps.def.stickyKeys > 0 {
			sticky = fmt.Sprintf("k%d", rng.IntN(ps.def.stickyKeys))
		}
		r, err := d.createStickyClaim(ctx, "create-claim", ns, ps.def.name, bits, sticky, 6)
		ps.gate.RUnlock()
		if err != nil {
			d.faults.event("driver", "%v", err)
		}
		if r != nil && (d.midflight.Load() || rng.Float64() < 0.03) && d.takeRecord(r) {
			// Deleted mid-flight: right after the create returned, while
			// kipam's controllers are still creating its IPAllocation.
			d.deleteClaim(ctx, "delete-claim-midflight", r)
		}
	}
}

// createPool creates a pool and records its prefix; it retries what has no
// definite answer, looking the pool up by name (and op label) first. It
// returns nil when the create was denied or never answered.
func (d *driver) createPool(ctx context.Context, kind string, def poolDef, name string, maxAttempts int, retryExisting bool) (*record, error) {
	o := d.newOp(kind)
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			o.retries.Add(1)
			if !sleepCtx(ctx, backoff(attempt)) {
				break
			}
		}
		pool := &ipamv1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{opLabel: o.id}},
			Spec: ipamv1alpha1.IPPoolSpec{CIDR: def.cidr, ParentPool: def.parent, Strategy: def.strategy,
				ExcludeFirst: def.excludeFirst, ExcludeLast: def.excludeLast, Reserved: def.reserved},
		}
		if def.parent != "" {
			pool.Spec.PrefixLength = ptr.To(def.prefixLength)
		}
		if def.defaultLen > 0 {
			pool.Spec.DefaultPrefixLength = ptr.To(def.defaultLen)
		}
		if def.reuse > 0 {
			pool.Spec.ReuseGracePeriodSeconds = ptr.To(def.reuse)
		}
		if def.retain > 0 {
			pool.Spec.RetainReleased = &metav1.Duration{Duration: def.retain}
		}
		actx, cancel := context.WithTimeout(withOp(ctx, o), d.opts.attemptTime)
		err := d.c.Create(actx, pool)
		cancel()
		out := outcomeOf(err)
		if out == allowed {
			r, rerr := d.toldPool(pool, o, "create")
			d.stats.done(o, allowed, nil)
			return r, rerr
		}
		if out == denied && !(retryExisting && (apierrors.IsAlreadyExists(err) || apierrors.IsForbidden(err))) {
			d.stats.done(o, denied, err)
			return nil, nil
		}
		lastErr = err
		if out == failed {
			if r := d.lookupPool(ctx, o, name); r != nil {
				d.stats.done(o, allowed, nil)
				return r, nil
			}
		}
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	d.stats.done(o, failed, lastErr)
	return nil, nil
}

func (d *driver) lookupPool(ctx context.Context, o *op, name string) *record {
	var pool ipamv1alpha1.IPPool
	err := poll(ctx, time.Second, func(ctx context.Context) error {
		lctx, cancel := context.WithTimeout(ctx, d.opts.attemptTime)
		defer cancel()
		err := d.c.Get(lctx, client.ObjectKey{Name: name}, &pool)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil || pool.Labels[opLabel] != o.id || pool.DeletionTimestamp != nil {
		return nil
	}
	r, _ := d.toldPool(&pool, o, "lookup")
	return r
}

func (d *driver) toldPool(p *ipamv1alpha1.IPPool, o *op, how string) (*record, error) {
	prefix, err := netip.ParsePrefix(p.Spec.CIDR)
	if err != nil {
		return nil, fmt.Errorf("pool %s came back with spec.cidr %q: %w", p.Name, p.Spec.CIDR, err)
	}
	r := &record{Kind: "IPPool", Object: p.Name, UID: string(p.UID), Pool: p.Spec.ParentPool, CIDR: prefix,
		Told: time.Now(), How: how, Op: o.id, FaultsAtTold: d.faults.active()}
	kept := d.hist.add(r)
	if p.Spec.ParentPool != "" {
		d.mu.Lock()
		d.parentOf[p.Name] = p.Spec.ParentPool
		d.mu.Unlock()
	}
	return kept, nil
}

// deletePool ends r now and deletes the pool.
func (d *driver) deletePool(ctx context.Context, r *record) error {
	o := d.newOp("delete-pool")
	d.hist.end(r, time.Now(), o.faults)
	return d.deleteObject(ctx, o, &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: r.Object}}, r.UID)
}

// waitGone waits until the object named by key with uid is gone.
func (d *driver) waitGone(ctx context.Context, obj client.Object, uid string) error {
	return poll(ctx, time.Second, func(ctx context.Context) error {
		gctx, cancel := context.WithTimeout(ctx, d.opts.attemptTime)
		defer cancel()
		err := d.c.Get(gctx, client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) || (err == nil && string(obj.GetUID()) != uid) {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("%s still exists (deleting since %v, finalizers %v)", obj.GetName(), obj.GetDeletionTimestamp(), obj.GetFinalizers())
	})
}

// randSuffix is five characters as generateName picks them.
func (d *driver) randSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	d.suffixMu.Lock()
	defer d.suffixMu.Unlock()
	b := make([]byte, 5)
	for i := range b {
		b[i] = alphabet[d.suffixRng.IntN(len(alphabet))]
	}
	return string(b)
}

// churner carves child pools, claims in them, and deletes them again,
// the claims first or the pool first, until ctx ends.
func (d *driver) churner(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(d.seed, uint64(2000+id)))
	for n := 0; ctx.Err() == nil; n++ {
		if !sleepCtx(ctx, time.Duration(500+rng.IntN(3000))*time.Millisecond) {
			return
		}
		cp := carveParents[rng.IntN(len(carveParents))]
		def := poolDef{parent: cp.parent, prefixLength: cp.lengths[rng.IntN(len(cp.lengths))]}
		name := fmt.Sprintf("dyn-%d-%d-%s", id, n, d.randSuffix())
		pr, err := d.createPool(ctx, "create-pool", def, name, 6, false)
		if err != nil {
			d.faults.event("driver", "%v", err)
		}
		if pr == nil {
			continue
		}
		var claims []*record
		for range 1 + rng.IntN(5) {
			bits := cp.claimLens[rng.IntN(len(cp.claimLens))]
			if bits < def.prefixLength {
				continue
			}
			r, err := d.createClaim(ctx, "create-claim", namespaces[rng.IntN(len(namespaces))], name, bits, 6)
			if err != nil {
				d.faults.event("driver", "%v", err)
			}
			if r != nil && d.takeRecord(r) {
				claims = append(claims, r)
			}
		}
		// Hold them a while; at the end of the run they are deleted anyway.
		sleepCtx(ctx, time.Duration(2000+rng.IntN(18000))*time.Millisecond)
		dctx := context.WithoutCancel(ctx)
		dctx, cancel := context.WithTimeout(dctx, 5*time.Minute)
		poolFirst := rng.IntN(2) == 0
		if poolFirst {
			_ = d.deletePool(dctx, pr)
		}
		for _, r := range claims {
			d.deleteClaim(dctx, "delete-claim", r)
		}
		if !poolFirst {
			_ = d.deletePool(dctx, pr)
		}
		if err := d.waitGone(dctx, &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}}, pr.UID); err != nil {
			d.faults.event("harness", "LIVENESS: pool %s was not gone within 5 minutes of its delete: %v", name, err)
		}
		cancel()
	}
}

// busiestPool is the open static pool with the most creates in the last
// 30 s or so.
func (d *driver) busiestPool() string {
	d.recentMu.Lock()
	defer d.recentMu.Unlock()
	best, bestN := "", int64(-1)
	for _, name := range d.poolOrder {
		ps := d.pools[name]
		if !ps.open.Load() {
			continue
		}
		n := ps.creates.Load()
		if len(d.recent) > 0 {
			n -= d.recent[0][name]
		}
		if n > bestN {
			best, bestN = name, n
		}
	}
	return best
}

// sampleRecent keeps the creates counters of the last 30 s, every 5 s.
func (d *driver) sampleRecent(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m := map[string]int64{}
		for name, ps := range d.pools {
			m[name] = ps.creates.Load()
		}
		d.recentMu.Lock()
		d.recent = append(d.recent, m)
		if len(d.recent) > 6 {
			d.recent = d.recent[1:]
		}
		d.recentMu.Unlock()
	}
}

// createStaticPools creates the tree, parents first.
func (d *driver) createStaticPools(ctx context.Context) error {
	for _, name := range d.poolOrder {
		ps := d.pools[name]
		r, err := d.createPool(ctx, "create-pool", ps.def, name, 30, false)
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("pool %s could not be created", name)
		}
		ps.open.Store(true)
	}
	return nil
}

// poolRecord is the live record of a static pool.
func (d *driver) poolRecord(name string) *record {
	var found *record
	for _, r := range d.hist.snapshot() {
		if r.Kind == "IPPool" && r.Object == name && r.End.IsZero() {
			found = d.hist.lookup(r.Kind, r.Object, r.UID)
		}
	}
	return found
}

func splitName(s string) (ns, name string, err error) {
	for i := range len(s) {
		if s[i] == '/' {
			return s[:i], s[i+1:], nil
		}
	}
	return "", s, errors.New("no namespace in " + s)
}
