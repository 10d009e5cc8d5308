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

package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
)

// The tests in this file each replay a way the issue tracker found to hand
// one prefix to two live holders, and check that the fence now stops it.

// pauseCreate stops the first create of the ledger called name until
// resume is closed; stopped is closed when it has stopped.
func pauseCreate(s *memStore, name string) (stopped, resume chan struct{}) {
	stopped, resume = make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	s.beforeCreate = func(n string) {
		if n == name && first.CompareAndSwap(false, true) {
			close(stopped)
			<-resume
		}
	}
	return stopped, resume
}

// recorded returns the entry the stored ledger records for p.
func recorded(t *testing.T, m *Manager, pool *ipamv1alpha1.IPPool, p netip.Prefix) (Entry, bool) {
	t.Helper()
	e, ok, err := lookup(context.Background(), m.store.Get, pool.Name, p)
	if err != nil {
		t.Fatal(err)
	}
	return e, ok
}

// TestReleaseFreesOnlyTheEntryItNames: a release retried after its prefix
// went to another claim (the finalizer's IPAllocation delete failed, a
// forwarded release timed out and was redone, an orphan sweep ran twice)
// leaves the new holder's entry alone, whichever namespace it is in.
func TestReleaseFreesOnlyTheEntryItNames(t *testing.T) {
	s := newMemStore()
	m := NewManager(s, nil)
	pool := testPool("10.0.0.0/30")
	ctx := context.Background()
	x, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a"), ID: "claim-a"})
	if err != nil {
		t.Fatal(err)
	}
	if freed, err := m.Release(ctx, pool, x, ClaimHolder("a"), "claim-a", 0, nil); err != nil || !freed {
		t.Fatalf("releasing the entry: freed %v, %v", freed, err)
	}
	for _, ns := range []string{"a", "b"} {
		y, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder(ns), ID: "claim-b"})
		if err != nil {
			t.Fatal(err)
		}
		if y != x {
			t.Fatalf("first fit gave %s, want the released %s", y, x)
		}
		// The first release, retried; then releases naming the holder
		// without the ID and the ID under another holder.
		for _, stale := range []Entry{{Holder: ClaimHolder("a"), ID: "claim-a"}, {Holder: ClaimHolder(ns)}, {Holder: ClaimHolder("c"), ID: "claim-b"}} {
			if freed, err := m.Release(ctx, pool, x, stale.Holder, stale.ID, 0, nil); err != nil || freed {
				t.Fatalf("a release naming %+v: freed %v, %v", stale, freed, err)
			}
			if e, ok := recorded(t, m, pool, x); !ok || !e.Is(ClaimHolder(ns), "claim-b") {
				t.Fatalf("after a release naming %+v, the ledger records %s as %+v (recorded %v); want it kept for %s",
					stale, x, e, ok, ClaimHolder(ns))
			}
		}
		// A new owner, restored from the ledger, agrees.
		if _, ok := recorded(t, NewManager(s, nil), pool, x); !ok {
			t.Fatal("the entry is gone from the stored ledger")
		}
		if freed, err := m.Release(ctx, pool, x, ClaimHolder(ns), "claim-b", 0, nil); err != nil || !freed {
			t.Fatalf("releasing the entry: freed %v, %v", freed, err)
		}
		if _, ok := recorded(t, m, pool, x); ok {
			t.Fatal("the release naming the entry did not free it")
		}
	}
}

