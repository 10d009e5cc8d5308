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
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// unconfirmed counts, per ledger, the claim entries that no stored claim
// carries yet, as the ledger sweep last saw them, for the pool's
// status.pending. The sweep sets the counts; a pool whose count changed is
// sent on changed, which wakes the pool controller.
type unconfirmed struct {
	mu     sync.Mutex
	counts map[string]count // by ledger
	// changed carries the pools whose count changed.
	changed chan event.GenericEvent
}

type count struct {
	pool string
	n    int
}

func newUnconfirmed() *unconfirmed {
	return &unconfirmed{counts: map[string]count{}, changed: make(chan event.GenericEvent, 1024)}
}

// set records n unconfirmed entries in a ledger of pool; a ledger gone
// has none.
func (u *unconfirmed) set(pool, ledger string, n int) {
	if u == nil {
		return
	}
	u.mu.Lock()
	was := u.counts[ledger]
	if n == was.n {
		u.mu.Unlock()
		return
	}
	if n == 0 {
		delete(u.counts, ledger)
	} else {
		u.counts[ledger] = count{pool, n}
	}
	if pool == "" {
		pool = was.pool
	}
	u.mu.Unlock()
	select {
	case u.changed <- event.GenericEvent{Object: &ipamv1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pool}}}:
	default: // the pool controller is far behind; its next reconcile of the pool reads the count
	}
}

// of is how many entries of pool no stored claim carries yet.
func (u *unconfirmed) of(pool string) int32 {
	if u == nil {
		return 0
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.counts {
		if c.pool == pool {
			n += c.n
		}
	}
	return int32(n)
}
