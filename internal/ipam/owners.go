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
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// AddressAnnotation on a pool's Lease is where its owner takes forwarded
// requests (host:port of its webhook server).
const AddressAnnotation = "ipam.kipam.dev/address"

// DefaultLeaseDuration is how long a pool's owner holds it without renewing.
const DefaultLeaseDuration = 15 * time.Second

// Owners gives each pool one owning replica, through a coordination Lease
// per pool, so that replicas behind one webhook Service do not race on the
// same ledgers. It only routes: correctness rests on the ledgers'
// compare-and-swap, so a replica that wrongly believes it owns a pool (a
// clock gone wrong, a process frozen past its lease) loses races, never
// hands out a prefix twice; and a request that cannot reach the owner is
// served where it arrived.
type Owners struct {
	// Client reads and writes Leases on the API server (not a cache).
	Client client.Client
	// Namespace holds the Leases.
	Namespace string
	// Identity names this replica; unique among replicas.
	Identity string
	// Address is where peers reach this replica (host:port).
	Address string
	// Duration is the Lease duration (DefaultLeaseDuration when 0).
	Duration time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Lost, when set, is called for a pool whose Lease another replica
	// took from this one.
	Lost func(pool string)

	mu sync.Mutex
	// owned are the Leases this replica holds, as last written.
	owned map[string]*coordinationv1.Lease
	// remote are other replicas' Leases as last read, until they expire
	// by this replica's clock.
	remote map[string]*coordinationv1.Lease
}

// leasePrefix begins the name of every pool's Lease.
const leasePrefix = "kipam-pool-"

// LeaseName is the name of pool's Lease.
func LeaseName(pool string) string { return leasePrefix + pool }

// PoolOfLease is the pool whose Lease is named lease, and false for any
// other Lease.
func PoolOfLease(lease string) (string, bool) {
	pool, ok := strings.CutPrefix(lease, leasePrefix)
	return pool, ok && pool != ""
}

// DeleteLease deletes pool's Lease in namespace, if there is one, on the
// condition that it is still the Lease r read: one renewed meanwhile fails
// with Conflict, for the caller to retry. A live owner whose Lease goes
// only has to take it again (Renew drops it on NotFound); the ledgers
// fence, not the Lease.
func DeleteLease(ctx context.Context, r client.Reader, w client.Writer, namespace, pool string) error {
	var l coordinationv1.Lease
	if err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: LeaseName(pool)}, &l); err != nil {
		return client.IgnoreNotFound(err)
	}
	return client.IgnoreNotFound(w.Delete(ctx, &l, client.Preconditions{UID: &l.UID, ResourceVersion: &l.ResourceVersion}))
}

func (o *Owners) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Owners) duration() time.Duration {
	if o.Duration > 0 {
		return o.Duration
	}
	return DefaultLeaseDuration
}

// expired reports whether l lapsed by this replica's clock.
func (o *Owners) expired(l *coordinationv1.Lease) bool {
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || l.Spec.RenewTime == nil {
		return true
	}
	d := o.duration()
	if l.Spec.LeaseDurationSeconds != nil {
		d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return !l.Spec.RenewTime.Add(d).After(o.now())
}

// Owner returns the address of the live replica that owns pool, or "" when
// this replica owns it (taking the Lease if it is free or lapsed).
func (o *Owners) Owner(ctx context.Context, pool string) string {
	o.mu.Lock()
	if l, ok := o.owned[pool]; ok && !o.expired(l) {
		o.mu.Unlock()
		return ""
	}
	if l, ok := o.remote[pool]; ok && !o.expired(l) {
		o.mu.Unlock()
		return l.Annotations[AddressAnnotation]
	}
	o.mu.Unlock()
	// Read and take the Lease without the lock, so that other pools'
	// requests are not held up behind the API server.
	addr, err := o.acquire(ctx, pool)
	if err != nil {
		// Routing is an optimisation: serve here, the ledger fences.
		logf.FromContext(ctx).V(1).Info("could not settle the pool's owner; serving it here", "pool", pool, "err", err)
		return ""
	}
	return addr
}

// acquire reads pool's Lease and takes it when free or lapsed. It returns
// the live owner's address, or "" when this replica now holds it.
func (o *Owners) acquire(ctx context.Context, pool string) (string, error) {
	var l coordinationv1.Lease
	err := o.Client.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: LeaseName(pool)}, &l)
	switch {
	case apierrors.IsNotFound(err):
		l = coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: LeaseName(pool)}}
		o.hold(&l)
		if err := o.Client.Create(ctx, &l); err != nil {
			return "", err
		}
	case err != nil:
		return "", err
	case !o.expired(&l) && ptr.Deref(l.Spec.HolderIdentity, "") != o.Identity:
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.remote == nil {
			o.remote = map[string]*coordinationv1.Lease{}
		}
		o.remote[pool] = &l
		return l.Annotations[AddressAnnotation], nil
	default:
		o.hold(&l)
		if err := o.Client.Update(ctx, &l); err != nil {
			return "", err
		}
	}
	o.own(pool, &l)
	return "", nil
}

