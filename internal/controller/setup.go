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

// Package controller holds kipam's reconcilers: one per kind.
package controller

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// Namespaces: their labels decide which pools a claim may draw from.
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// Events on pools, claims and allocations (events.k8s.io, the manager's
// recorder; leader election's core events are granted in kipam's own
// namespace by its Role).
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// Leases (leader election, pool owners) are only in kipam's own namespace:
// config/rbac/leader_election_role.yaml grants them there, not cluster-wide,
// where they would let kipam take over other controllers' leader election.

// Field indexes on IPClaims.
const (
	// indexWaiting is "true" on claims that wait for space.
	indexWaiting = ipam.IndexWaiting
	// indexPoolCIDR is the block of each prefix a claim holds, with its
	// pool (holdingBlock).
	indexPoolCIDR = "kipam.poolCIDR"
)

// DefaultOrphanGrace is how long a prefix may be committed without any
// claim carrying it before it is released, counted from when the sweeping
// replica first saw it. It must outlast MinOrphanGrace.
const DefaultOrphanGrace = 2 * time.Minute

// MinOrphanGrace is what the orphan grace must exceed: the webhook's
// timeout (15s) plus the API server's request timeout (60s by default),
// the longest a create that the webhook allowed can still be on its way to
// etcd. A shorter grace could release a prefix whose claim is about to be
// stored.
const MinOrphanGrace = 75 * time.Second

// CheckOrphanGrace refuses an orphan grace that does not exceed
// MinOrphanGrace, saying why.
func CheckOrphanGrace(d time.Duration) error {
	if d <= MinOrphanGrace {
		return fmt.Errorf("an orphan grace of %s is too short: it must exceed the webhook timeout (15s) plus the API server's "+
			"request timeout (60s), %s in all, or the sweep could release a prefix whose claim is still being stored", d, MinOrphanGrace)
	}
	return nil
}

// Options configure the reconcilers.
type Options struct {
	// OrphanGrace: see DefaultOrphanGrace.
	OrphanGrace time.Duration
	// Workers is how many claims, and how many IPAllocations, are
	// reconciled at once (DefaultWorkers when 0).
	Workers int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// RetryMaxDelay caps how long a reconciler waits before retrying an
	// object whose reconcile failed (DefaultRetryMaxDelay when 0).
	RetryMaxDelay time.Duration
	// LeaseNamespace holds the pools' Leases (ipam.Owners): a deleted
	// pool's goes with it, and the leader sweeps those of pools that no
	// longer exist (LeaseSweepInterval). None of that when empty.
	LeaseNamespace string
}

// DefaultRetryMaxDelay is the longest any kipam reconciler waits before
// retrying an object whose reconcile failed, however many times it failed:
// a release refused for a while (an admission policy, the API server down)
// goes through at most this long after the refusals stop. controller-
// runtime's default limiter waits up to 1000 s per object, and its
// queue-wide token bucket adds a second for every ten failures beyond a
// hundred.
const DefaultRetryMaxDelay = 10 * time.Second

// retryLimiter is how a kipam reconciler spaces its retries of one object:
// controller-runtime's default (the wait doubling from 5 ms per object,
// and at most ten retries a second across the queue after a burst of a
// hundred), but never longer than maxDelay (DefaultRetryMaxDelay when 0).
// The bucket still spreads a storm of failures; the cap bounds how long
// any one object waits for it.
func retryLimiter(maxDelay time.Duration) workqueue.TypedRateLimiter[reconcile.Request] {
	if maxDelay <= 0 {
		maxDelay = DefaultRetryMaxDelay
	}
	return cappedLimiter{workqueue.DefaultTypedControllerRateLimiter[reconcile.Request](), maxDelay}
}

// cappedLimiter is a rate limiter whose delays are at most max.
type cappedLimiter struct {
	workqueue.TypedRateLimiter[reconcile.Request]
	max time.Duration
}

func (c cappedLimiter) When(item reconcile.Request) time.Duration {
	return min(c.TypedRateLimiter.When(item), c.max)
}

