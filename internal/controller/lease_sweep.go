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
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// LeaseSweepInterval is how often the leader deletes the Leases of pools
// that no longer exist. A pool's finalizer deletes its Lease; the sweep
// catches the rest: Leases left before kipam did that, a pool whose
// finalizer was removed by hand, a Lease taken again by a request still in
// flight when its pool went.
const LeaseSweepInterval = 10 * time.Minute

// leaseSweep deletes, when its replica becomes the leader and every
// interval after, the pool Leases in namespace whose pool does not exist.
// The address spaces have no IPPool: their Leases stay.
type leaseSweep struct {
	// Client lists the pools from the cache and deletes Leases.
	Client client.Client
	// APIReader lists the Leases (which kipam does not cache) and confirms
	// that a pool the cache lacks is gone.
	APIReader client.Reader
	Namespace string
	Interval  time.Duration
}

// NeedLeaderElection is true: one replica sweeps.
func (s *leaseSweep) NeedLeaderElection() bool { return true }

// Start sweeps at once, then every interval until ctx ends.
func (s *leaseSweep) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("lease-sweep")
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		n, err := s.sweep(ctx)
		if err != nil {
			log.Error(err, "could not delete every Lease of a deleted pool; trying again at the next sweep", "deleted", n)
		} else if n > 0 {
			log.Info("deleted the Leases of deleted pools", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweep deletes the Leases of pools that no longer exist, each on the
// condition that it is the Lease listed, and returns how many it deleted.
func (s *leaseSweep) sweep(ctx context.Context) (int, error) {
	var leases coordinationv1.LeaseList
	if err := s.APIReader.List(ctx, &leases, client.InNamespace(s.Namespace)); err != nil {
		return 0, fmt.Errorf("listing the Leases in %s: %w", s.Namespace, err)
	}
	var pools ipamv1alpha1.IPPoolList
	if err := s.Client.List(ctx, &pools); err != nil {
		return 0, fmt.Errorf("listing the pools: %w", err)
	}
	live := make(map[string]bool, len(pools.Items))
	for i := range pools.Items {
		live[pools.Items[i].Name] = true
	}
	var (
		n    int
		errs []error
	)
	for i := range leases.Items {
		l := &leases.Items[i]
		pool, ok := ipam.PoolOfLease(l.Name)
		if !ok || ipam.IsSpace(pool) || live[pool] {
			continue
		}
		// The cache may lag behind a pool created a moment ago.
		err := s.APIReader.Get(ctx, client.ObjectKey{Name: pool}, &ipamv1alpha1.IPPool{})
		if !apierrors.IsNotFound(err) {
			if err != nil {
				errs = append(errs, fmt.Errorf("reading pool %s: %w", pool, err))
			}
			continue
		}
		// A Lease renewed since the list fails the precondition and waits
		// for the next sweep; deleting it would only cost its owner a
		// re-acquire.
		err = s.Client.Delete(ctx, l, client.Preconditions{UID: &l.UID, ResourceVersion: &l.ResourceVersion})
		switch {
		case err == nil:
			n++
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		default:
			errs = append(errs, fmt.Errorf("deleting Lease %s of deleted pool %s: %w", l.Name, pool, err))
		}
	}
	return n, errors.Join(errs...)
}
