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
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"go4.org/netipx"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/metrics"
)

// memStore is a Store with etcd's compare-and-swap semantics: an update
// must carry the current resourceVersion.
type memStore struct {
	mu sync.Mutex
	// pools are the pools Pool finds; a name it does not hold is found as
	// the pool testPool makes (uid "uid-<name>", with its drain finalizer),
	// unless gone lists it.
	pools   map[string]*ipamv1alpha1.IPPool
	gone    map[string]bool
	rv      int
	ledgers map[string]*ipamv1alpha1.IPLedger
	writes  int
	// ledgerReads counts Get and List calls; versionReads Versions calls.
	ledgerReads, versionReads int
	// versionNames is the names the last Versions call read by name (nil:
	// it listed the pool's ledgers).
	versionNames []string
	// beforeUpdate, when set, runs before every update (under no lock), so
	// tests can interleave writers.
	beforeUpdate func()
	// beforeCreate, when set, runs before every create (under no lock).
	beforeCreate func(name string)
	// afterUpdate, when set, is the error an update returns after it was
	// stored: a write whose answer was lost.
	afterUpdate func(name string) error
}

func newMemStore() *memStore { return &memStore{ledgers: map[string]*ipamv1alpha1.IPLedger{}} }

// memUIDs numbers the ledgers every memStore creates: a uid is never
// reused, so what is kept per stored version (storedShards) cannot mix one
// test's ledger up with another's of the same name.
var memUIDs atomic.Int64

var ledgerGR = schema.GroupResource{Group: "ipam.kipam.dev", Resource: "ipledgers"}

func (s *memStore) Get(_ context.Context, pool string) (*ipamv1alpha1.IPLedger, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ledgerReads++
	l, ok := s.ledgers[pool]
	if !ok {
		return nil, apierrors.NewNotFound(ledgerGR, pool)
	}
	return l.DeepCopy(), nil
}

func (s *memStore) Pool(_ context.Context, name string) (*ipamv1alpha1.IPPool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone[name] {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: "ipam.kipam.dev", Resource: "ippools"}, name)
	}
	if p, ok := s.pools[name]; ok {
		return p.DeepCopy(), nil
	}
	return &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name),
		Finalizers: []string{ipamv1alpha1.PoolFinalizer}}}, nil
}

// place records pool's prefix in the address space of its family, as
// kipam's webhook does when it creates the pool, and makes Pool find it.
func (s *memStore) place(t *testing.T, pool *ipamv1alpha1.IPPool) {
	t.Helper()
	s.mu.Lock()
	if s.pools == nil {
		s.pools = map[string]*ipamv1alpha1.IPPool{}
	}
	s.pools[pool.Name] = pool
	s.mu.Unlock()
	cidr := netip.MustParsePrefix(pool.Spec.CIDR)
	if _, err := NewManager(s, nil).Allocate(context.Background(), Request{Pool: Space(cidr.Addr()), CIDR: cidr, Bits: cidr.Bits(),
		Holder: PoolHolder(pool.Name), ID: PoolEntryID(pool), Adopt: true}); err != nil {
		t.Fatal(err)
	}
}

// releaseRecorded releases p as the entry the stored ledger records for
// it, whoever holds it: for tests that release what they allocated.
func releaseRecorded(ctx context.Context, m *Manager, pool *ipamv1alpha1.IPPool, p netip.Prefix, grace time.Duration) error {
	e, _, err := lookup(ctx, m.store.Get, pool.Name, p)
	if err != nil {
		return err
	}
	_, err = m.Release(ctx, pool, p, e.Holder, e.ID, grace, nil)
	return err
}

func (s *memStore) List(_ context.Context, pool string) ([]ipamv1alpha1.IPLedger, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ledgerReads++
	var out []ipamv1alpha1.IPLedger
	for _, l := range s.ledgers {
		if LedgerPool(l)[0] == pool {
			out = append(out, *l.DeepCopy())
		}
	}
	return out, nil
}

func (s *memStore) Versions(_ context.Context, pool string, names []string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.versionReads++
	s.versionNames = names
	out := map[string]string{}
	for name, l := range s.ledgers {
		if (names == nil && LedgerPool(l)[0] == pool) || slices.Contains(names, name) {
			out[name] = l.ResourceVersion
		}
	}
	return out, nil
}

