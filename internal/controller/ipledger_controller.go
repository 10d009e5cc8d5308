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

package controller

import (
	"context"
	"errors"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/google/uuid"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// IPLedgerReconciler releases prefixes that were committed for a claim the
// API server then never stored (a later webhook or rule rejected it, a
// timeout, AlreadyExists): entries that no claim and no IPAllocation
// carries once OrphanGrace has passed since this replica first saw them.
type IPLedgerReconciler struct {
	client.Client
	// APIReader confirms, against the API server, that no claim holds an
	// entry before it is released.
	APIReader   client.Reader
	Manager     *ipam.Manager
	Recorder    EventRecorder
	OrphanGrace time.Duration
	// Now is this replica's clock. The grace is measured on it alone, from
	// when this replica first saw an entry: never against the time another
	// replica stamped on it.
	Now func() time.Time
	// RetryMaxDelay caps the wait before retrying a failed reconcile
	// (DefaultRetryMaxDelay when 0).
	RetryMaxDelay time.Duration

	// AddressClaims is set when Cluster API's IPAddressClaim is served
	// (and cached): the sweep then reads them from the cache first.
	AddressClaims bool
	// Holdings finds the cached claims that carry a prefix.
	Holdings *holdings

	// Unconfirmed, when set, is told how many claim entries of each ledger
	// no stored claim carries yet (the pool's status.pending).
	Unconfirmed *unconfirmed

	// Sightings is when this replica first saw each entry: recorded by
	// its informer of IPLedgers whether or not it leads (watchSightings),
	// and by the sweep for what it reads before the informer's handler
	// has. The sweep marks there what it learns of an entry
	// (sightings.mark).
	Sightings *sightings

	// locks keeps the leader's sweep and the backup sweep
	// (SetupWithManager) from sweeping one ledger at once on a replica: a
	// fixed set of mutexes a ledger's name hashes to (lockOf), so nothing
	// grows with the ledgers ever swept. Two ledgers that share one are
	// swept in turn; a sweep holds one at a time.
	locks [64]sync.Mutex
}

// lockOf is the mutex of ledger's sweeps.
func (r *IPLedgerReconciler) lockOf(ledger string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(ledger)) // never fails
	return &r.locks[h.Sum32()%uint32(len(r.locks))]
}

// Ledgers: read to restore and sweep; created and updated (with a
// resourceVersion precondition: the fence) by every commit; patched for
// their finalizer; deleted when their pool is gone.
// +kubebuilder:rbac:groups=ipam.kipam.dev,resources=ipledgers,verbs=get;list;watch;create;update;patch;delete

// Reconcile sweeps one ledger.
func (r *IPLedgerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return r.sweep(ctx, req, r.Unconfirmed)
}

// backup sweeps one ledger for the backup sweep (SetupWithManager): what
// it finds unconfirmed is not the pool's status's to publish (the leader
// publishes), and it schedules no sweep of its own (the ticker gives it a
// ledger that is still overdue, at most once a grace).
func (r *IPLedgerReconciler) backup(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	_, err := r.sweep(ctx, req, nil)
	return ctrl.Result{}, err
}

