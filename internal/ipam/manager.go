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

// Package ipam turns the in-memory allocator into durable allocations: it
// keeps one allocator per pool, rebuilt from the pool's IPLedger, and commits
// every change to that ledger with a resourceVersion precondition before it
// reports success. Concurrent requests for one pool are group-committed: the
// first request to arrive writes the ledger for everything queued behind it.
//
// Why this never hands out a prefix twice is argued in docs/design.md; in
// short, the ledger's resourceVersion is a compare-and-swap in etcd, and no
// prefix is reported allocated until a write that contains it succeeded
// against the version the allocator was built from.
package ipam

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/metrics"
)

// ErrBusy is returned when a change could not be committed, because other
// writers kept winning the race for the pool's ledger or the API server
// failed. The error says whether nothing was changed or the outcome is
// unknown (a write timed out and may yet have been stored): a caller treats
// it as unknown either way. It may retry: a release names the entry it
// frees, so a repeated release is a no-op, and a prefix allocated for a
// request that failed is released by the orphan sweep.
var ErrBusy = errors.New("pool busy")

// ErrPoolDeleted is returned for an allocation from a pool that is being
// deleted and whose ledger drain sealed, or that no longer exists as
// given. Nothing was allocated.
var ErrPoolDeleted = errors.New("pool deleted")

// NotEmptyError is Drain's answer for a pool that still records
// allocations.
type NotEmptyError struct {
	// Allocations is how many prefixes the pool's ledgers record: Claims
	// held by claims, Pools by child pools.
	Allocations, Claims, Pools int
}

func (e *NotEmptyError) Error() string {
	return fmt.Sprintf("%d prefixes are still allocated from the pool (%d to claims, %d to child pools)", e.Allocations, e.Claims, e.Pools)
}

// ErrLedgerFull is returned when the ledger a prefix belongs in has no room
// left for its entry: one more would take the object towards etcd's
// request size limit. Nothing was allocated; a release in the same ledger
// makes room.
var ErrLedgerFull = errors.New("ledger full")

// ErrNamespaceLimit is returned when a claim's namespace already holds what
// the pool's spec.namespaceLimit allows. Nothing was allocated; a release
// by that namespace makes room.
var ErrNamespaceLimit = errors.New("namespace limit")

// Full reports whether err says the pool has no room for the request
// though it has free space (its ledger is full, or the namespace holds its
// limit), and the event and metric reason for it. Like exhaustion, such a
// claim is denied or waits for a release.
func Full(err error) (reason string, ok bool) {
	switch {
	case errors.Is(err, ErrLedgerFull):
		return ipamv1alpha1.ReasonLedgerFull, true
	case errors.Is(err, ErrNamespaceLimit):
		return ipamv1alpha1.ReasonNamespaceLimit, true
	}
	return "", false
}

// DefaultMaxLedgerBytes bounds the entries one ledger object records (the
// text of its allocations, holds and shard list). etcd refuses a write
// above 1.5 MiB by default; the rest is room for the object's metadata.
const DefaultMaxLedgerBytes = 1 << 20

// maxAttempts bounds how often one batch is rebuilt and retried after losing
// the ledger race before its requests fail with ErrBusy.
const maxAttempts = 8

// commitTimeout bounds one batch's ledger writes; it is not tied to any one
// request's context, because the batch serves many.
const commitTimeout = 10 * time.Second

// Store reads and writes ledgers. Get, List and Pool must read the API
// server, not a cache. Update must fail with a Conflict when the ledger's
// resourceVersion is no longer current, and Create with AlreadyExists when
// the name is taken: those are the fence.
type Store interface {
	// Pool reads the pool called name.
	Pool(ctx context.Context, name string) (*ipamv1alpha1.IPPool, error)
	// Get reads the ledger called name.
	Get(ctx context.Context, name string) (*ipamv1alpha1.IPLedger, error)
	// List reads every ledger of pool (ListLedgers).
	List(ctx context.Context, pool string) ([]ipamv1alpha1.IPLedger, error)
	// Versions reads the resourceVersion of every ledger of pool, by
	// name, without their contents; or, when names is not nil, of the
	// ledgers called names, whatever pool they are stored for (a name
	// not stored is absent from the answer).
	Versions(ctx context.Context, pool string, names []string) (map[string]string, error)
	Create(ctx context.Context, ledger *ipamv1alpha1.IPLedger) error
	Update(ctx context.Context, ledger *ipamv1alpha1.IPLedger) error
}