// TestRecreatedPoolNeverAdoptsTheOldLedger: a pool deleted and created
// again under its name finds the old pool's root still there (the garbage
// collector has not deleted it yet). It neither reads that root as live
// nor writes it, and serves claims once the root is gone, from an empty
// ledger of its own; a writer still holding the old pool cannot create a
// root for it.
func TestRecreatedPoolNeverAdoptsTheOldLedger(t *testing.T) {
	s := newMemStore()
	old := testPool("10.0.0.0/30")
	ctx := context.Background()
	x, err := NewManager(s, nil).Allocate(ctx, Request{Pool: old, Bits: 32, Holder: ClaimHolder("a")})
	if err != nil {
		t.Fatal(err)
	}
	oldRoot, _ := s.Get(ctx, "p")

	again := testPool("10.0.0.0/30")
	again.UID = "uid-p-2"
	again.Finalizers = []string{ipamv1alpha1.PoolFinalizer}
	s.place(t, again)
	m := NewManager(s, nil)
	_, err = m.Allocate(ctx, Request{Pool: again, Bits: 32, Holder: ClaimHolder("b")})
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("allocating from the new pool over the old pool's root: %v, want ErrBusy", err)
	}
	if root, _ := s.Get(ctx, "p"); root.ResourceVersion != oldRoot.ResourceVersion {
		t.Fatal("the new pool wrote the old pool's root")
	}

	// The garbage collector deletes the old ledger.
	delete(s.ledgers, "p")
	// A writer that still holds the old pool (a stale cache) may create a
	// root, but sees the pool is not the one it holds and commits nothing.
	if _, err := NewManager(s, nil).Allocate(ctx, Request{Pool: old, Bits: 32, Holder: ClaimHolder("a")}); !errors.Is(err, ErrBusy) {
		t.Fatalf("allocating from a stale copy of the deleted pool: %v, want ErrBusy", err)
	}
	if root, _ := s.Get(ctx, "p"); root != nil && (PoolUID(root) != old.UID || root.Spec.Allocations != "") {
		t.Fatalf("the stale writer's root: owner %s, allocations %q", PoolUID(root), root.Spec.Allocations)
	}
	delete(s.ledgers, "p") // the garbage collector again
	y, err := m.Allocate(ctx, Request{Pool: again, Bits: 32, Holder: ClaimHolder("b")})
	if err != nil {
		t.Fatal(err)
	}
	if y != x {
		t.Errorf("the new pool's first host = %s, want %s from its own empty ledger", y, x)
	}
	if root, _ := s.Get(ctx, "p"); PoolUID(root) != again.UID {
		t.Errorf("the new root belongs to %s, want %s", PoolUID(root), again.UID)
	}

	// Deleted for good: nothing is committed for it, and the error says so.
	delete(s.ledgers, "p")
	s.gone = map[string]bool{"p": true}
	if _, err := NewManager(s, nil).Allocate(ctx, Request{Pool: again, Bits: 32, Holder: ClaimHolder("b")}); !errors.Is(err, ErrPoolDeleted) {
		t.Fatalf("allocating from a deleted pool: %v, want ErrPoolDeleted", err)
	}
}

