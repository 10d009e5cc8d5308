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
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
)

// Snapshot is a pool's usage as of a set of ledger versions, kept by the
// Manager after every commit so that publishing a pool's status costs no
// rebuild of its allocator.
type Snapshot struct {
	// UID and Generation are the pool's, as the allocator was built for.
	UID        string
	Generation int64
	// Usage is the allocator's.
	Usage allocator.Usage
	// Claims and ChildPools count the allocations by holder kind.
	Claims, ChildPools int32
	// LedgerBytes is the entry text of the fullest live ledger.
	LedgerBytes int
	// Until is when the usage counted here changes with no write: the
	// first hold it counts to end, or the first prefix retained for its
	// last holder to leave its window. Zero when nothing will.
	Until time.Time
	// Versions maps the name of every ledger the snapshot reflects (the
	// root and its listed shards) to its resourceVersion; a listed shard
	// not created yet maps to "".
	Versions map[string]string
}

// Snapshot returns the pool's last snapshot, if this Manager has served
// the pool.
func (m *Manager) Snapshot(pool string) (*Snapshot, bool) {
	m.mu.Lock()
	st, ok := m.pools[pool]
	m.mu.Unlock()
	if !ok {
		return nil, false
	}
	s := st.snap.Load()
	return s, s != nil
}

// Ahead reports whether these ledgers of its pool (as a cache holds them)
// show a write the snapshot does not: a ledger it lists at a later
// resourceVersion, or one it lists as never created. A cache that only
// lags the snapshot's own writes (a ledger at an earlier version, a shard
// it has not seen yet) is not ahead: the snapshot is the newer of the
// two, and what a rebuild from that cache would compute is older. Its
// owner writes a pool's ledgers many times a second in a burst, and the
// cache is a write or two behind, so most reconciles of the pool, which
// asked for the ledgers at exactly the snapshot's versions, rebuilt the
// pool from every ledger (at 100,000 claims in one pool, a third of the
// manager's CPU: docs/benchmarks.md).
// Versions are compared as the numbers etcd's revisions are; one that is
// not a number counts as ahead, so that the pool is rebuilt.
func (s *Snapshot) Ahead(ledgers []ipamv1alpha1.IPLedger) bool {
	for i := range ledgers {
		l := &ledgers[i]
		v, ok := s.Versions[l.Name]
		if !ok || v == l.ResourceVersion {
			continue // a sealed shard no longer listed, or the same version
		}
		mine, err1 := strconv.ParseUint(v, 10, 64)
		cached, err2 := strconv.ParseUint(l.ResourceVersion, 10, 64)
		if err1 != nil || err2 != nil || cached > mine {
			return true
		}
	}
	return false
}

// SnapshotOf computes pool's usage from its ledger, for a process that does
// not serve the pool (its Versions are left empty). It fails when the pool
// cannot be served as specified.
func SnapshotOf(pool *ipamv1alpha1.IPPool, ledger *Ledger, now func() time.Time) (*Snapshot, error) {
	a, err := Build(pool, ledger, now)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{UID: string(pool.UID), Generation: pool.Generation, Usage: a.Usage()}
	// With no grace, the moments a kept prefix leaves its grace are all
	// past: what is left is when a hold or a retention window ends.
	s.Until, _ = ledger.NextFree(now(), 0)
	for _, e := range ledger.Allocations {
		if isClaim(e) {
			s.Claims++
		} else {
			s.ChildPools++
		}
	}
	return s, nil
}

// SetStatus writes the usage s counts into pool's status, and the
// Exhausted condition it implies: what the pool controller publishes, and
// what a recount compares with it. status.pending, which only the ledger
// sweep knows, is left as it is.
func (s *Snapshot) SetStatus(pool *ipamv1alpha1.IPPool) {
	u := s.Usage
	st := &pool.Status
	st.Capacity, st.Allocated, st.Available = u.Capacity.String(), u.Allocated.String(), u.Available.String()
	st.Utilization = Utilization(u.Allocated, new(big.Int).Sub(u.Capacity, u.Reserved))
	st.LargestFreePrefix = nil
	if u.LargestFree >= 0 {
		lf := int32(u.LargestFree)
		st.LargestFreePrefix = &lf
	}
	st.Claims, st.ChildPools = s.Claims, s.ChildPools
	bits := DefaultBits(pool)
	exhausted := metav1.Condition{Type: ipamv1alpha1.ConditionExhausted, Status: metav1.ConditionFalse, Reason: ipamv1alpha1.ReasonPoolReady,
		Message: fmt.Sprintf("a /%d is still free", bits), ObservedGeneration: pool.Generation}
	if u.LargestFree < 0 || u.LargestFree > bits {
		exhausted.Status, exhausted.Reason, exhausted.Message = metav1.ConditionTrue, ipamv1alpha1.ReasonPoolExhausted,
			fmt.Sprintf("no /%d left for claims of the default size", bits)
	}
	meta.SetStatusCondition(&st.Conditions, exhausted)
}

// Utilization formats allocated/usable as a percentage with up to two
// decimals: "37.5%", "<0.01%" for an IPv6 pool with something in it.
func Utilization(allocated, usable *big.Int) string {
	if usable.Sign() <= 0 {
		return "0%" // everything reserved or excluded: nothing can be, or is, allocated
	}
	pct := new(big.Rat).SetFrac(new(big.Int).Mul(allocated, big.NewInt(100)), usable)
	v := pct.FloatString(2)
	if v == "0.00" && allocated.Sign() > 0 {
		return "<0.01%" // an IPv6 pool with something in it is not empty
	}
	if strings.Contains(v, ".") {
		v = strings.TrimRight(strings.TrimRight(v, "0"), ".")
	}
	return v + "%"
}

// until moves s.Until to t if t is after now and before it.
func (s *Snapshot) until(t, now time.Time) {
	if t.After(now) && (s.Until.IsZero() || t.Before(s.Until)) {
		s.Until = t
	}
}

// Stale reports whether the usage s counts may have changed by now
// without a write: a hold ended, or a retained prefix left its window.
func (s *Snapshot) Stale(now time.Time) bool { return !s.Until.IsZero() && !now.Before(s.Until) }

// snapshot records the state the committer just wrote or read, at now.
func (st *poolState) snapshot(now time.Time) {
	l := st.ledger
	s := &Snapshot{UID: st.uid, Generation: st.generation, Usage: st.alloc.Usage(), Versions: make(map[string]string, len(l.listed)+1)}
	for _, d := range l.docs() {
		v := ""
		if d.obj != nil {
			v = d.obj.ResourceVersion
		}
		s.Versions[d.name] = v
		if d.dead {
			continue
		}
		for _, until := range d.holds {
			s.until(until, now)
		}
		for p, r := range d.released {
			if d.keeps(p, r, now) {
				s.until(r.Until, now)
			}
		}
		s.Claims += int32(d.claims)
		s.ChildPools += int32(d.allocs.len() - d.claims)
		s.LedgerBytes = max(s.LedgerBytes, d.size)
	}
	st.snap.Store(s)
}

// isClaim reports whether an entry's holder is a claim: an IPClaim or a
// Cluster API IPAddressClaim.
func isClaim(e Entry) bool { _, ok := HolderNamespace(e.Holder); return ok }