// sweep sweeps one ledger, telling unconfirmed what it found.
func (r *IPLedgerReconciler) sweep(ctx context.Context, req ctrl.Request, unconfirmed *unconfirmed) (ctrl.Result, error) {
	mu := r.lockOf(req.Name)
	mu.Lock()
	defer mu.Unlock()
	var ledger ipamv1alpha1.IPLedger
	if err := r.Get(ctx, req.NamespacedName, &ledger); err != nil {
		if apierrors.IsNotFound(err) {
			r.Sightings.forget(req.Name) // the informer did too; a sweep may have run since
			unconfirmed.set("", req.Name, 0, nil)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if done, err := r.collect(ctx, &ledger); done || err != nil {
		return ctrl.Result{}, err
	}
	entries, err := ipam.Entries(&ledger)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := r.Now()
	seen := r.Sightings.of(ledger.Spec.Pool, ledger.Name, entries, now)
	var next time.Duration
	pending := 0
	// What no holder carries within the grace, and how long this replica
	// has seen it, for the pool's status: a replica that sweeps next
	// starts from there. Ages are rounded down to publishEvery, so that
	// the status changes once in that time however often the ledger is
	// swept, and an entry on its way to its claim is not published. An
	// address space's ledger has no pool to publish on.
	var within []ipamv1alpha1.UnconfirmedEntry
	republish, space := false, ipam.IsSpace(ledger.Spec.Pool)
	publish := func(p netip.Prefix, e ipam.Entry, s sighting) {
		if space || e.At.Year() < 1970 || e.At.Year() > 9999 {
			return // nothing to publish on, or a time the status cannot hold
		}
		republish = true
		if d := now.Sub(s.first).Truncate(r.publishEvery()); d > 0 {
			within = append(within, ipamv1alpha1.UnconfirmedEntry{Ledger: ledger.Name, CIDR: p.String(), Holder: e.Holder, ID: e.ID,
				CommittedAt: metav1.NewTime(e.At), SeenFor: metav1.Duration{Duration: d}})
		}
	}
	live := newLiveClaims(ledger.Spec.Pool, entries) // per namespace, read once per sweep
	// reads is the cache as this sweep first reads it, for the entries no
	// claim was seen to carry; again is the cache read again, once past
	// the grace, for every entry past it.
	reads, again := cacheReads{}, cacheReads{}
	for p, e := range entries {
		ns, ok := strings.CutPrefix(e.Holder, ipam.ClaimHolderPrefix)
		if !ok {
			sweep := r.sweepPool
			if strings.HasPrefix(e.Holder, ipam.AddressClaimHolderPrefix) {
				sweep = r.sweepAddressClaim
			}
			s := seen[p]
			wait, err := sweep(ctx, &ledger, p, e, &s, now)
			if err != nil {
				return ctrl.Result{}, err
			}
			if wait > 0 && !s.carried && now.Sub(s.first) < r.OrphanGrace {
				publish(p, e, s)
			}
			if wait > 0 && (next == 0 || wait < next) {
				next = wait
			}
			continue
		}
		s := seen[p]
		if !s.carried {
			carried, err := r.carriedInCache(ctx, ledger.Spec.Pool, p, e, reads)
			if err != nil {
				return ctrl.Result{}, err
			}
			if carried {
				s.carried = true
				r.Sightings.mark(ledger.Name, p, e, s)
			}
		}
		if !s.carried {
			pending++
		}
		// The entry was committed before this replica saw it, and a create
		// that carries it ends within the API server's request timeout of
		// its start, which the grace outlasts: after the grace, a claim that
		// carries it is stored, or none ever will be.
		if wait := s.first.Add(r.OrphanGrace).Sub(now); wait > 0 {
			if !s.carried {
				publish(p, e, s)
			}
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		held, err := r.held(ctx, ledger.Spec.Pool, p, e, again, live)
		if err != nil {
			return ctrl.Result{}, err
		}
		if held {
			if uuid.Validate(e.ID) == nil && (next == 0 || r.OrphanGrace < next) {
				// Committed by the claim controller for a claim that may
				// still wait (its bind's patch lost): look again, in case
				// it binds another prefix or goes.
				next = r.OrphanGrace
			}
			continue
		}
		freed, err := releaseOrphaned(ctx, r.Client, r.Manager, ledger.Spec.Pool, p, e)
		if err != nil {
			return ctrl.Result{}, err
		}
		if !freed {
			continue // released or committed again since the cache saw it
		}
		if !s.carried {
			pending--
		}
		logf.FromContext(ctx).Info("released a prefix no claim took", "pool", ledger.Spec.Pool, "cidr", p, "namespace", ns)
		var pool ipamv1alpha1.IPPool
		if err := r.Get(ctx, client.ObjectKey{Name: ledger.Spec.Pool}, &pool); err == nil {
			r.Recorder.Eventf(&pool, nil, corev1.EventTypeWarning, ipamv1alpha1.ReasonHolderMissing, "Release",
				"released %s: allocated for a claim in namespace %s that was never stored", p, ns)
		}
	}
	unconfirmed.set(ledger.Spec.Pool, ledger.Name, pending, within)
	if republish && (next == 0 || next > r.publishEvery()) {
		// Look again, to publish the ages again, well within the grace:
		// a restart loses about this much of it.
		next = r.publishEvery()
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// publishEvery is how often the sweep of a ledger publishes the ages of
// its entries within the orphan grace: a sixteenth of the grace (7.5 s at
// the default), at least a second.
func (r *IPLedgerReconciler) publishEvery() time.Duration {
	return max(r.OrphanGrace/16, time.Second)
}

// sweepPool releases entry e, recording a pool's prefix p, once no pool
// has carried it for the orphan grace since this replica first saw it: a
// pool whose create the API server refused after kipam's webhook carved
// it, or a pool that went without draining (its finalizer removed by
// hand). A pool carries its entry while it exists as the holder the entry
// names with the entry's ID. While claims or child pools of a pool gone
// without draining still hold its addresses, its prefix stays allocated in
// its parent: they would otherwise be handed out again. It returns when to
// look again, 0 for never.
func (r *IPLedgerReconciler) sweepPool(ctx context.Context, ledger *ipamv1alpha1.IPLedger, p netip.Prefix, e ipam.Entry, s *sighting, now time.Time) (time.Duration, error) {
	name, ok := strings.CutPrefix(e.Holder, ipam.PoolHolderPrefix)
	if !ok {
		return 0, nil
	}
	carried := func(reader client.Reader) (bool, error) {
		var pool ipamv1alpha1.IPPool
		err := reader.Get(ctx, client.ObjectKey{Name: name}, &pool)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil && ipam.PoolCarries(&pool, e), err
	}
	if held, err := carried(r.Client); held || err != nil {
		return 0, err // its deletion, or a sweep woken by it, releases it
	}
	if wait := s.first.Add(r.OrphanGrace).Sub(now); wait > 0 {
		return wait, nil
	}
	if held, err := carried(r.APIReader); held || err != nil {
		return 0, err
	}
	claims, pools, err := ipam.Inside(ctx, r.APIReader, ledger.Spec.Pool, p)
	if err != nil {
		return 0, err
	}
	if claims+pools > 0 {
		logf.FromContext(ctx).Info("a pool went without draining: its prefix stays allocated while claims and pools inside it live",
			"parent", ledger.Spec.Pool, "cidr", p, "pool", name, "claims", claims, "pools", pools)
		return r.OrphanGrace, nil
	}
	freed, err := releaseOrphaned(ctx, r.Client, r.Manager, ledger.Spec.Pool, p, e)
	if err != nil || !freed {
		return 0, err
	}
	logf.FromContext(ctx).Info("released a prefix no pool took", "parent", ledger.Spec.Pool, "cidr", p, "pool", name)
	return 0, deleteEntryAllocation(ctx, r.Client, ledger.Spec.Pool, p, e.ID)
}

// sweepAddressClaim releases entry e, recording the address of a Cluster
// API IPAddressClaim, once no IPAddressClaim has carried it for the orphan
// grace since this replica first saw it: a claim deleted without its
// finalizer, or gone while its address was being committed. A claim
// carries its entry while it exists with the entry's ID as its uid (being
// deleted included: its finalizer releases it), unless the entry is
// surplus: its IPAddress names another address the pool records for it.
// Where the IPAddressClaim kind is not served no claim can carry it. It
// returns when to look again, 0 for never.
func (r *IPLedgerReconciler) sweepAddressClaim(ctx context.Context, ledger *ipamv1alpha1.IPLedger, p netip.Prefix, e ipam.Entry, s *sighting, now time.Time) (time.Duration, error) {
	ns := strings.TrimPrefix(e.Holder, ipam.AddressClaimHolderPrefix)
	// carried reports whether a claim carries e, and the claim's answer
	// (surplus); of a claim seen answered with e (answered), e itself,
	// without reading its IPAddress again. The API server's list is read a
	// page at a time (listPages) until a claim carries e.
	carried := func(reader client.Reader, answered bool, opts ...client.ListOption) (held bool, answer netip.Addr, err error) {
		var found *capiv1beta2.IPAddressClaim
		err = listPages(ctx, reader, append(opts, client.InNamespace(ns)), func(claims *capiv1beta2.IPAddressClaimList) bool {
			for i := range claims.Items {
				if ipam.AddressClaimCarries(ledger.Spec.Pool, e, &claims.Items[i]) {
					found = &claims.Items[i]
					return true
				}
			}
			return false
		})
		switch {
		case meta.IsNoMatchError(err) || err == nil && found == nil:
			return false, netip.Addr{}, nil
		case err != nil:
			return false, netip.Addr{}, err
		case answered:
			return true, p.Addr(), nil
		}
		extra, answer, err := surplus(ctx, reader, found, ledger.Spec.Pool, p)
		return !extra, answer, err
	}
	if r.AddressClaims {
		// By the entry's ID, the claim's uid: every entry of a ledger is
		// looked at on each of its changes. An entry its claim was seen
		// answered with (settled) stays its answer for as long as the
		// claim lives, so only whether the claim still does is asked: a
		// claim gone without kipam's finalizer leaves it to this sweep,
		// woken by the deletion.
		// Read only: not copied, as every entry of the shard asks.
		held, answer, err := carried(r.Client, s.settled, client.MatchingFields{indexAddressClaimUID: e.ID}, client.UnsafeDisableDeepCopy)
		if settled := held && answer == p.Addr(); held != s.carried || settled != s.settled {
			s.carried, s.settled = held, settled
			r.Sightings.mark(ledger.Name, p, e, *s)
		}
		switch {
		case err != nil:
			return 0, err
		case held && !s.settled:
			// Its claim's IPAddress is still to come, or names another
			// entry of the claim whose record the cache does not show
			// yet: look again.
			return r.OrphanGrace, nil
		case held:
			return 0, nil
		}
	}
	if wait := s.first.Add(r.OrphanGrace).Sub(now); wait > 0 {
		return wait, nil
	}
	if held, _, err := carried(r.APIReader, false, client.Limit(livePage)); held || err != nil {
		return 0, err
	}
	freed, err := releaseOrphaned(ctx, r.Client, r.Manager, ledger.Spec.Pool, p, e)
	if err != nil || !freed {
		return 0, err
	}
	logf.FromContext(ctx).Info("released an address no IPAddressClaim carries", "pool", ledger.Spec.Pool, "address", p, "namespace", ns)
	return 0, deleteEntryAllocation(ctx, r.Client, ledger.Spec.Pool, p, e.ID)
}

// ledgerOfPool names the ledger of its parent that records a pool's cidr.
func (r *IPLedgerReconciler) ledgerOfPool(ctx context.Context, o client.Object) []reconcile.Request {
	pool, ok := o.(*ipamv1alpha1.IPPool)
	if !ok {
		return nil
	}
	cidr, err := netip.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: ipam.LedgerOf(ctx, r.Client, ipam.ParentOf(pool), cidr)}}}
}

// collect lets a ledger go once nothing can be committed to its pool
// again: its pool finished draining (which sealed every ledger it lists),
// or is gone (or was created again under its name). A sealed ledger alone
// may not go while its pool is served: a writer that saw a shard listed
// and never created would create it again. Until then the ledger's
// finalizer keeps it, whoever deletes it: the garbage collector deleting a
// pool in the foreground deletes its dependents first, while claims still
// hold their prefixes. A ledger whose pool is gone is deleted here, so that ledgers
// orphaned by a pool deleted with --cascade=orphan do not stay for ever
// (and keep a pool created again under the name from serving). It
// reports whether the ledger is done with.
func (r *IPLedgerReconciler) collect(ctx context.Context, l *ipamv1alpha1.IPLedger) (bool, error) {
	gone, drained, err := r.poolOf(ctx, l)
	if err != nil {
		return false, err
	}
	switch {
	case l.DeletionTimestamp == nil && gone:
		logf.FromContext(ctx).Info("deleting a ledger whose pool is gone", "ledger", l.Name, "pool", l.Spec.Pool)
		return true, client.IgnoreNotFound(r.Delete(ctx, l, client.Preconditions{UID: &l.UID}))
	case l.DeletionTimestamp == nil && !controllerutil.ContainsFinalizer(l, ipamv1alpha1.LedgerFinalizer):
		// Written before ledgers had the finalizer.
		before := l.DeepCopy()
		controllerutil.AddFinalizer(l, ipamv1alpha1.LedgerFinalizer)
		return false, client.IgnoreNotFound(r.Patch(ctx, l, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})))
	case l.DeletionTimestamp != nil && (gone || drained):
		if !controllerutil.ContainsFinalizer(l, ipamv1alpha1.LedgerFinalizer) {
			return true, nil
		}
		before := l.DeepCopy()
		controllerutil.RemoveFinalizer(l, ipamv1alpha1.LedgerFinalizer)
		return true, client.IgnoreNotFound(r.Patch(ctx, l, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})))
	}
	return false, nil
}