// APILimits sets how fast kipam may send requests to the API server:
// each of its clients, per resource kind (client-go keeps a token bucket
// per REST client, and controller-runtime makes one per kind), at most
// qps a second on average and burst at once. qps 0, the default, sets
// none, as controller-runtime's own default does: the API server's API
// Priority and Fairness alone decides, and a burst of claims is answered
// and made Ready as fast as it takes them. burst 0 is twice qps. The
// admission path's ledger writes count against the same limit as the
// controllers' writes.
func APILimits(cfg *rest.Config, qps float32, burst int) error {
	switch {
	case qps < 0:
		return fmt.Errorf("--kube-api-qps must be 0 (no client-side limit) or more, not %v", qps)
	case burst < 0:
		return fmt.Errorf("--kube-api-burst must be 0 (twice --kube-api-qps) or more, not %d", burst)
	case qps == 0 && burst > 0:
		return fmt.Errorf("--kube-api-burst=%d limits nothing without --kube-api-qps", burst)
	case qps == 0:
		// client-go reads 0 as its own default of 5 a second; below 0 is none.
		cfg.QPS, cfg.Burst = -1, 0
		return nil
	case burst == 0:
		burst = max(1, int(math.Ceil(2*float64(qps))))
	}
	cfg.QPS, cfg.Burst = qps, burst
	return nil
}

// WithoutAPILimits is a copy of cfg with no client-side rate limit, for
// the pool Leases: a replica renews every Lease it holds each third of
// --pool-lease-duration, one by one, and a Lease renewed late is taken
// over by another replica, which costs its pool a restore. A limit meant
// to hold back bulk writes must not make that happen.
func WithoutAPILimits(cfg *rest.Config) *rest.Config {
	out := rest.CopyConfig(cfg)
	out.QPS, out.Burst, out.RateLimiter = -1, 0, nil
	return out
}

// DefaultWorkers is how many claims, and how many IPAllocations, kipam
// reconciles at once: a burst of creates is made Ready that much sooner,
// at the cost of as many concurrent writes to the API server.
const DefaultWorkers = 4

// SetupWithManager registers the field indexes and every kipam reconciler.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, m *ipam.Manager, opts Options) error {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.OrphanGrace == 0 {
		opts.OrphanGrace = DefaultOrphanGrace
	}
	if opts.Workers == 0 {
		opts.Workers = DefaultWorkers
	}
	held, err := indexFields(ctx, mgr.GetCache())
	if err != nil {
		return err
	}
	resolver := &ipam.Resolver{Reader: mgr.GetClient(), APIReader: mgr.GetAPIReader()}
	recorder := mgr.GetEventRecorder("kipam")
	pending := newUnconfirmed()
	// Recorded on every replica, so that a new leader's sweep counts the
	// orphan grace from when it first saw an entry, not from its election.
	seen := &sightings{}
	if err := watchSightings(ctx, mgr.GetCache(), seen, opts.Now); err != nil {
		return err
	}
	addressClaims, cluster, err := capiKinds(mgr)
	if err != nil {
		return err
	}
	watcher, err := client.NewWithWatch(mgr.GetConfig(), client.Options{HTTPClient: mgr.GetHTTPClient(), Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return err
	}
	allocs := newAllocations(watcher)
	if addressClaims {
		if err := indexAddressClaims(ctx, mgr.GetFieldIndexer()); err != nil {
			return err
		}
	}
	for _, r := range []interface{ SetupWithManager(ctrl.Manager) error }{
		&IPPoolReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Manager: m, Recorder: recorder, Now: opts.Now, Unconfirmed: pending, Allocations: allocs,
			RetryMaxDelay: opts.RetryMaxDelay, LeaseNamespace: opts.LeaseNamespace},
		&IPClaimReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Manager: m, Resolver: resolver, Recorder: recorder, Now: opts.Now, Holdings: held,
			Allocations: allocs, Workers: opts.Workers, RetryMaxDelay: opts.RetryMaxDelay},
		&IPAllocationReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Manager: m, Recorder: recorder,
			OrphanGrace: opts.OrphanGrace, Now: opts.Now, Workers: opts.Workers, RetryMaxDelay: opts.RetryMaxDelay, AddressClaims: addressClaims,
			Allocations: allocs},
		&IPLedgerReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Manager: m, Recorder: recorder, Holdings: held,
			OrphanGrace: opts.OrphanGrace, Now: opts.Now, Unconfirmed: pending, RetryMaxDelay: opts.RetryMaxDelay, AddressClaims: addressClaims,
			Sightings: seen},
	} {
		if err := r.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	if opts.LeaseNamespace != "" {
		if err := mgr.Add(&leaseSweep{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: opts.LeaseNamespace,
			Interval: LeaseSweepInterval}); err != nil {
			return err
		}
	}
	if !addressClaims {
		return nil
	}
	return (&IPAddressClaimReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Manager: m, Resolver: resolver, Recorder: recorder,
		Allocations: allocs, Now: opts.Now, Workers: AddressClaimWorkersPerWorker * opts.Workers, RetryMaxDelay: opts.RetryMaxDelay, Cluster: cluster}).SetupWithManager(mgr)
}