// own records that this replica holds pool's Lease l, as just written.
func (o *Owners) own(pool string, l *coordinationv1.Lease) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.owned == nil {
		o.owned = map[string]*coordinationv1.Lease{}
	}
	o.owned[pool] = l
	delete(o.remote, pool)
}

// TakeOver is told that pool's owner at addr refused a connection:
// nothing listens there, so that replica is gone (killed, or not serving
// yet after a restart). Rather than let every request try it and serve
// where it arrived until the Lease lapses (a full Lease duration, with
// every replica building the pool cold and racing the others on its
// ledgers), this replica takes the Lease over at once, if it still names
// that owner: an update on the Lease as just read, so a Lease renewed or
// taken meanwhile stays where it is. It reports whether this replica now
// owns the pool. Like all routing it is only an optimisation: an owner
// that is alive after all learns at its next renewal that it lost the
// pool, and until then the ledgers fence the two.
func (o *Owners) TakeOver(ctx context.Context, pool, addr string) bool {
	o.mu.Lock()
	delete(o.remote, pool) // read it again, whatever happens here
	o.mu.Unlock()
	var l coordinationv1.Lease
	if err := o.Client.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: LeaseName(pool)}, &l); err != nil {
		return false
	}
	holder := ptr.Deref(l.Spec.HolderIdentity, "")
	if holder == "" || holder == o.Identity || l.Annotations[AddressAnnotation] != addr {
		return false // moved on since; the next request reads it again
	}
	o.hold(&l)
	if err := o.Client.Update(ctx, &l); err != nil {
		return false
	}
	o.own(pool, &l)
	return true
}

// hold makes l this replica's, renewed now.
func (o *Owners) hold(l *coordinationv1.Lease) {
	now := metav1.NewMicroTime(o.now())
	if ptr.Deref(l.Spec.HolderIdentity, "") != o.Identity {
		l.Spec.AcquireTime = &now
		l.Spec.LeaseTransitions = ptr.To(ptr.Deref(l.Spec.LeaseTransitions, 0) + 1)
	}
	l.Spec.HolderIdentity = ptr.To(o.Identity)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(o.duration() / time.Second))
	l.Spec.RenewTime = &now
	metav1.SetMetaDataAnnotation(&l.ObjectMeta, AddressAnnotation, o.Address)
}

// Renew renews every Lease this replica holds. A Lease it lost (another
// replica took it after it lapsed) is dropped, and Lost is called for its
// pool.
func (o *Owners) Renew(ctx context.Context) {
	o.mu.Lock()
	held := make(map[string]*coordinationv1.Lease, len(o.owned))
	for pool, l := range o.owned {
		held[pool] = l.DeepCopy()
	}
	o.mu.Unlock()
	for pool, l := range held {
		o.hold(l)
		err := o.Client.Update(ctx, l)
		o.mu.Lock()
		switch {
		case err == nil:
			o.owned[pool] = l
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			delete(o.owned, pool)
		}
		o.mu.Unlock()
		if (apierrors.IsConflict(err) || apierrors.IsNotFound(err)) && o.Lost != nil {
			o.Lost(pool)
		}
	}
}

// Start renews this replica's Leases until ctx ends, then gives them up so
// that other replicas take over at once.
func (o *Owners) Start(ctx context.Context) error {
	t := time.NewTicker(o.duration() / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			o.giveUp()
			return nil
		case <-t.C:
			o.Renew(ctx)
		}
	}
}

// giveUp clears the holder of every Lease this replica holds.
func (o *Owners) giveUp() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o.mu.Lock()
	defer o.mu.Unlock()
	for pool, l := range o.owned {
		next := l.DeepCopy()
		next.Spec.HolderIdentity = nil
		next.Spec.RenewTime = nil
		if err := o.Client.Update(ctx, next); err != nil {
			logf.FromContext(ctx).V(1).Info("could not give up a pool's lease", "pool", pool, "err", err)
		}
		delete(o.owned, pool)
	}
}

// NeedLeaderElection is false: every replica serves the pools it owns.
func (o *Owners) NeedLeaderElection() bool { return false }