// poolOf reports whether a ledger's pool is gone (or is another pool of
// the same name), or finished draining (deleted, and its drain finalizer
// gone, which drain removes only after it sealed the pool's root). The
// cache answers when it shows the pool live; anything else is confirmed
// against the API server.
func (r *IPLedgerReconciler) poolOf(ctx context.Context, l *ipamv1alpha1.IPLedger) (gone, drained bool, err error) {
	if ipam.IsSpace(l.Spec.Pool) {
		return false, false, nil // the address spaces are never deleted
	}
	uid := ipam.PoolUID(l)
	var pool ipamv1alpha1.IPPool
	key := client.ObjectKey{Name: l.Spec.Pool}
	if err := r.Get(ctx, key, &pool); err == nil && (uid == "" || pool.UID == uid) && pool.DeletionTimestamp == nil {
		return false, false, nil
	}
	switch err := r.APIReader.Get(ctx, key, &pool); {
	case apierrors.IsNotFound(err):
		return true, false, nil
	case err != nil:
		return false, false, err
	}
	if uid != "" && pool.UID != uid {
		return true, false, nil
	}
	return false, pool.DeletionTimestamp != nil && !controllerutil.ContainsFinalizer(&pool, ipamv1alpha1.PoolFinalizer), nil
}

// held reports whether a claim carries the entry (ipam.Carries), or an
// IPAllocation records it. again is what this sweep has read of the cache
// since its first pass, each block once: every entry past the grace is
// looked up, and a shard's entries share a block of 256 claims, which a
// read per entry listed again (at 100,000 claims in one pool, 40 % of the
// manager's CPU while claims were created: docs/benchmarks.md). live
// holds the namespaces' claims as read from the API server in this sweep:
// an entry it finds no claim for was committed before the read, and
// Release frees only that entry.
func (r *IPLedgerReconciler) held(ctx context.Context, pool string, p netip.Prefix, e ipam.Entry, again cacheReads,
	live *liveClaims) (bool, error) {
	ns := strings.TrimPrefix(e.Holder, ipam.ClaimHolderPrefix)
	// The cache as read again past the first pass, not as the first pass
	// read it: a claim stored since spares the reads below.
	if carried, err := r.carriedInCache(ctx, pool, p, e, again); carried || err != nil {
		return carried, err
	}
	var a ipamv1alpha1.IPAllocation
	err := r.APIReader.Get(ctx, client.ObjectKey{Name: ipam.AllocationName(pool, p)}, &a)
	switch {
	case err == nil && a.Spec.ClaimRef.Namespace == ns && a.Spec.Entry == e.ID:
		return true, nil // its own reconciler watches over it
	case err != nil && !apierrors.IsNotFound(err):
		return false, err
	}
	// The cache may lag: confirm against the API server before releasing.
	inNamespace, err := live.in(ctx, r.APIReader, ns)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(inNamespace, func(c ipamv1alpha1.IPClaim) bool { return ipam.Carries(pool, p, e, &c) }), nil
}