// TestDrainFencesCommitsInFlight: once a drain has sealed a pool, no
// writer, however stale its view, commits to it: not one that restored the
// pool before the drain (its shard was sealed under it), not one that
// listed a shard it never created, not a new one.
func TestDrainFencesCommitsInFlight(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.0.0.0/24") // /26 shards
	pool.DeletionTimestamp = &metav1.Time{}
	ctx := context.Background()
	owner, stale := NewManager(s, nil), NewManager(s, nil)

	x, err := stale.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a")})
	if err != nil {
		t.Fatal(err)
	}
	var ne *NotEmptyError
	if err := owner.Drain(ctx, pool); !errors.As(err, &ne) || ne.Allocations != 1 {
		t.Fatalf("draining a pool with one allocation: %v, want NotEmptyError{1}", err)
	}
	// The stale writer releases it, so its view of shard 0 is current
	// when the drain seals it.
	if err := releaseRecorded(ctx, stale, pool, x, 0); err != nil {
		t.Fatal(err)
	}
	// A writer lists a new shard in the root, then stops before it creates
	// the shard, until the drain is done.
	stopped, resume := pauseCreate(s, ShardName("p", 1))
	lateErr := make(chan error, 1)
	go func() {
		p, err := NewManager(s, nil).Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.64/32"), Holder: ClaimHolder("a")})
		if err == nil {
			err = fmt.Errorf("reported %s", p)
		}
		lateErr <- err
	}()
	<-stopped
	root, _ := s.Get(ctx, "p")
	if listed, _ := parseShards(root); len(listed) != 2 {
		t.Fatalf("root lists %v, want two shards, one not created yet", listed)
	}

	if err := owner.Drain(ctx, pool); err != nil {
		t.Fatalf("draining an empty pool: %v", err)
	}
	for _, l := range mustList(t, s) {
		if !l.Spec.Sealed {
			t.Errorf("ledger %s is not sealed after the drain", l.Name)
		}
	}
	// The stale writer restored shard 0 before the drain; a new writer
	// restores after it. Neither commits, in a created shard or the other.
	for _, p := range []string{"10.0.0.1/32", "10.0.0.65/32", "10.0.0.128/25"} {
		for name, m := range map[string]*Manager{"stale": stale, "new": NewManager(s, nil)} {
			got, err := m.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix(p), Holder: ClaimHolder("a")})
			if !errors.Is(err, ErrPoolDeleted) {
				t.Errorf("%s writer, %s after the drain: got %s, %v; want ErrPoolDeleted", name, p, got, err)
			}
		}
	}
	close(resume)
	if err := <-lateErr; !errors.Is(err, ErrPoolDeleted) {
		t.Errorf("the writer that listed a shard before the drain and created it after: %v, want ErrPoolDeleted", err)
	}
	if l := s.ledger(t); len(l.Allocations) != 0 {
		t.Errorf("the drained pool records %v", l.Allocations)
	}
	if err := owner.Drain(ctx, pool); err != nil {
		t.Errorf("draining again: %v", err)
	}
}

// TestAmbiguousWriteSaysTheOutcomeIsUnknown: a ledger write whose answer
// is lost (a timeout after etcd applied it) fails the batch with ErrBusy
// saying the outcome is unknown, never "nothing was changed"; the release
// retried after it is a no-op, and the allocation that did land is in the
// ledger for the orphan sweep, never handed out again meanwhile.
func TestAmbiguousWriteSaysTheOutcomeIsUnknown(t *testing.T) {
	s := newMemStore()
	m := NewManager(s, nil)
	pool := testPool("10.0.0.0/30")
	ctx := context.Background()
	x, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a"), ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	lost := errors.New("the write's answer was lost")
	s.afterUpdate = func(string) error { return lost }
	_, err = m.Release(ctx, pool, x, ClaimHolder("a"), "a", 0, nil)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "the outcome is unknown") {
		t.Fatalf("a release whose write's answer was lost: %v, want ErrBusy saying the outcome is unknown", err)
	}
	y, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("b"), ID: "b"})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "the outcome is unknown") {
		t.Fatalf("an allocation whose write's answer was lost: %s, %v; want ErrBusy saying the outcome is unknown", y, err)
	}
	s.afterUpdate = nil
	if freed, err := m.Release(ctx, pool, x, ClaimHolder("a"), "a", 0, nil); err != nil || freed {
		t.Fatalf("the release retried: freed %v, %v; want a no-op (the first one landed)", freed, err)
	}
	landed := s.ledger(t).Allocations
	z, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("c"), ID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := landed[z]; ok {
		t.Fatalf("handed out %s, which the ledger records: %v", z, landed)
	}
	if _, ok := recorded(t, m, pool, z); !ok {
		t.Fatalf("%s is not recorded", z)
	}
}

