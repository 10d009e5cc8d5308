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
	"cmp"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// unconfirmed is, per ledger, what the ledger sweep last found of the
// entries no holder carries yet: how many are claims' (the pool's
// status.pending) and which are still within the orphan grace, with how
// long this replica had seen each (status.unconfirmed). The sweep sets
// them; a pool whose ledgers' figures changed is sent on changed, which
// wakes the pool controller.
type unconfirmed struct {
	mu     sync.Mutex
	counts map[string]count // by ledger, for every ledger swept since this replica started
	// changed carries the pools whose figures changed.
	changed chan event.GenericEvent
}

type count struct {
	pool    string
	n       int
	entries []ipamv1alpha1.UnconfirmedEntry
}

// maxUnconfirmed caps status.unconfirmed (its CRD's maxItems).
const maxUnconfirmed = 64

func newUnconfirmed() *unconfirmed {
	return &unconfirmed{counts: map[string]count{}, changed: make(chan event.GenericEvent, 1024)}
}

// set records what a sweep of a ledger of pool found: n claim entries no
// stored claim carries, and the entries still within the orphan grace. A
// ledger gone (pool "") is forgotten.
func (u *unconfirmed) set(pool, ledger string, n int, entries []ipamv1alpha1.UnconfirmedEntry) {
	if u == nil {
		return
	}
	u.mu.Lock()
	was, known := u.counts[ledger]
	if known && n == was.n && equality.Semantic.DeepEqual(entries, was.entries) {
		u.mu.Unlock()
		return
	}
	if pool == "" {
		delete(u.counts, ledger)
		pool = was.pool
	} else {
		u.counts[ledger] = count{pool, n, entries}
	}
	u.mu.Unlock()
	if pool == "" {
		return // never swept here: no pool's figures change
	}
	select {
	case u.changed <- event.GenericEvent{Object: &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pool}}}:
	default: // the pool controller is far behind; its next reconcile of the pool reads the figures
	}
}

// status sets pool's status.pending and status.unconfirmed from what the
// sweeps of its ledgers found. For a ledger not swept since this replica
// started, it keeps the entries the status already lists while exists says
// the ledger is there: a replica that starts, or becomes leader, writes
// the pool's status before its sweep has read those entries' ages from it,
// and must not drop them.
func (u *unconfirmed) status(pool *ipamv1alpha1.IPPool, exists func(ledger string) bool) {
	if u == nil {
		return
	}
	u.mu.Lock()
	n := 0
	var entries []ipamv1alpha1.UnconfirmedEntry
	for _, c := range u.counts {
		if c.pool == pool.Name {
			n += c.n
			entries = append(entries, c.entries...)
		}
	}
	kept := map[string]bool{} // by ledger: asked of exists once
	for _, e := range pool.Status.Unconfirmed {
		if _, swept := u.counts[e.Ledger]; swept {
			continue
		}
		keep, asked := kept[e.Ledger]
		if !asked {
			keep = exists(e.Ledger)
			kept[e.Ledger] = keep
		}
		if keep {
			entries = append(entries, e)
		}
	}
	u.mu.Unlock()
	// Oldest first: those the sweep would release soonest lose the most
	// if a restart forgets them.
	slices.SortFunc(entries, func(a, b ipamv1alpha1.UnconfirmedEntry) int {
		return cmp.Or(-cmp.Compare(a.SeenFor.Duration, b.SeenFor.Duration), cmp.Compare(a.Ledger, b.Ledger), cmp.Compare(a.CIDR, b.CIDR))
	})
	pool.Status.Pending = int32(n)
	pool.Status.Unconfirmed = entries[:min(len(entries), maxUnconfirmed)]
}