// livePage is how many claims a sweep reads from the API server at a time.
const livePage = 500

// liveClaims is what one sweep of a ledger read of its namespaces' claims
// from the API server, each namespace once. It reads a namespace in pages
// of livePage, which the API server serves from one snapshot (the first
// page's resourceVersion), so the pages are one consistent read, and keeps
// only the claims that may carry one of the ledger's entries: a claim that
// waits (it carries the entry whose ID is its uid), or one holding one of
// the ledger's prefixes in its pool (ipam.Carries asks no less). Every
// claim that carries an entry is kept, and ipam.Carries decides, as
// before. It used to keep every claim of the namespace, decoded whole: a
// sweep that confirmed one orphan among 100,000 claims in one namespace
// took the manager from 300 MB to 1 GB of RSS (docs/benchmarks.md).
type liveClaims struct {
	pool     string
	prefixes map[string]bool // the ledger's prefixes, as claims write them
	read     map[string][]ipamv1alpha1.IPClaim
}

// newLiveClaims returns the reads of a sweep of a ledger of pool listing
// entries.
func newLiveClaims(pool string, entries map[netip.Prefix]ipam.Entry) *liveClaims {
	prefixes := make(map[string]bool, len(entries))
	for p := range entries {
		prefixes[p.String()] = true
	}
	return &liveClaims{pool: pool, prefixes: prefixes, read: map[string][]ipamv1alpha1.IPClaim{}}
}