// TestDrainFailsWhatFollowsItInABatch: allocations queued behind a drain
// in one batch are refused, never recorded in ledgers the drain seals; an
// allocation queued before it keeps the pool from draining.
func TestDrainFailsWhatFollowsItInABatch(t *testing.T) {
	s := newMemStore()
	m := NewManager(s, nil)
	pool := testPool("10.0.0.0/24") // /26 shards
	st := m.state(pool.Name)
	ctx := context.Background()
	// Hold the pool's committer, queue a drain and two allocations (one
	// for a shard, one for the root), then let the batch go.
	st.mu.Lock()
	st.committing = true
	st.mu.Unlock()
	type result struct {
		what string
		p    netip.Prefix
		err  error
	}
	results := make(chan result, 3)
	queued := func(n int) {
		for {
			st.mu.Lock()
			l := len(st.queue)
			st.mu.Unlock()
			if l == n {
				return
			}
			runtime.Gosched()
		}
	}
	go func() { results <- result{"drain", netip.Prefix{}, m.Drain(ctx, pool)} }()
	queued(1)
	for i, want := range []string{"10.0.0.0/32", "10.0.0.128/25"} {
		go func() {
			p, err := m.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix(want), Holder: ClaimHolder("a")})
			results <- result{want, p, err}
		}()
		queued(i + 2)
	}
	for m.commitNext(st, pool) {
	}
	for range 3 {
		r := <-results
		switch {
		case r.what == "drain" && r.err != nil:
			t.Errorf("the drain of an empty pool: %v", r.err)
		case r.what != "drain" && !errors.Is(r.err, ErrPoolDeleted):
			t.Errorf("%s queued behind the drain: %s, %v; want ErrPoolDeleted", r.what, r.p, r.err)
		}
	}
	if l := s.ledger(t); len(l.Allocations) != 0 {
		t.Errorf("the drained pool records %v", l.Allocations)
	}
}

// TestNoRootAfterTheDrain: a pool being deleted is served from the root
// it has (its drain, still to finish, will find and seal that root), but
// never gets a new one: its drain may have sealed a root that is gone
// already (a foreground deletion deletes the sealed ledgers before the
// pool). Once its drain finalizer is gone, nothing is committed to it.
func TestNoRootAfterTheDrain(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.0.0.0/30")
	ctx := context.Background()
	if _, err := NewManager(s, nil).Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a")}); err != nil {
		t.Fatal(err)
	}
	deleting := pool.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{}
	deleting.Finalizers = []string{ipamv1alpha1.PoolFinalizer}
	s.place(t, deleting)
	if _, err := NewManager(s, nil).Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a")}); err != nil {
		t.Fatalf("a pool still draining, from its root: %v", err)
	}
	delete(s.ledgers, "p")
	p, err := NewManager(s, nil).Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a")})
	if !errors.Is(err, ErrPoolDeleted) {
		t.Fatalf("a pool being deleted whose root is gone: %s, %v; want ErrPoolDeleted", p, err)
	}
	if root, _ := s.Get(ctx, "p"); root != nil {
		t.Fatalf("a root was created for a pool being deleted: %q", root.Spec.Allocations)
	}
	if err := NewManager(s, nil).Drain(ctx, pool); err != nil {
		t.Fatalf("draining a pool whose root is gone: %v", err)
	}
	if root, _ := s.Get(ctx, "p"); root == nil || !root.Spec.Sealed {
		t.Fatal("a drain that found no root left no sealed root")
	}
	// A root that exists (created before), once the drain finalizer is gone.
	delete(s.ledgers, "p")
	if err := s.Create(ctx, newRoot(pool)); err != nil {
		t.Fatal(err)
	}
	deleting.Finalizers = nil
	if p, err := NewManager(s, nil).Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a")}); !errors.Is(err, ErrPoolDeleted) {
		t.Fatalf("a pool whose drain is done: %s, %v; want ErrPoolDeleted", p, err)
	}
	if root, _ := s.Get(ctx, "p"); root.Spec.Allocations != "" {
		t.Fatalf("the root records %q", root.Spec.Allocations)
	}
}