func (s *memStore) Create(_ context.Context, l *ipamv1alpha1.IPLedger) error {
	if s.beforeCreate != nil {
		s.beforeCreate(l.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ledgers[l.Name]; ok {
		return apierrors.NewAlreadyExists(ledgerGR, l.Name)
	}
	s.rv++
	s.writes++
	l.ResourceVersion = strconv.Itoa(s.rv)
	l.UID = types.UID("uid-" + strconv.FormatInt(memUIDs.Add(1), 10)) // unique across stores, as an API server's
	s.ledgers[l.Name] = l.DeepCopy()
	return nil
}

func (s *memStore) Update(_ context.Context, l *ipamv1alpha1.IPLedger) error {
	if s.beforeUpdate != nil {
		s.beforeUpdate()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.ledgers[l.Name]
	if !ok {
		return apierrors.NewNotFound(ledgerGR, l.Name)
	}
	if cur.ResourceVersion != l.ResourceVersion {
		return apierrors.NewConflict(ledgerGR, l.Name, fmt.Errorf("resourceVersion %s is not current (%s)", l.ResourceVersion, cur.ResourceVersion))
	}
	s.rv++
	s.writes++
	l.ResourceVersion = strconv.Itoa(s.rv)
	s.ledgers[l.Name] = l.DeepCopy()
	if s.afterUpdate != nil {
		return s.afterUpdate(l.Name)
	}
	return nil
}

func testPool(cidr string) *ipamv1alpha1.IPPool {
	return &ipamv1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "uid-p", Generation: 1},
		Spec:       ipamv1alpha1.IPPoolSpec{CIDR: cidr},
	}
}

// ledger assembles pool p's ledger from the store, as a new owner would.
func (s *memStore) ledger(t *testing.T) *Ledger {
	t.Helper()
	root, err := s.Get(context.Background(), "p")
	if err != nil {
		t.Fatal(err)
	}
	shards, _ := s.List(context.Background(), "p")
	l, err := Assemble(root, shards)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// checkLedger fails unless the ledger's allocations are disjoint, inside
// the pool, and exactly the set of prefixes reported as allocated.
func checkLedger(t *testing.T, s *memStore, pool netip.Prefix, reported []netip.Prefix) {
	t.Helper()
	var b netipx.IPSetBuilder
	inLedger := map[netip.Prefix]bool{}
	for _, p := range s.ledger(t).Prefixes() {
		if !pool.Contains(p.Addr()) || p.Bits() < pool.Bits() {
			t.Errorf("ledger holds %s outside the pool %s", p, pool)
		}
		set, _ := b.IPSet()
		if set.OverlapsPrefix(p) {
			t.Errorf("ledger holds %s twice or overlapping", p)
		}
		b.AddPrefix(p)
		inLedger[p] = true
	}
	for _, p := range reported {
		if !inLedger[p] {
			t.Errorf("%s was reported allocated but is not in the ledger", p)
		}
	}
	if len(reported) != len(inLedger) {
		t.Errorf("reported %d allocations, ledger holds %d", len(reported), len(inLedger))
	}
}

// allocateConcurrently asks for n hosts of pool from n goroutines at once
// and returns what they got; exhaustion is expected, any other error fails.
func allocateConcurrently(t *testing.T, m *Manager, pool *ipamv1alpha1.IPPool, n int) []netip.Prefix {
	t.Helper()
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		got []netip.Prefix
	)
	for range n {
		wg.Go(func() {
			p, err := m.Allocate(context.Background(), Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"})
			if err != nil {
				var ex *allocator.ExhaustedError
				if !errors.As(err, &ex) {
					t.Errorf("unexpected error: %v", err)
				}
				return
			}
			mu.Lock()
			got = append(got, p)
			mu.Unlock()
		})
	}
	wg.Wait()
	return got
}

func TestGroupCommitBatchesConcurrentRequests(t *testing.T) {
	s := newMemStore()
	m := NewManager(s, nil)
	pool := testPool("10.0.0.0/24")
	got := allocateConcurrently(t, m, pool, 300)
	if len(got) != 256 {
		t.Fatalf("got %d allocations from a /24, want 256", len(got))
	}
	checkLedger(t, s, netip.MustParsePrefix(pool.Spec.CIDR), got)
	t.Logf("%d allocations in %d ledger writes", len(got), s.writes)
}

// TestFence races two managers that both believe they own one pool, with
// mixed prefix lengths. Every prefix either reports must be in the ledger,
// and the ledger must stay disjoint: the loser of each race learns it lost
// (a Conflict), rebuilds from the ledger and tries again, or fails with
// ErrBusy; it never answers with an uncommitted prefix.
func TestFence(t *testing.T) {
	s := newMemStore()
	clock := func() time.Time { return time.Unix(1_700_000_000, 0) }
	a, b := NewManager(s, clock), NewManager(s, clock)
	pool := testPool("10.0.0.0/16")
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		got  []netip.Prefix
		busy int
	)
	// Interleave: yield before each write so the other manager often
	// commits in between.
	s.beforeUpdate = func() { time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond) }
	for i := range 400 {
		m := a
		if i%2 == 1 {
			m = b
		}
		bits := []int{32, 30, 28, 26, 24}[i%5]
		wg.Go(func() {
			p, err := m.Allocate(context.Background(), Request{Pool: pool, Bits: bits, Holder: "IPClaim/t"})
			var ex *allocator.ExhaustedError
			switch {
			case err == nil:
				mu.Lock()
				got = append(got, p)
				mu.Unlock()
			case errors.Is(err, ErrBusy):
				mu.Lock()
				busy++
				mu.Unlock()
			case errors.As(err, &ex):
			default:
				t.Errorf("unexpected error: %v", err)
			}
		})
	}
	wg.Wait()
	checkLedger(t, s, netip.MustParsePrefix(pool.Spec.CIDR), got)
	checkShards(t, s)
	if len(got) == 0 {
		t.Fatal("nothing was allocated")
	}
	t.Logf("%d allocations, %d lost races (%d reported busy), %d ledger writes", len(got), a.Conflicts()+b.Conflicts(), busy, s.writes)
	if a.Conflicts()+b.Conflicts() == 0 {
		t.Error("the two owners never raced: the test does not reach the fence")
	}
}