// in returns the claims of namespace ns that may carry one of the ledger's
// entries, as r lists them, reading them on the first call for ns.
func (l *liveClaims) in(ctx context.Context, r client.Reader, ns string) ([]ipamv1alpha1.IPClaim, error) {
	if kept, ok := l.read[ns]; ok {
		return kept, nil
	}
	kept := []ipamv1alpha1.IPClaim{}
	mayCarry := func(h ipam.Holding) bool { return h.Pool == l.pool && l.prefixes[h.CIDR] }
	err := listPages(ctx, r, []client.ListOption{client.InNamespace(ns), client.Limit(livePage)}, func(page *ipamv1alpha1.IPClaimList) bool {
		for i := range page.Items {
			if c := &page.Items[i]; c.Spec.CIDR == "" || slices.ContainsFunc(ipam.Holdings(c), mayCarry) {
				c.ManagedFields = nil
				kept = append(kept, *c)
			}
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	l.read[ns] = kept
	return kept, nil
}

// listPages lists with opts into a new list for each page, and gives each
// page to each until it reports done. With a limit among opts (a read of
// the API server) it reads on while the API server names a next page, the
// pages one snapshot (the first page's resourceVersion); without one (a
// cache, which names a continue it does not take) the one list is all.
func listPages[L any, PL interface {
	*L
	client.ObjectList
}](ctx context.Context, r client.Reader, opts []client.ListOption, each func(PL) bool) error {
	paged := (&client.ListOptions{}).ApplyOptions(opts).Limit > 0
	for {
		page := PL(new(L))
		if err := r.List(ctx, page, opts...); err != nil {
			return err
		}
		if each(page) || !paged || page.GetContinue() == "" {
			return nil
		}
		opts = append(slices.Clip(opts), client.Continue(page.GetContinue()))
	}
}

// cacheReads is what one sweep of a ledger has read of the cache, each
// once: for each block of the holdings index and namespace, the
// namespace's waiting claims and the claims' objects of the block. A
// sweep looks up every entry no claim was seen to carry, mostly in one or
// two blocks; reading a block lists up to 256 claims.
type cacheReads map[blockOf]claimsRead

// blockOf names a block of the holdings index (holdingBlock) and a
// namespace.
type blockOf struct{ block, namespace string }

// claimsRead is what was read for a blockOf: the namespace's waiting
// claims, read first, then the block's objects. A claim that binds in
// between is in the first, as waiting, or in the second, as bound: read
// the other way round, it could be in neither.
type claimsRead struct {
	waiting []ipamv1alpha1.IPClaim
	block   []any
}

// carriedInCache reports whether a claim in the cache carries entry e of
// pool (see carries), as this sweep reads the cache (reads), or as it is
// now when reads is nil.
func (r *IPLedgerReconciler) carriedInCache(ctx context.Context, pool string, p netip.Prefix, e ipam.Entry, reads cacheReads) (bool, error) {
	ns, cidr := strings.TrimPrefix(e.Holder, ipam.ClaimHolderPrefix), p.String()
	k := blockOf{holdingBlock(pool, cidr), ns}
	read, ok := reads[k]
	if !ok {
		var waiting ipamv1alpha1.IPClaimList
		if err := r.List(ctx, &waiting, client.InNamespace(ns), client.MatchingFields{indexWaiting: "true"}); err != nil {
			return false, err
		}
		block, err := r.Holdings.block(pool, cidr)
		if err != nil {
			return false, err
		}
		read = claimsRead{waiting.Items, block}
		if reads != nil {
			reads[k] = read
		}
	}
	carries := func(c ipamv1alpha1.IPClaim) bool { return ipam.Carries(pool, p, e, &c) }
	return slices.ContainsFunc(claimsIn(read.block, pool, cidr, ns), carries) || slices.ContainsFunc(read.waiting, carries), nil
}

// ledgerOfClaim names the ledger that records a claim's cidr; for a
// waiting claim gone, which a bind in flight may have left an entry for,
// the ledgers of the pools it draws on (poolsOfWaiting) that record an
// entry with its ID.
func (r *IPLedgerReconciler) ledgerOfClaim(ctx context.Context, o client.Object, gone bool) []reconcile.Request {
	claim := cachedClaim(o)
	if claim == nil {
		return nil
	}
	if _, err := netip.ParsePrefix(claim.Spec.CIDR); err != nil {
		if !gone {
			return nil
		}
		// A waiting claim gone: a bind may have committed its entry.
		var out []reconcile.Request
		for _, pool := range r.poolsOfWaiting(ctx, claim) {
			out = append(out, r.ledgersRecording(ctx, pool, ipam.ClaimHolder(claim.Namespace), ipam.ClaimEntryID(claim))...)
		}
		return out
	}
	var out []reconcile.Request
	for _, h := range ipam.Holdings(claim) {
		if cidr, err := netip.ParsePrefix(h.CIDR); err == nil {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: ipam.LedgerOf(ctx, r.Client, h.Pool, cidr)}})
		}
	}
	return out
}