// TestASealedShardDeletedIsNotCreatedAgain: a writer that saw a shard
// listed but not created creates it only by also writing the root, so a
// shard created, sealed and deleted since is not brought back under a
// prefix the root now records.
func TestASealedShardDeletedIsNotCreatedAgain(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.0.0.0/24") // /26 shards
	ctx := context.Background()
	a := NewManager(s, nil)
	// a lists shard 0 in the root, and stops before it creates it; b
	// restores meanwhile and sees it listed, not created.
	stopped, resume := pauseCreate(s, ShardName("p", 0))
	done := make(chan error, 1)
	go func() {
		_, err := a.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.1/32"), Holder: ClaimHolder("a")})
		done <- err
	}()
	<-stopped
	b := NewManager(s, nil)
	if _, err := b.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.200/32"), Holder: ClaimHolder("b")}); err != nil {
		t.Fatal(err)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.beforeCreate = nil
	if err := releaseRecorded(ctx, a, pool, netip.MustParsePrefix("10.0.0.1/32"), 0); err != nil {
		t.Fatal(err)
	}
	// a covers the empty shard with a /25: shard 0 is sealed and dropped;
	// then the sealed shard is deleted.
	big, err := a.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.0/25"), Holder: ClaimHolder("a")})
	if err != nil {
		t.Fatal(err)
	}
	delete(s.ledgers, ShardName("p", 0))
	// b still sees shard 0 listed and never created.
	p, err := b.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.5/32"), Holder: ClaimHolder("b")})
	if err == nil || big.Overlaps(p) {
		t.Fatalf("b got %s, %v inside %s", p, err, big)
	}
	checkLedger(t, s, netip.MustParsePrefix(pool.Spec.CIDR), []netip.Prefix{big, netip.MustParsePrefix("10.0.0.200/32")})
}

// TestDrainOfAPoolWithoutRootFencesAWriterAboutToCreateIt: a writer that
// found no root and decided to create one while the pool was served, then
// stopped, and a drain that finds no root meanwhile: the drain leaves a
// sealed root, and the writer's create meets it.
func TestDrainOfAPoolWithoutRootFencesAWriterAboutToCreateIt(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.0.0.0/30")
	ctx := context.Background()
	stopped, resume := pauseCreate(s, "p")
	got := make(chan error, 1)
	go func() {
		p, err := NewManager(s, nil).Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a")})
		if err == nil {
			err = fmt.Errorf("reported %s", p)
		}
		got <- err
	}()
	<-stopped
	deleting := pool.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{}
	deleting.Finalizers = []string{ipamv1alpha1.PoolFinalizer}
	s.pools = map[string]*ipamv1alpha1.IPPool{"p": deleting}
	if err := NewManager(s, nil).Drain(ctx, pool); err != nil {
		t.Fatalf("draining a pool with no root: %v", err)
	}
	close(resume)
	if err := <-got; !errors.Is(err, ErrPoolDeleted) {
		t.Fatalf("the writer that meant to create the root before the drain: %v, want ErrPoolDeleted", err)
	}
	if root, _ := s.Get(ctx, "p"); root == nil || !root.Spec.Sealed || root.Spec.Allocations != "" {
		t.Fatalf("root after the drain: %+v", root)
	}
}

// TestAdoptBindsTheEntryAlreadyRecorded: a bind retried after its patch's
// outcome was unknown gets the entry it committed before, even when the
// pool has no other room, and never holds two.
func TestAdoptBindsTheEntryAlreadyRecorded(t *testing.T) {
	s := newMemStore()
	m := NewManager(s, nil)
	pool := testPool("10.0.0.0/31")
	ctx := context.Background()
	bind := Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a"), ID: "claim-uid", Adopt: true}
	x, err := m.Allocate(ctx, bind)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("b")}); err != nil {
		t.Fatal(err) // the pool is full now
	}
	probe := bind
	probe.DryRun = true
	for _, owner := range []*Manager{m, NewManager(s, nil)} {
		// A dry run first: asked whether the bind would succeed (a
		// dual-stack claim's bind asks before it commits its first
		// family), it answers with the entry the bind adopts.
		for _, r := range []Request{probe, bind} {
			y, err := owner.Allocate(ctx, r)
			if err != nil || y != x {
				t.Fatalf("the bind retried (dry run %t): %s, %v; want %s again", r.DryRun, y, err, x)
			}
		}
	}
	if n := len(s.ledger(t).Allocations); n != 2 {
		t.Fatalf("the ledger records %d entries, want 2", n)
	}
	other := bind
	other.ID = "another-claim"
	if _, err := m.Allocate(ctx, other); err == nil {
		t.Fatal("another claim's bind adopted an entry that is not its own")
	}
}