// AddressClaimWorkersPerWorker is how many IPAddressClaims kipam reconciles
// at once per worker (Options.Workers). An IPClaim is allocated at
// admission, and its reconcile only records; an IPAddressClaim is
// allocated in its reconcile, which waits on five API writes in turn and
// on its pool's commit, where the claims reconciled at once commit
// together in one ledger write. It spends little CPU waiting: at four
// workers a burst of 100 claims from one pool was answered at 11 to 16 a
// second on make demo, at sixteen at 19 to 37 (load average 16 to 18).
const AddressClaimWorkersPerWorker = 4

// capiKinds reports whether Cluster API's IPAddressClaim
// (ipam.cluster.x-k8s.io/v1beta2) is served, so that kipam serves Cluster
// API's IPAM contract, and the version of its Cluster kind if that is
// served, so that a paused Cluster pauses its claims; it says at startup
// which. Cluster API owns those CRDs: one installed after kipam started
// is served from kipam's next start.
func capiKinds(mgr ctrl.Manager) (bool, *schema.GroupVersionKind, error) {
	log := ctrl.Log.WithName("setup")
	served, err := ipam.AddressClaimsServed(mgr.GetRESTMapper())
	if err != nil {
		return false, nil, err
	}
	if !served {
		log.Info("Cluster API's IPAddressClaim (ipam.cluster.x-k8s.io/v1beta2) is not served: not serving Cluster API's IPAM contract")
		return false, nil, nil
	}
	if gvk := capiv1beta2.GroupVersion.WithKind("IPAddressClaim"); !mgr.GetScheme().Recognizes(gvk) {
		return false, nil, fmt.Errorf("the manager's scheme lacks %s: add api/capi/ipam/v1beta2 to it", gvk)
	}
	mapping, err := mgr.GetRESTMapper().RESTMapping(ClusterGroupKind)
	if err != nil {
		if !meta.IsNoMatchError(err) {
			return false, nil, fmt.Errorf("looking up Cluster API's Cluster: %w", err)
		}
		log.Info("serving Cluster API's IPAddressClaims whose poolRef names a kipam IPPool; Cluster API's Cluster is not served, " +
			"so only a claim's own paused annotation pauses it")
		return true, nil, nil
	}
	cluster := mapping.GroupVersionKind
	log.Info("serving Cluster API's IPAddressClaims whose poolRef names a kipam IPPool; a paused Cluster pauses its claims", "cluster", cluster.String())
	return true, &cluster, nil
}

// indexFields registers the field indexes the reconcilers list by, and
// returns the index of the claims' holdings.
func indexFields(ctx context.Context, c cache.Cache) (*holdings, error) {
	if err := c.IndexField(ctx, &ipamv1alpha1.IPClaim{}, indexWaiting, ipam.WaitingIndex); err != nil {
		return nil, err
	}
	if err := ipam.IndexLedgers(ctx, c); err != nil {
		return nil, err
	}
	return indexHoldings(ctx, c)
}

// holdings finds the cached claims that carry a prefix. It is an index of
// the claims' informer by the block of each holding (ipam.Holdings,
// holdingBlock), kept once: a field index registered through
// controller-runtime is kept twice (for its namespace and for all). An
// index keeps a set per value, about 300 bytes even for one claim: indexed
// by the holding itself, that is a set per live claim; by its block, a set
// per up to 256 claims (docs/design.md, "Memory per claim"). Like any
// index it is updated with the cache, under the same lock.
type holdings struct{ indexer toolscache.Indexer }

// blockBits is how much shorter than a holding its block is: a block holds
// up to 2^blockBits claims' prefixes of one length, which a look-up reads
// through to find the one it asks for.
const blockBits = 8

// holdingBlock is the index value of a claim's holding cidr from pool:
// the pool, the block of the cidr's length that contains it and that
// length ("tenant-a/10.1.2.0/24/32"). A cidr that does not parse is its own
// block.
func holdingBlock(pool, cidr string) string {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return pool + "/" + cidr
	}
	block := netip.PrefixFrom(p.Addr(), max(p.Bits()-blockBits, 0)).Masked()
	return pool + "/" + block.String() + "/" + strconv.Itoa(p.Bits())
}