// ClientStore is a Store on the API server.
type ClientStore struct {
	// Reader reads live objects (the manager's API reader, not its cache).
	Reader client.Reader
	// Writer creates and updates.
	Writer client.Writer
}

// Get reads a ledger.
func (s ClientStore) Get(ctx context.Context, name string) (*ipamv1alpha1.IPLedger, error) {
	var l ipamv1alpha1.IPLedger
	if err := s.Reader.Get(ctx, client.ObjectKey{Name: name}, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Pool reads a pool.
func (s ClientStore) Pool(ctx context.Context, name string) (*ipamv1alpha1.IPPool, error) {
	var p ipamv1alpha1.IPPool
	if err := s.Reader.Get(ctx, client.ObjectKey{Name: name}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// List reads a pool's ledgers.
func (s ClientStore) List(ctx context.Context, pool string) ([]ipamv1alpha1.IPLedger, error) {
	var l ipamv1alpha1.IPLedgerList
	if err := ListLedgers(ctx, s.Reader, &l, pool); err != nil {
		return nil, err
	}
	return l.Items, nil
}

// Versions reads a pool's ledgers' resourceVersions without their
// entries: all of them by a metadata-only list, or the ledgers called
// names by a metadata-only get each, whichever pool they are stored for
// (the caller asks for ledgers it read, and a name stored for another pool
// since is stored at another version). Both are consistent reads; a get
// is answered by etcd itself, while the API server answers a list from
// its watch cache once that has caught up with etcd, which, when nothing
// else writes the ledgers, can wait up to etcd's next progress
// notification (about 100 ms).
func (s ClientStore) Versions(ctx context.Context, pool string, names []string) (map[string]string, error) {
	if names == nil {
		l := &metav1.PartialObjectMetadataList{}
		l.SetGroupVersionKind(ipamv1alpha1.GroupVersion.WithKind("IPLedgerList"))
		if err := ListLedgers(ctx, s.Reader, l, pool); err != nil {
			return nil, err
		}
		out := make(map[string]string, len(l.Items))
		for i := range l.Items {
			out[l.Items[i].Name] = l.Items[i].ResourceVersion
		}
		return out, nil
	}
	out := make(map[string]string, len(names))
	for _, name := range names {
		o := &metav1.PartialObjectMetadata{}
		o.SetGroupVersionKind(ipamv1alpha1.GroupVersion.WithKind("IPLedger"))
		err := s.Reader.Get(ctx, client.ObjectKey{Name: name}, o)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, err
		default:
			out[name] = o.ResourceVersion
		}
	}
	return out, nil
}

// Create creates a ledger.
func (s ClientStore) Create(ctx context.Context, l *ipamv1alpha1.IPLedger) error {
	return s.Writer.Create(ctx, l)
}

// Update writes a ledger, failing with a Conflict if it changed since read.
func (s ClientStore) Update(ctx context.Context, l *ipamv1alpha1.IPLedger) error {
	return s.Writer.Update(ctx, l)
}

// Request asks for one prefix from a pool.
type Request struct {
	// Pool is the pool to allocate from, as last seen.
	Pool *ipamv1alpha1.IPPool
	// Bits is the prefix length to allocate when CIDR is not set.
	Bits int
	// CIDR, when valid, asks for exactly this prefix.
	CIDR netip.Prefix
	// Holder is recorded in the ledger: ClaimHolder(namespace) for a claim,
	// "IPPool/<name>" for a child pool.
	Holder string
	// ID is recorded with the entry (see Entry.ID): the holder keeps it to
	// name the entry when it releases it. A fresh one when empty.
	ID string
	// Adopt answers with the entry the pool already records for Holder and
	// ID, if any, instead of committing another: for a caller that may have
	// committed before without learning it (a bind whose patch's outcome was
	// unknown), so that retrying never holds two prefixes. It is decided
	// on the stored ledgers, not on memory: another replica may have
	// committed the entry in another shard than the one a new answer
	// writes, or released it.
	Adopt bool
	// AdoptKnown is Adopt decided on memory when memory records no entry
	// of Holder and ID: that miss commits a new entry without reading the
	// stored ledgers first. A hit is decided as Adopt's, on the stored
	// ledgers. For a caller whose holder carries one of its entries as its
	// answer, and releases any other (an IPAddressClaim: its IPAddress
	// names the answer, and an entry it does not name is surplus): a
	// second entry this may make, where another replica committed one that
	// memory has not seen, is released by it. Memory is searched entry by
	// entry, in the pool's commit queue.
	AdoptKnown bool
	// Reclaim answers, for a request of exactly CIDR, with the entry the
	// ledger already records for Holder at CIDR, whatever its ID, and
	// renews its time in the answer's write: for a holder whose name at
	// most one object can ever carry (a cluster-scoped pool), created
	// again after an earlier attempt committed its entry and was not
	// stored. AllocateEntry returns that entry's ID, which the caller
	// carries from then on. The caller decides that the entry may be
	// taken over (docs/design.md, "A create retried after an unstored
	// attempt").
	Reclaim bool
	// DryRun computes the answer from the stored ledgers (never from this
	// replica's memory alone, which a commit would fence but a dry run does
	// not) without committing anything.
	DryRun bool
	// Sticky names the claim identity a prefix retained for it
	// (Release) is given back to, when it asks for one of that length.
	Sticky *Identity
	// Fresh rebuilds the pool's allocator from its stored ledgers before
	// this request, for a caller that knows memory may hold what the
	// ledgers lost.
	Fresh bool
}

// Manager owns the allocators of the pools this process serves.
type Manager struct {
	store Store
	now   func() time.Time
	// maxLedgerBytes: see SetMaxLedgerBytes.
	maxLedgerBytes atomic.Int64

	mu    sync.Mutex
	pools map[string]*poolState

	conflicts atomic.Int64

	// router, when set, sends each pool's changes to its owning replica.
	router atomic.Pointer[Router]
}

// SetRouter makes m send each pool's changes to the replica that owns it,
// serving here the pools this replica owns or cannot reach the owner of;
// nil serves every pool here.
func (m *Manager) SetRouter(r *Router) { m.router.Store(r) }

// SetMaxLedgerBytes bounds the entries one ledger object records (see
// DefaultMaxLedgerBytes): keep it a third below etcd's --max-request-bytes.
func (m *Manager) SetMaxLedgerBytes(n int) { m.maxLedgerBytes.Store(int64(n)) }

// Conflicts is how many ledger writes lost the race to another writer.
func (m *Manager) Conflicts() int64 { return m.conflicts.Load() }

// NewManager returns a Manager on a store. now is the clock (time.Now when nil).
func NewManager(store Store, now func() time.Time) *Manager {
	if now == nil {
		now = time.Now
	}
	m := &Manager{store: store, now: now, pools: map[string]*poolState{}}
	m.maxLedgerBytes.Store(DefaultMaxLedgerBytes)
	return m
}

// op is one queued change.
type op struct {
	alloc   *Request
	release netip.Prefix
	grace   time.Duration
	// expect is the entry a release frees: the same holder and ID, and
	// the same time (to the second) unless it is zero.
	expect Entry
	// retain keeps the released prefix for a claim's identity.
	retain *Retain
	// drain seals the pool's ledgers if they record nothing.
	drain bool

	result netip.Prefix
	// id is the ID of the entry a Reclaim request took over.
	id string
	// at is the time recorded for the entry an allocation committed or
	// renewed (zero for an answer that wrote nothing).
	at   time.Time
	err  error
	done chan struct{}

	// deps are the ledgers whose writes make this op durable, in the
	// attempt under way.
	deps []*doc
}

// poolState is one pool's allocator and ledger. mu guards queue and
// committing; the allocator and ledger are touched only by the goroutine
// that set committing, so commits of one pool never run concurrently.
type poolState struct {
	mu         sync.Mutex
	queue      []*op
	committing bool

	// owned by the committing goroutine
	alloc      *allocator.Allocator
	ledger     *ledgerState
	generation int64
	uid        string
	// placed is the uid of the pool whose prefix restore last found
	// recorded in its parent (stillServed).
	placed types.UID
	// rebuild asks for the allocator to be rebuilt from the ledgers after
	// this batch: it handed out something the ledger records.
	rebuild bool

	// snap is the usage as of the last commit, for any reader.
	snap atomic.Pointer[Snapshot]
}

func (m *Manager) state(pool string) *poolState {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.pools[pool]
	if !ok {
		st = &poolState{}
		m.pools[pool] = st
	}
	return st
}

// Forget drops what this process knows of a pool, so that the next request
// restores it from its ledger.
func (m *Manager) Forget(pool string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pools, pool)
	metrics.LedgerBytes.DeleteLabelValues(pool)
}

// Allocate commits one prefix for req and returns it. A dry run commits
// nothing and returns the prefix a real request would have got, except
// that it takes over no entry (Reclaim: it answers as a request without
// it would). It does adopt (Adopt): asked whether a bind would succeed, it
// answers with the entry the bind would adopt.
func (m *Manager) Allocate(ctx context.Context, req Request) (netip.Prefix, error) {
	p, _, err := m.AllocateEntry(ctx, req)
	return p, err
}

// AllocateEntry is Allocate, and returns the entry that holds the answer:
// its ID is req.ID (minted when empty) or that of the entry a Reclaim
// request took over, and its time the one this commit recorded (zero when
// it recorded nothing), so that its caller can give back exactly what it
// committed (ReleaseAsOf) and not an entry another request renewed since.
func (m *Manager) AllocateEntry(ctx context.Context, req Request) (netip.Prefix, Entry, error) {
	if req.ID == "" {
		req.ID = NewEntryID()
	}
	o := &op{alloc: &req, done: make(chan struct{})}
	if err := m.submit(ctx, req.Pool, o); err != nil {
		return netip.Prefix{}, Entry{}, err
	}
	return o.result, Entry{Holder: req.Holder, At: o.at, ID: cmp.Or(o.id, req.ID)}, o.err
}

// Release returns cidr to its pool if the ledger records it as the entry
// id of holder, holding it out of circulation for grace. Every release in
// kipam goes through here and names the entry it frees: releasing a prefix
// the ledger does not record, or records as another entry (released and
// committed again since, for someone else), changes nothing, so a release
// may be retried whatever became of an earlier try.
// It reports whether it freed the entry.
//
// retain, when not nil, keeps the prefix for a claim's identity instead of
// freeing it (the pool's spec.retainReleased).
func (m *Manager) Release(ctx context.Context, pool *ipamv1alpha1.IPPool, cidr netip.Prefix, holder, id string, grace time.Duration, retain *Retain) (bool, error) {
	return m.release(ctx, pool, cidr, Entry{Holder: holder, ID: id}, grace, retain)
}

// ReleaseAsOf is Release of entry e as the caller read it, time included
// (unless it is zero): an entry renewed since (Request.Reclaim) is another
// create's now, and is left alone. It decides on the stored ledgers, read
// again. For the orphan sweep, which judged e from what it read.
func (m *Manager) ReleaseAsOf(ctx context.Context, pool *ipamv1alpha1.IPPool, cidr netip.Prefix, e Entry, grace time.Duration) (bool, error) {
	return m.release(ctx, pool, cidr, e, grace, nil)
}

func (m *Manager) release(ctx context.Context, pool *ipamv1alpha1.IPPool, cidr netip.Prefix, expect Entry, grace time.Duration, retain *Retain) (bool, error) {
	o := &op{release: cidr, expect: expect, grace: grace, retain: retain, done: make(chan struct{})}
	if err := m.submit(ctx, pool, o); err != nil {
		return false, err
	}
	return o.result.IsValid(), o.err
}

// Drain seals a pool that is being deleted, if its ledgers record no
// allocation; it fails with a *NotEmptyError while they do. After it
// succeeds no replica can commit anything to the pool, so its ledgers may
// go with it.
func (m *Manager) Drain(ctx context.Context, pool *ipamv1alpha1.IPPool) error {
	o := &op{drain: true, done: make(chan struct{})}
	if err := m.submit(ctx, pool, o); err != nil {
		return err
	}
	return o.err
}

// submit has o done by the pool's owner when another replica owns it, else
// here.
func (m *Manager) submit(ctx context.Context, pool *ipamv1alpha1.IPPool, o *op) error {
	if r := m.router.Load(); r != nil && m.remote(ctx, r, pool, o) {
		return nil
	}
	return m.submitLocal(ctx, pool, o)
}

// submitLocal queues o and either commits the queue itself (when no commit
// is running for the pool) or waits for the running committer to take it.
func (m *Manager) submitLocal(ctx context.Context, pool *ipamv1alpha1.IPPool, o *op) error {
	st := m.state(pool.Name)
	st.mu.Lock()
	st.queue = append(st.queue, o)
	if st.committing {
		st.mu.Unlock()
		select {
		case <-o.done:
			return nil
		case <-ctx.Done():
			// The op may still commit; the caller's repair path (orphan
			// release after a grace) covers an allocation nobody took.
			return fmt.Errorf("%w: %w", ErrBusy, ctx.Err())
		}
	}
	st.committing = true
	st.mu.Unlock()
	// Commit the batch that holds o, then hand what queued up meanwhile to
	// a goroutine, so that this caller's latency is one batch, not a storm.
	if m.commitNext(st, pool) {
		go func() {
			for m.commitNext(st, pool) {
			}
		}()
	}
	return nil
}

// commitNext commits everything queued for the pool as one batch. It
// reports whether more was queued meanwhile; if not, it ends the pool's
// committing state.
func (m *Manager) commitNext(st *poolState, pool *ipamv1alpha1.IPPool) bool {
	st.mu.Lock()
	batch := st.queue
	st.queue = nil
	st.mu.Unlock()
	m.commit(st, pool, batch)
	for _, b := range batch {
		close(b.done)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.queue) == 0 {
		st.committing = false
		return false
	}
	return true
}

// ClaimHolderPrefix starts the ledger holder of every claim's prefix.
const ClaimHolderPrefix = "IPClaim/"

// ClaimHolder is the ledger holder of a prefix committed for a claim in
// namespace: the claim's name may not exist yet at admission.
func ClaimHolder(namespace string) string { return ClaimHolderPrefix + namespace }

// EntryAnnotation on an IPClaim is the ID of the ledger entry committed
// for it at admission. kipam's webhook alone sets it, on create, and keeps
// it unchanged on every update.
const EntryAnnotation = "ipam.kipam.dev/entry"

// ClaimEntryID is the ID of the ledger entry that a claim's spec.cidr is
// recorded as: the entry annotation for a prefix committed at admission,
// else the claim's uid (a waiting claim bound later, or a prefix recorded
// by the repair path).
func ClaimEntryID(claim *ipamv1alpha1.IPClaim) string {
	return entryIDOf(claim.Annotations[EntryAnnotation], func() types.UID { return claim.UID })
}

// entryIDOf is ClaimEntryID of a claim with the entry annotation
// annotated and the uid uid returns, asked for only when it is needed (a
// claim's record spells its uid out on each call).
func entryIDOf(annotated string, uid func() types.UID) string {
	if annotated != "" {
		return annotated
	}
	return string(uid())
}

// AllocationName is the name of the IPAllocation that records prefix p of a
// pool: derived from both, so that a second record of the same prefix in the
// same pool cannot be created. IPv6 is spelled out in full so that every
// dot-separated label starts with a digit or letter.
func AllocationName(pool string, p netip.Prefix) string {
	var addr string
	if p.Addr().Is4() {
		addr = strings.ReplaceAll(p.Addr().String(), ".", "-")
	} else {
		addr = strings.ReplaceAll(p.Addr().StringExpanded(), ":", "-")
	}
	// Built by hand, not with fmt: a claim's record works it out again on
	// each read of the claim from the cache (ClaimRecord.Claim).
	bits := strconv.Itoa(p.Bits())
	if len(pool)+1+len(addr)+1+len(bits) > 253 {
		sum := sha256.Sum256([]byte(pool))
		return fmt.Sprintf("%s.%x.%s-%s", pool[:253-len(addr)-80], sum[:16], addr, bits)
	}
	return pool + "." + addr + "-" + bits
}