// TestAShardNameTakenByAnotherLedgerIsSkipped: another pool's root ledger
// named like one of this pool's shards (a pool called "p.0") must not keep
// this pool from committing for ever: the listed shard is dead, and a new
// one is opened.
func TestAShardNameTakenByAnotherLedgerIsSkipped(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.0.0.0/24") // /26 shards
	ctx := context.Background()
	m := NewManager(s, nil)
	// The root lists shard 0 before the other pool's root takes its name.
	stopped, resume := pauseCreate(s, ShardName("p", 0))
	done := make(chan error, 1)
	go func() {
		_, err := m.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.1/32"), Holder: ClaimHolder("a")})
		done <- err
	}()
	<-stopped
	s.mu.Lock()
	s.ledgers[ShardName("p", 0)] = &ipamv1alpha1.IPLedger{
		ObjectMeta: metav1.ObjectMeta{Name: ShardName("p", 0), ResourceVersion: "1", Labels: map[string]string{ipamv1alpha1.LabelPool: ShardName("p", 0)}},
		Spec:       ipamv1alpha1.IPLedgerSpec{Pool: ShardName("p", 0)},
	}
	s.mu.Unlock()
	close(resume)
	<-done // the create met AlreadyExists; the retry restores
	s.beforeCreate = nil
	b := NewManager(s, nil)
	p, err := b.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.0.2/32"), Holder: ClaimHolder("b")})
	if err != nil {
		t.Fatalf("a pool whose listed shard's name another ledger took: %v", err)
	}
	e, ok, err := b.Recorded(ctx, pool, p)
	if err != nil || !ok || e.Holder != ClaimHolder("b") {
		t.Fatalf("%s recorded as %+v, %v, %v", p, e, ok, err)
	}
	if l := s.ledgers[ShardName("p", 0)]; l.Spec.Pool != ShardName("p", 0) {
		t.Fatalf("the other pool's ledger was overwritten: %+v", l.Spec)
	}
}

// TestAPoolNotRecordedInItsParentIsNotServed: a pool created around
// kipam's webhook, or before kipam recorded pools, takes no claim until its
// prefix is recorded in its parent (here, the address space): its parent
// could hand out the same addresses meanwhile.
func TestAPoolNotRecordedInItsParentIsNotServed(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.9.0.0/24")
	pool.Finalizers = []string{ipamv1alpha1.PoolFinalizer}
	s.pools = map[string]*ipamv1alpha1.IPPool{"p": pool}
	ctx := context.Background()
	m := NewManager(s, nil)
	_, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a")})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "is not recorded in ipv4.space.kipam.dev yet") {
		t.Fatalf("a claim from a pool its parent does not record: %v, want ErrBusy saying so", err)
	}
	s.place(t, pool)
	if _, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a")}); err != nil {
		t.Fatalf("once recorded: %v", err)
	}
}