// holdingBlocks is the holdings index's function: the block of each of a
// claim's holdings.
func holdingBlocks(o any) ([]string, error) {
	var keys []string
	for _, h := range recordedHoldings(o) {
		keys = append(keys, holdingBlock(h.Pool, h.CIDR))
	}
	return keys, nil
}

// holdsIt is ipam.HoldingOf of the claim an object of the claims'
// informer records (cachedClaim), read from its record.
func holdsIt(o any, pool, cidr string) bool {
	switch c := unseen(o).(type) {
	case *ipam.ClaimRecord:
		_, ok := c.HoldingOf(pool, cidr)
		return ok
	case *ipamv1alpha1.IPClaim:
		_, ok := ipam.HoldingOf(c, pool, cidr)
		return ok
	}
	return false
}

// recordedHoldings is ipam.Holdings of the claim an object of the claims'
// informer records (cachedClaim), read from its record without rebuilding
// the claim; none for nil.
func recordedHoldings(o any) []ipam.Holding {
	switch c := unseen(o).(type) {
	case *ipam.ClaimRecord:
		return c.Holdings()
	case *ipamv1alpha1.IPClaim:
		return ipam.Holdings(c)
	}
	return nil
}

// indexHoldings adds the holdings index to c's informer of IPClaims.
func indexHoldings(ctx context.Context, c cache.Informers) (*holdings, error) {
	inf, err := c.GetInformer(ctx, &ipamv1alpha1.IPClaim{})
	if err != nil {
		return nil, fmt.Errorf("getting the informer of IPClaims: %w", err)
	}
	if err := inf.AddIndexers(toolscache.Indexers{indexPoolCIDR: holdingBlocks}); err != nil {
		return nil, fmt.Errorf("indexing IPClaims by holding: %w", err)
	}
	si, ok := inf.(interface{ GetIndexer() toolscache.Indexer })
	if !ok {
		return nil, fmt.Errorf("the informer of IPClaims (%T) has no indexer to read", inf)
	}
	return &holdings{indexer: si.GetIndexer()}, nil
}

// claims returns copies of the cached claims that carry cidr from pool, in
// namespace, or in every namespace when namespace is "".
func (h *holdings) claims(pool, cidr, namespace string) ([]ipamv1alpha1.IPClaim, error) {
	objs, err := h.block(pool, cidr)
	if err != nil {
		return nil, err
	}
	return claimsIn(objs, pool, cidr, namespace), nil
}

// block returns the cached objects of the claims whose holdings share
// cidr's block of pool (holdingBlock): those that may carry it.
func (h *holdings) block(pool, cidr string) ([]any, error) {
	return h.indexer.ByIndex(indexPoolCIDR, holdingBlock(pool, cidr))
}

// claimsIn returns copies of the claims among objs, a block's objects
// (holdings.block), that carry cidr from pool, in namespace, or in every
// namespace when namespace is "".
func claimsIn(objs []any, pool, cidr, namespace string) []ipamv1alpha1.IPClaim {
	var out []ipamv1alpha1.IPClaim
	for _, o := range objs {
		c, ok := o.(client.Object)
		if !ok || (namespace != "" && c.GetNamespace() != namespace) {
			continue
		}
		if holdsIt(o, pool, cidr) {
			out = append(out, *cachedClaim(o))
		}
	}
	return out
}

// CachesSynced is a readiness check that passes once every informer of c
// has synced. A replica whose webhook listens but whose caches are still
// listing (seconds at 10,000 claims, about a minute and a half at 100,000
// on a busy API server) would hold every admission sent to it until they
// synced, past the API server's webhook timeout: until then it is not
// ready, so a Service sends it nothing. Once they have synced it stays
// ready: an informer started later (those of the leader's controllers,
// when this replica wins an election: its IPAddresses, for instance) does
// not hold admissions, and would take the new leader's webhook out of its
// Service for as long as it lists.
func CachesSynced(c interface{ WaitForCacheSync(context.Context) bool }) func(*http.Request) error {
	var synced atomic.Bool
	return func(req *http.Request) error {
		if synced.Load() {
			return nil
		}
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return errors.New("kipam's caches have not synced yet")
		}
		synced.Store(true)
		return nil
	}
}