// poolsOfWaiting names the pools a waiting claim's bind draws on, as the
// cache holds them: spec.pool, each of spec.pools (a dual-stack claim's
// second family is bound from the second), or those spec.poolSelector
// selects. A pool relabelled since the bind is missed; the sweep still
// looks at the entry again within an orphan grace (it does so for every
// entry whose ID is a claim's uid).
func (r *IPLedgerReconciler) poolsOfWaiting(ctx context.Context, claim *ipamv1alpha1.IPClaim) []string {
	switch {
	case claim.Spec.Pool != "":
		return []string{claim.Spec.Pool}
	case len(claim.Spec.Pools) > 0:
		return claim.Spec.Pools
	case claim.Spec.PoolSelector == nil:
		return nil
	}
	selector, err := metav1.LabelSelectorAsSelector(claim.Spec.PoolSelector)
	if err != nil {
		return nil
	}
	var pools ipamv1alpha1.IPPoolList
	if err := r.List(ctx, &pools, client.MatchingLabelsSelector{Selector: selector}); err != nil {
		logf.FromContext(ctx).Error(err, "listing the pools a waiting claim draws on", "claim", client.ObjectKeyFromObject(claim))
		return nil
	}
	out := make([]string, 0, len(pools.Items))
	for i := range pools.Items {
		out = append(out, pools.Items[i].Name)
	}
	return out
}