// TestADrainThatLosesItsRaceKeepsTheShardsHolds: a drain seals the shards,
// then loses the race on the root (the garbage collector marking it for a
// foreground delete, another replica). The retry finds the shards sealed,
// and the sealed root still holds what they held: the pool's prefix must
// not go back to its parent before the last released address is free.
func TestADrainThatLosesItsRaceKeepsTheShardsHolds(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.0.0.0/24") // /26 shards
	pool.Finalizers = []string{ipamv1alpha1.PoolFinalizer}
	s.place(t, pool)
	ctx := context.Background()
	m := NewManager(s, nil)
	p, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("a")})
	if err != nil {
		t.Fatal(err)
	}
	if err := releaseRecorded(ctx, m, pool, p, time.Hour); err != nil {
		t.Fatal(err)
	}
	deleting := pool.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	deleting.Finalizers = []string{ipamv1alpha1.PoolFinalizer}
	s.mu.Lock()
	s.pools["p"] = deleting
	s.mu.Unlock()
	updates := 0
	s.beforeUpdate = func() {
		updates++
		if updates != 2 {
			return
		}
		// After the shard's seal, before the root's: someone else writes
		// the root.
		s.mu.Lock()
		defer s.mu.Unlock()
		s.rv++
		s.ledgers["p"].ResourceVersion = strconv.Itoa(s.rv)
	}
	if err := m.Drain(ctx, deleting); err != nil {
		t.Fatal(err)
	}
	if updates < 3 {
		t.Fatalf("the drain wrote %d times: the race on the root did not happen", updates)
	}
	root, err := s.Get(ctx, "p")
	if err != nil || !root.Spec.Sealed {
		t.Fatalf("root after the drain: %+v, %v", root, err)
	}
	if until := HeldUntil(root); until.Before(time.Now().Add(59 * time.Minute)) {
		t.Fatalf("the sealed root holds the pool until %s, want an hour from now: the shard's hold was lost", until)
	}
}

// TestReclaimTakesOverTheEntryOfAnUnstoredCreate: a pool created again
// after an attempt that committed its entry and was not stored gets that
// entry (its prefix and ID) rather than overlapping it, renewed in the
// same write, so that a sweep that judged the entry orphaned before frees
// nothing; and nothing else is taken over.
func TestReclaimTakesOverTheEntryOfAnUnstoredCreate(t *testing.T) {
	s := newMemStore()
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	m := NewManager(s, clock)
	parent := testPool("10.0.0.0/24")
	ctx := context.Background()
	p := netip.MustParsePrefix("10.0.0.64/28")
	first := Request{Pool: parent, CIDR: p, Bits: 28, Holder: PoolHolder("x"), ID: "first-attempt"}
	if _, err := m.Allocate(ctx, first); err != nil {
		t.Fatal(err)
	}
	judged := s.ledger(t).Allocations[p] // what a sweep read and judged orphaned

	now = now.Add(90 * time.Second)
	again := first
	again.ID, again.Reclaim = "second-attempt", true
	// The owner, and a new owner restored from the ledger, both answer so.
	for _, owner := range []*Manager{m, NewManager(s, clock)} {
		got, e, err := owner.AllocateEntry(ctx, again)
		if err != nil || got != p || e.ID != "first-attempt" {
			t.Fatalf("retried create: %s as entry %q, %v; want %s as entry first-attempt", got, e.ID, err, p)
		}
	}
	e := s.ledger(t).Allocations[p]
	if len(s.ledger(t).Allocations) != 1 || !e.Is(PoolHolder("x"), "first-attempt") || e.At.Unix() < now.Unix() {
		t.Fatalf("the ledger records %v; want one entry of IPPool/x, first-attempt, renewed at %d or later", s.ledger(t).Allocations, now.Unix())
	}

	if freed, err := m.ReleaseAsOf(ctx, parent, p, judged, 0); err != nil || freed {
		t.Fatalf("a sweep's release of the entry as it was before the renewal: freed %v, %v; want nothing freed", freed, err)
	}
	for _, r := range []Request{
		{Pool: parent, CIDR: netip.MustParsePrefix("10.0.0.64/27"), Bits: 27, Holder: PoolHolder("x"), Reclaim: true}, // another spec
		{Pool: parent, CIDR: p, Bits: 28, Holder: PoolHolder("y"), Reclaim: true},                                     // another name
		{Pool: parent, CIDR: p, Bits: 28, Holder: ClaimHolder("x"), Reclaim: true},                                    // a claim
	} {
		if got, err := m.Allocate(ctx, r); !errors.Is(err, allocator.ErrOverlap) {
			t.Errorf("%s for %s: %s, %v; want an overlap", r.CIDR, r.Holder, got, err)
		}
	}
	dry := again
	dry.DryRun = true
	if _, err := m.Allocate(ctx, dry); !errors.Is(err, allocator.ErrOverlap) {
		t.Errorf("a dry run took over the entry: %v", err)
	}

	renewed := s.ledger(t).Allocations[p]
	if freed, err := m.ReleaseAsOf(ctx, parent, p, renewed, 0); err != nil || !freed {
		t.Fatalf("a release of the entry as it is now: freed %v, %v; want it freed", freed, err)
	}
}

