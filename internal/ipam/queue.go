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
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
)

// Claims that wait for space (whenExhausted: Wait) queue per namespace:
// a claim is served before any later claim of its namespace that draws on
// the same pools, Wait or Deny, and never waits for another namespace's.

// IndexWaiting is the field index, registered on the manager's cache,
// that is "true" on claims that wait for space.
const IndexWaiting = "kipam.waiting"

// Waiting reports whether o is a claim that waits for space: it has no
// cidr yet and is not being deleted.
func Waiting(o client.Object) bool {
	switch c := o.(type) {
	case *ipamv1alpha1.IPClaim:
		return c.Spec.CIDR == "" && c.DeletionTimestamp == nil
	case *ClaimRecord:
		return c.cidr() == "" && c.deleted() == 0
	}
	return false
}

// WaitingIndex is IndexWaiting's function.
func WaitingIndex(o client.Object) []string {
	if Waiting(o) {
		return []string{"true"}
	}
	return nil
}

// ErrNeverFits is wrapped by NeverFits's answer.
var ErrNeverFits = errors.New("can never fit")

// SameQueue reports whether two claims draw on the same pools: the same
// spec.pool, or, both by selector, the same family. A dual-stack claim
// draws on the pools of each of its families.
func SameQueue(a, b *ipamv1alpha1.IPClaim) bool {
	for _, x := range queues(a) {
		for _, y := range queues(b) {
			if x.pool != "" || y.pool != "" {
				if x.pool == y.pool {
					return true
				}
				continue
			}
			if x.family == y.family {
				return true
			}
		}
	}
	return false
}

// queue is what a claim draws on: a named pool, or, by selector, the
// pools of a family.
type queue struct {
	pool   string
	family ipamv1alpha1.IPFamily
}

// queues lists what claim draws on, one queue per family.
func queues(claim *ipamv1alpha1.IPClaim) []queue {
	if !DualStack(claim) {
		return []queue{{claim.Spec.Pool, ClaimFamily(claim)}}
	}
	out := make([]queue, 0, len(claim.Spec.IPFamilies))
	for i, f := range claim.Spec.IPFamilies {
		q := queue{family: f}
		if i < len(claim.Spec.Pools) {
			q.pool = claim.Spec.Pools[i]
		}
		out = append(out, q)
	}
	return out
}

// Queued reports whether a waiting claim holds its place in its
// namespace's queue: it is not marked as never fitting its pools.
func Queued(c *ipamv1alpha1.IPClaim) bool {
	cond := meta.FindStatusCondition(c.Status.Conditions, ipamv1alpha1.ConditionReady)
	return cond == nil || cond.Reason != ipamv1alpha1.ReasonNeverFits
}

// Ahead returns the waiting claims of claim's namespace, as r (a cache with
// IndexWaiting) holds them, that are queued ahead of it: older, drawing on
// the same pools, and not marked as never fitting. A claim being created
// has no creation time yet: every waiting claim is ahead of it.
func Ahead(ctx context.Context, r client.Reader, claim *ipamv1alpha1.IPClaim, namespace string) ([]ipamv1alpha1.IPClaim, error) {
	var waiting ipamv1alpha1.IPClaimList
	if err := r.List(ctx, &waiting, client.InNamespace(namespace), client.MatchingFields{IndexWaiting: "true"}); err != nil {
		return nil, err
	}
	var out []ipamv1alpha1.IPClaim
	for i := range waiting.Items {
		o := &waiting.Items[i]
		if o.UID == claim.UID || !SameQueue(o, claim) || !Queued(o) {
			continue
		}
		if claim.CreationTimestamp.IsZero() || o.CreationTimestamp.Before(&claim.CreationTimestamp) ||
			(o.CreationTimestamp.Equal(&claim.CreationTimestamp) && o.Name < claim.Name) {
			out = append(out, *o)
		}
	}
	slices.SortFunc(out, func(a, b ipamv1alpha1.IPClaim) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

// NeverFits says why req can never be served by its pool, however much of
// it is released: its prefix is reserved or excluded, its size is larger
// than any block the pool's reserved and excluded space leaves, or larger
// than the pool's spec.namespaceLimit.addressSpace lets one namespace hold.
// nil when it can fit.
func NeverFits(req Request) error {
	pool := req.Pool
	if lim := pool.Spec.NamespaceLimit; lim != nil && lim.AddressSpace != nil && req.Bits < int(*lim.AddressSpace) && isClaim(Entry{Holder: req.Holder}) {
		return fmt.Errorf("%w: a /%d is more than pool %s's spec.namespaceLimit.addressSpace lets one namespace hold (a /%d)",
			ErrNeverFits, req.Bits, pool.Name, *lim.AddressSpace)
	}
	// The clock decides only when holds expire, and this ledger has none.
	a, err := Build(pool, &Ledger{Allocations: map[netip.Prefix]Entry{}, Holds: map[netip.Prefix]time.Time{}}, time.Now)
	if err != nil {
		return nil // the pool's own trouble is reported elsewhere
	}
	if req.CIDR.IsValid() {
		if err := a.Allocate(req.CIDR); errors.Is(err, allocator.ErrReserved) {
			return fmt.Errorf("%w: %s overlaps space reserved or excluded in pool %s", ErrNeverFits, req.CIDR, pool.Name)
		}
		return nil
	}
	if lf := a.Usage().LargestFree; lf < 0 || lf > req.Bits {
		largest := "no address at all"
		if lf >= 0 {
			largest = fmt.Sprintf("a /%d", lf)
		}
		return fmt.Errorf("%w: the largest block that pool %s's reserved and excluded space leaves is %s, so a /%d never fits",
			ErrNeverFits, pool.Name, largest, req.Bits)
	}
	return nil
}