// ledgersOfAddressClaim names the ledgers of an IPAddressClaim's pool
// that, as the cache holds them, record an entry of the claim (holder
// IPAddressClaim/<namespace>, ID its uid): those its deletion wakes. That
// is every ledger whose sweep could release its entry: the sweep reads its
// ledger from this cache, and the claim's delete event comes once the
// cache no longer holds the claim, so a version of a ledger the cache
// shows later, recording the entry, is swept on its own event and finds
// no claim carrying it. A claim whose finalizer released its entries,
// once the cache shows the release, wakes none. (It woke every ledger of
// its pool: 80 sweeps per claim deleted at 5,000 live addresses, which
// kept the sweep's workers busy while a MachineSet was scaled down.)
func (r *IPLedgerReconciler) ledgersOfAddressClaim(ctx context.Context, o client.Object) []reconcile.Request {
	c, ok := o.(*capiv1beta2.IPAddressClaim)
	if !ok || !ipam.ServesPoolRef(c.Spec.PoolRef) || c.UID == "" {
		return nil
	}
	return r.ledgersRecording(ctx, c.Spec.PoolRef.Name, ipam.AddressClaimHolder(c.Namespace), string(c.UID))
}

// ledgersRecording names the ledgers of pool that, as the cache holds
// them, record an entry of holder with ID id (ledgersOfAddressClaim says
// why those are the ones a gone claim's deletion wakes).
func (r *IPLedgerReconciler) ledgersRecording(ctx context.Context, pool, holder, id string) []reconcile.Request {
	if id == "" {
		return nil
	}
	var ledgers ipamv1alpha1.IPLedgerList
	// Read only, and most of them not past the search for the ID: not
	// copied.
	if err := ipam.ListLedgers(ctx, r, &ledgers, pool, client.UnsafeDisableDeepCopy); err != nil {
		logf.FromContext(ctx).Error(err, "listing a pool's ledgers", "pool", pool)
		return nil
	}
	var out []reconcile.Request
	for i := range ledgers.Items {
		l := &ledgers.Items[i]
		if !strings.Contains(l.Spec.Allocations, id) {
			continue
		}
		// One that cannot be read is swept all the same: its sweep reports it.
		if entries, err := ipam.Entries(l); err == nil && !recordsEntry(entries, holder, id) {
			continue
		}
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(l)})
	}
	return out
}

// recordsEntry reports whether entries hold one of holder with ID id.
func recordsEntry(entries map[netip.Prefix]ipam.Entry, holder, id string) bool {
	for _, e := range entries {
		if e.Is(holder, id) {
			return true
		}
	}
	return false
}

// ledgersOf lists a pool's ledgers, as the cache knows them.
func (r *IPLedgerReconciler) ledgersOf(ctx context.Context, pool client.Object) []reconcile.Request {
	var ledgers ipamv1alpha1.IPLedgerList
	if err := ipam.ListLedgers(ctx, r, &ledgers, pool.GetName()); err != nil {
		logf.FromContext(ctx).Error(err, "listing a pool's ledgers", "pool", pool.GetName())
		return nil
	}
	out := make([]reconcile.Request, 0, len(ledgers.Items))
	for i := range ledgers.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ledgers.Items[i])})
	}
	return out
}