func TestReleaseHoldsForGrace(t *testing.T) {
	s := newMemStore()
	now := time.Unix(1_700_000_000, 0)
	m := NewManager(s, func() time.Time { return now })
	pool := testPool("10.0.0.0/30")
	ctx := context.Background()
	first, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"})
	if err != nil {
		t.Fatal(err)
	}
	if err := releaseRecorded(ctx, m, pool, first, time.Minute); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		p, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"})
		if err != nil {
			t.Fatal(err)
		}
		if p == first {
			t.Fatalf("%s handed out again within its reuse grace", p)
		}
	}
	if _, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"}); err == nil {
		t.Fatal("a held prefix was handed out")
	}
	// A restart restores the hold from the ledger.
	m2 := NewManager(s, func() time.Time { return now })
	if _, err := m2.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"}); err == nil {
		t.Fatal("a held prefix was handed out after a restore")
	}
	now = now.Add(time.Minute + time.Second)
	p, err := m2.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"})
	if err != nil || p != first {
		t.Fatalf("after the grace got %v, %v; want %s", p, err, first)
	}
}

func TestDryRunCommitsNothing(t *testing.T) {
	s := newMemStore()
	m := NewManager(s, nil)
	pool := testPool("10.0.0.0/24")
	ctx := context.Background()
	dry, err := m.Allocate(ctx, Request{Pool: pool, Bits: 28, Holder: "IPClaim/t", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	real, err := m.Allocate(ctx, Request{Pool: pool, Bits: 28, Holder: "IPClaim/t"})
	if err != nil {
		t.Fatal(err)
	}
	if dry != real {
		t.Fatalf("dry run answered %s, the real request got %s", dry, real)
	}
	checkLedger(t, s, netip.MustParsePrefix("10.0.0.0/24"), []netip.Prefix{real})
}

func TestAllocationName(t *testing.T) {
	for _, tc := range []struct{ pool, cidr, want string }{
		{"tenant-a", "10.0.0.5/32", "tenant-a.10-0-0-5-32"},
		{"v6", "2001:db8::/64", "v6.2001-0db8-0000-0000-0000-0000-0000-0000-64"},
		{"v6", "::1/128", "v6.0000-0000-0000-0000-0000-0000-0000-0001-128"},
		// A name over 253 characters keeps a hash of the pool's name.
		{strings.Repeat("p", 250), "10.0.0.5/32", strings.Repeat("p", 165) + ".6b942e08cb58d48bedb5fa5e24892b3b.10-0-0-5-32"},
	} {
		if got := AllocationName(tc.pool, netip.MustParsePrefix(tc.cidr)); got != tc.want {
			t.Errorf("AllocationName(%s, %s) = %s, want %s", tc.pool, tc.cidr, got, tc.want)
		}
	}
}

// failingStore fails every read, as an API server that cannot be reached.
type failingStore struct{ *memStore }

func (failingStore) Get(context.Context, string) (*ipamv1alpha1.IPLedger, error) {
	return nil, apierrors.NewServiceUnavailable("etcd is down")
}

// TestNoAnswerBeforeRestore: a pool whose ledger cannot be read is not
// served from a guess; the caller gets ErrBusy, which the webhook turns
// into a retryable 429.
func TestNoAnswerBeforeRestore(t *testing.T) {
	s := failingStore{newMemStore()}
	m := NewManager(s, nil)
	_, err := m.Allocate(context.Background(), Request{Pool: testPool("10.0.0.0/24"), Bits: 32, Holder: "IPClaim/t"})
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("got %v, want ErrBusy", err)
	}
	if len(s.ledgers) != 0 {
		t.Fatal("something was written")
	}
}

// TestRandomStrategy: a Random pool hands out prefixes spread over the
// pool, not lowest first, and commits each like any other.
func TestRandomStrategy(t *testing.T) {
	s := newMemStore()
	m := NewManager(s, nil)
	pool := testPool("10.0.0.0/16")
	pool.Spec.Strategy = ipamv1alpha1.Random
	var got []netip.Prefix
	lowest := 0
	for i := range 32 {
		p, err := m.Allocate(context.Background(), Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"})
		if err != nil {
			t.Fatal(err)
		}
		if p == netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32) {
			lowest++
		}
		got = append(got, p)
	}
	if lowest == len(got) {
		t.Fatalf("a Random pool handed out the lowest addresses in order: %v", got)
	}
	checkLedger(t, s, netip.MustParsePrefix(pool.Spec.CIDR), got)
	checkShards(t, s)
}

// TestLedgerFull: a ledger stops taking entries before etcd would refuse
// its write, with an error that says which ledger and what to do. The
// denied prefix is not left allocated, the pool's other ledgers go on, a
// release makes room, and a new owner enforces the same bound from what it
// reads.
func TestLedgerFull(t *testing.T) {
	s := newMemStore()
	clock := func() time.Time { return time.Unix(1_700_000_000, 0) }
	m := NewManager(s, clock)
	pool := testPool("10.0.0.0/16") // a pool of hosts: /26 shards, /24s in the root
	cidr := netip.MustParsePrefix(pool.Spec.CIDR)
	line := entryLen(netip.MustParsePrefix("10.0.0.0/24"), Entry{Holder: "IPClaim/t", At: clock(), ID: NewEntryID()})
	m.SetMaxLedgerBytes(4*line + line/2) // four /24s, and a shard's line in the list
	ctx := context.Background()
	slash24 := func(m *Manager) (netip.Prefix, error) {
		return m.Allocate(ctx, Request{Pool: pool, Bits: 24, Holder: "IPClaim/t"})
	}
	var got []netip.Prefix
	for range 4 {
		p, err := slash24(m)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}
	_, err := slash24(m)
	if !errors.Is(err, ErrLedgerFull) {
		t.Fatalf("a fifth /24 in a full root: %v, want ErrLedgerFull", err)
	}
	for _, want := range []string{"pool p cannot record another /24", "root ledger", "a release there makes room", "spec.defaultPrefixLength"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	checkLedger(t, s, cidr, got)
	if b := promtestutil.ToFloat64(metrics.LedgerBytes.WithLabelValues(pool.Name)); b != float64(4*line) {
		t.Errorf("kipam_pool_ledger_bytes = %v, want the root's %d", b, 4*line)
	}

	// Hosts are recorded in shards, which have room; the first one takes
	// the /24 just denied, so that was released.
	h, err := m.Allocate(ctx, Request{Pool: pool, Bits: 32, Holder: "IPClaim/t"})
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParsePrefix("10.0.4.0/32"); h != want {
		t.Errorf("first host = %s, want %s (where the denied /24 was)", h, want)
	}

	if err := releaseRecorded(ctx, m, pool, got[0], 0); err != nil {
		t.Fatal(err)
	}
	p, err := slash24(m)
	if err != nil {
		t.Fatalf("a /24 after a release in the root: %v", err)
	}
	got = append(got[1:], h, p)
	checkLedger(t, s, cidr, got)

	fresh := NewManager(s, clock)
	fresh.SetMaxLedgerBytes(4*line + line/2)
	if _, err := slash24(fresh); !errors.Is(err, ErrLedgerFull) {
		t.Errorf("a new owner let the full root take another /24: %v", err)
	}
	checkLedger(t, s, cidr, got)

	m.Forget(pool.Name)
	if metrics.LedgerBytes.DeleteLabelValues(pool.Name) {
		t.Error("a forgotten pool still has its ledger-size series")
	}
}

func TestNamespaceLimit(t *testing.T) {
	s := newMemStore()
	clock := func() time.Time { return time.Unix(1_700_000_000, 0) }
	m := NewManager(s, clock)
	pool := testPool("10.0.0.0/16")
	pool.Spec.NamespaceLimit = &ipamv1alpha1.NamespaceLimit{Claims: ptr.To[int32](5), AddressSpace: ptr.To[int32](26)} // 64 addresses
	cidr := netip.MustParsePrefix(pool.Spec.CIDR)
	ctx := context.Background()
	alloc := func(m *Manager, ns string, bits int) (netip.Prefix, error) {
		return m.Allocate(ctx, Request{Pool: pool, Bits: bits, Holder: ClaimHolder(ns)})
	}

	// Namespace a: claims created at once never pass the cap on claims.
	var (
		mu  sync.Mutex
		got []netip.Prefix
		wg  sync.WaitGroup
	)
	denied := 0
	for range 12 {
		wg.Go(func() {
			p, err := alloc(m, "a", 32)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrNamespaceLimit):
				denied++
			case err != nil:
				t.Error(err)
			default:
				got = append(got, p)
			}
		})
	}
	wg.Wait()
	if len(got) != 5 || denied != 7 {
		t.Fatalf("12 hosts at once for a namespace limited to 5 claims: %d allocated, %d denied", len(got), denied)
	}
	_, err := alloc(m, "a", 32)
	for _, want := range []string{"namespace a holds 5 claims from pool p", "spec.namespaceLimit.claims", "a release there makes room"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}

	// Namespace b: the cap on addresses, in any mix of sizes; a dry run
	// is told the same and takes nothing.
	for _, bits := range []int{27, 28} { // 32 + 16 of 64 addresses
		p, err := alloc(m, "b", bits)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}
	if _, err := m.Allocate(ctx, Request{Pool: pool, Bits: 27, Holder: ClaimHolder("b"), DryRun: true}); !errors.Is(err, ErrNamespaceLimit) ||
		!strings.Contains(err.Error(), "namespace b holds 48 addresses from pool p and a /27 is 32 more, past its spec.namespaceLimit.addressSpace of a /26 (64)") {
		t.Errorf("a /27 past the address cap: %v", err)
	}
	p, err := alloc(m, "b", 28) // exactly up to the cap
	if err != nil {
		t.Fatalf("a /28 up to the cap: %v", err)
	}
	got = append(got, p)
	if _, err := m.Allocate(ctx, Request{Pool: pool, CIDR: netip.MustParsePrefix("10.0.200.7/32"), Holder: ClaimHolder("b")}); !errors.Is(err, ErrNamespaceLimit) {
		t.Errorf("a given host past the cap: %v", err)
	}
	// Child pools and other namespaces are not counted against b.
	for _, holder := range []string{"IPPool/child", ClaimHolder("c")} {
		p, err := m.Allocate(ctx, Request{Pool: pool, Bits: 24, Holder: holder})
		if holder == ClaimHolder("c") {
			if !errors.Is(err, ErrNamespaceLimit) {
				t.Errorf("a /24 for namespace c, past the /26 cap: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("a /24 for a child pool: %v", err)
		}
		got = append(got, p)
	}
	checkLedger(t, s, cidr, got)

	// A release makes room; a new owner counts what the ledger records.
	if err := releaseRecorded(ctx, m, pool, got[0], 0); err != nil {
		t.Fatal(err)
	}
	fresh := NewManager(s, clock)
	p, err = alloc(fresh, "a", 32)
	if err != nil {
		t.Fatalf("a host for namespace a after one of its releases: %v", err)
	}
	if _, err := alloc(fresh, "a", 32); !errors.Is(err, ErrNamespaceLimit) {
		t.Errorf("a new owner let namespace a past its cap: %v", err)
	}
	if _, err := alloc(fresh, "b", 32); !errors.Is(err, ErrNamespaceLimit) {
		t.Errorf("a new owner let namespace b past its address cap: %v", err)
	}
	checkLedger(t, s, cidr, append(got[1:], p))
}