// An Adopt whose entry another replica committed while this one's memory
// lagged, in another shard than the one this replica's answer would fall
// in: the answer's write fences only its own shard, so a miss in memory
// must be decided on the stored ledgers, or the holder gets two entries
// (found in review: the stale replica committed a second address).
func TestAdoptOnAStaleReplicaFindsTheStoredEntry(t *testing.T) {
	s := newMemStore()
	pool := testPool("10.0.0.0/24") // /26 shards
	ctx := context.Background()
	owner, stale := NewManager(s, nil), NewManager(s, nil)
	for i, c := range []string{"10.0.0.0/27", "10.0.0.32/27", "10.0.0.64/27"} {
		if _, err := owner.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix(c), Bits: 27, Holder: ClaimHolder("other"), ID: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// The stale replica builds the pool now, and then misses what follows.
	if _, err := stale.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: ClaimHolder("x"), DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if freed, err := owner.Release(ctx, pool, netip.MustParsePrefix("10.0.0.0/27"), ClaimHolder("other"), "0", 0, nil); err != nil || !freed {
		t.Fatalf("release: freed %v, %v", freed, err)
	}
	req := Request{Pool: pool, Bits: 32, Holder: AddressClaimHolder("ns"), ID: "claim-uid", Adopt: true}
	p1, p2 := bothAnswer(t, owner, stale, req)
	if n := len(entriesOf(t, s, req.Holder, req.ID)); n != 1 || p1 != p2 {
		t.Fatalf("Adopt of %s/%s: the owner answered %s, the stale replica %s; the ledger records %d entries for it, want 1",
			req.Holder, req.ID, p1, p2, n)
	}
}

// An Adopt (or an AdoptKnown: a hit is decided alike) that memory answers
// with its entry wrote nothing: on a replica whose memory has not seen the
// entry's release, it would hand the caller an address the ledger no
// longer records for it (and may have given to another). It is answered
// again from the stored ledgers.
func TestAdoptHitOnAStaleReplicaIsCheckedAgainstTheLedgers(t *testing.T) {
	for _, known := range []bool{false, true} {
		s := newMemStore()
		pool := testPool("10.0.0.0/24")
		ctx := context.Background()
		owner, stale := NewManager(s, nil), NewManager(s, nil)
		req := Request{Pool: pool, Bits: 32, Holder: AddressClaimHolder("ns"), ID: "claim-uid", Adopt: !known, AdoptKnown: known}
		p, err := owner.Allocate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := stale.Allocate(ctx, req); err != nil || got != p { // the stale replica learns the entry
			t.Fatalf("AdoptKnown %v: on the second replica: %s, %v; want %s", known, got, err, p)
		}
		if freed, err := owner.Release(ctx, pool, p, req.Holder, req.ID, 0, nil); err != nil || !freed {
			t.Fatalf("release: freed %v, %v", freed, err)
		}
		other, err := owner.Allocate(ctx, Request{Pool: pool, CIDR: p, Bits: 32, Holder: ClaimHolder("other"), ID: "other"})
		if err != nil {
			t.Fatalf("%s, released, to another claim: %v", p, err)
		}
		got, err := stale.Allocate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if got == other {
			t.Fatalf("AdoptKnown %v: the stale replica adopted %s, which the ledger records for another claim", known, got)
		}
		if e := s.ledger(t).Allocations[got]; !e.Is(req.Holder, req.ID) {
			t.Fatalf("AdoptKnown %v: the stale replica answered %s, which the ledger records as %+v", known, got, e)
		}
	}
}