// SetupWithManager registers the reconciler.
func (r *IPLedgerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Sightings == nil {
		return errors.New("the ledger sweep needs Sightings, fed on every replica by watchSightings")
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&ipamv1alpha1.IPLedger{}).
		// A claim stored carries its entry (no longer pending); a claim
		// gone, whatever its finalizer did, may leave an entry no claim
		// carries: the sweep of its ledger looks.
		Watches(&ipamv1alpha1.IPClaim{}, handler.Funcs{
			CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				for _, req := range r.ledgerOfClaim(ctx, e.Object, false) {
					q.Add(req)
				}
			},
			DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				for _, req := range r.ledgerOfClaim(ctx, e.Object, true) {
					q.Add(req)
				}
			},
		}).
		// A pool gone, drained or not, may leave its entry in its
		// parent's ledger: the sweep there looks.
		Watches(&ipamv1alpha1.IPPool{}, handler.Funcs{
			DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				for _, req := range r.ledgerOfPool(ctx, e.Object) {
					q.Add(req)
				}
			},
		}).
		// A pool that finished draining, or is gone, lets its ledgers go.
		Watches(&ipamv1alpha1.IPPool{}, handler.EnqueueRequestsFromMapFunc(r.ledgersOf), builder.WithPredicates(predicate.Funcs{
			CreateFunc:  func(event.CreateEvent) bool { return false },
			GenericFunc: func(event.GenericEvent) bool { return false },
			UpdateFunc: func(e event.UpdateEvent) bool {
				return e.ObjectNew.GetDeletionTimestamp() != nil && !controllerutil.ContainsFinalizer(e.ObjectNew, ipamv1alpha1.PoolFinalizer)
			},
		})).
		Named("ipledger")
	if r.AddressClaims {
		// An IPAddressClaim gone, whatever its finalizer did, may leave
		// its entry: the sweep of the ledger recording it looks.
		b = b.Watches(&capiv1beta2.IPAddressClaim{}, handler.Funcs{
			DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				for _, req := range r.ledgersOfAddressClaim(ctx, e.Object) {
					q.Add(req)
				}
			},
		})
	}
	if err := b.
		// Shards sweep independently: one pool's backlog must not delay another's.
		WithOptions(controller.Options{MaxConcurrentReconciles: 4, RateLimiter: retryLimiter(r.RetryMaxDelay)}).
		Complete(r); err != nil {
		return err
	}
	// The backup sweep: on every replica, leader or not, the same sweep
	// of a ledger whose pool's status still lists an entry publishEvery
	// past the orphan grace, by this replica's sight of it. The leader
	// would have released it by then; if the leader was killed or frozen
	// as the grace ended, this does, without waiting for an election. Two
	// replicas sweeping one ledger is as safe as one sweeping it twice:
	// each counts the grace on its own clock from its own sight or an age
	// published, confirms against the API server that no holder carries
	// the entry, and releases through the fenced path, which names the
	// entry and does nothing if it is gone. An entry is given again only a
	// grace after the last time (sightings.overdue).
	overdue := make(chan event.GenericEvent, 64)
	if err := mgr.Add(&backupTicker{every: r.publishEvery(), tick: func() {
		for _, l := range r.Sightings.overdue(r.Now(), r.OrphanGrace+r.publishEvery(), r.OrphanGrace) {
			select {
			case overdue <- event.GenericEvent{Object: &ipamv1alpha1.IPLedger{ObjectMeta: metav1.ObjectMeta{Name: l}}}:
			default: // still busy with the last tick's; the next one sends it again
			}
		}
	}}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("ipledger-backup").
		WatchesRawSource(source.Channel(overdue, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{NeedLeaderElection: ptr.To(false), RateLimiter: retryLimiter(r.RetryMaxDelay)}).
		Complete(reconcile.Func(r.backup))
}

// backupTicker calls tick every so often on every replica, leader or not.
type backupTicker struct {
	every time.Duration
	tick  func()
}

// NeedLeaderElection says it runs on every replica.
func (*backupTicker) NeedLeaderElection() bool { return false }

// Start ticks until ctx ends.
func (t *backupTicker) Start(ctx context.Context) error {
	ticker := time.NewTicker(t.every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			t.tick()
		}
	}
}
