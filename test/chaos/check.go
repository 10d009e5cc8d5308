//go:build chaos

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

package chaos

import (
	"context"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/inspect"
)

// checkGrace is how old a state kipam repairs on its own (an entry no
// claim carries yet, an IPAllocation not created or released yet) must be
// before the cluster check reports it: the orphan grace, plus what a
// loaded machine needs to sweep.
var checkGrace time.Duration

// clusterProblems is the cluster-state half of the end check: every live
// claim has exactly one IPAllocation and one ledger entry, every ledger
// entry and IPAllocation belongs to a live claim or pool, no two entries
// or objects overlap, and each pool's status equals a recount of its
// ledgers. It is inspect.Check, the check kubectl kipam check runs, read
// from the API server; states kipam repairs on its own are reported once
// older than checkGrace.
func clusterProblems(ctx context.Context, c client.Reader) ([]string, error) {
	cluster, err := inspect.Load(ctx, c)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range cluster.Check(time.Now(), checkGrace) {
		out = append(out, p.String())
	}
	return out, nil
}

// clientProblems checks what the clients were told against what the
// cluster stores, once everything has settled: every claim a client holds
// exists with the prefix it was told, none it deleted still exists, and no
// claim or pool is stuck being deleted.
func clientProblems(ctx context.Context, c client.Reader, hist *history) ([]string, error) {
	var claims ipamv1alpha1.IPClaimList
	if err := c.List(ctx, &claims); err != nil {
		return nil, err
	}
	var pools ipamv1alpha1.IPPoolList
	if err := c.List(ctx, &pools); err != nil {
		return nil, err
	}
	return clientProblemsIn(claims.Items, pools.Items, hist.snapshot()), nil
}

// clientProblemsIn is clientProblems over the claims and pools stored and
// the records of what clients were told.
func clientProblemsIn(claims []ipamv1alpha1.IPClaim, pools []ipamv1alpha1.IPPool, records []record) []string {
	var out []string
	told := map[string]bool{}
	for _, r := range records {
		told[key(r.Kind, r.Object, r.UID)] = true
	}
	stored := map[string]ipamv1alpha1.IPClaim{}
	for _, cl := range claims {
		stored[cl.Namespace+"/"+cl.Name] = cl
		if cl.DeletionTimestamp != nil {
			out = append(out, fmt.Sprintf("claim %s/%s is stuck being deleted since %s (finalizers %v)",
				cl.Namespace, cl.Name, cl.DeletionTimestamp.Format(time.RFC3339), cl.Finalizers))
		}
		if !told[key("IPClaim", cl.Namespace+"/"+cl.Name, string(cl.UID))] {
			out = append(out, fmt.Sprintf("claim %s/%s (uid %s, %s) exists but no client was ever told of it", cl.Namespace, cl.Name, cl.UID, cl.Spec.CIDR))
		}
	}
	for _, p := range pools {
		if p.DeletionTimestamp != nil {
			out = append(out, fmt.Sprintf("pool %s is stuck being deleted since %s (finalizers %v)",
				p.Name, p.DeletionTimestamp.Format(time.RFC3339), p.Finalizers))
		}
	}
	for _, r := range records {
		if r.Kind != "IPClaim" {
			continue
		}
		cl, ok := stored[r.Object]
		if ok && string(cl.UID) != r.UID {
			// Another claim of this name: the API server generates a name
			// again once the claim that had it is gone (27^5 names; in
			// a long run a few thousand claims a namespace come and go).
			// That claim has its own record; this one's is only wrong if
			// the client still holds it.
			if r.End.IsZero() {
				out = append(out, fmt.Sprintf("claim %s has uid %s, the client holds uid %s", r.Object, cl.UID, r.UID))
			}
			continue
		}
		switch {
		case r.End.IsZero() && !ok:
			out = append(out, fmt.Sprintf("claim %s (%s) is gone, though no client deleted it", r.Object, r.CIDR))
		case r.End.IsZero() && cl.Spec.CIDR != r.CIDR.String():
			out = append(out, fmt.Sprintf("claim %s holds %s, the client was told %s", r.Object, cl.Spec.CIDR, r.CIDR))
		case !r.End.IsZero() && ok && cl.DeletionTimestamp == nil:
			out = append(out, fmt.Sprintf("claim %s still exists, not being deleted, though its delete was accepted", r.Object))
		}
	}
	return out
}

// deleting counts the claims and pools being deleted.
func deleting(ctx context.Context, c client.Reader) (int, error) {
	var claims ipamv1alpha1.IPClaimList
	if err := c.List(ctx, &claims); err != nil {
		return 0, err
	}
	var pools ipamv1alpha1.IPPoolList
	if err := c.List(ctx, &pools); err != nil {
		return 0, err
	}
	n := 0
	for _, c := range claims.Items {
		if c.DeletionTimestamp != nil {
			n++
		}
	}
	for _, p := range pools.Items {
		if p.DeletionTimestamp != nil {
			n++
		}
	}
	return n, nil
}

// discover records every claim and pool in the cluster that no client was
// told of (a create whose answer was lost and that the lookup missed),
// as told now, so that they are checked like the rest.
func (d *driver) discover(ctx context.Context) (int, error) {
	var claims ipamv1alpha1.IPClaimList
	if err := d.c.List(ctx, &claims); err != nil {
		return 0, err
	}
	n := 0
	for i := range claims.Items {
		cl := &claims.Items[i]
		if cl.DeletionTimestamp != nil || d.hist.lookup("IPClaim", cl.Namespace+"/"+cl.Name, string(cl.UID)) != nil {
			continue
		}
		if _, err := d.toldClaim(cl, &op{id: cl.Labels[opLabel]}, "discovered"); err != nil {
			return n, err
		}
		n++
	}
	var pools ipamv1alpha1.IPPoolList
	if err := d.c.List(ctx, &pools); err != nil {
		return n, err
	}
	for i := range pools.Items {
		p := &pools.Items[i]
		if p.DeletionTimestamp != nil || d.hist.lookup("IPPool", p.Name, string(p.UID)) != nil {
			continue
		}
		if _, err := d.toldPool(p, &op{id: p.Labels[opLabel]}, "discovered"); err != nil {
			return n, err
		}
		n++
		// A carved pool nobody knew of: delete it, as its churner would have.
		r := d.hist.lookup("IPPool", p.Name, string(p.UID))
		if r != nil && p.Spec.ParentPool != "" && d.pools[p.Name] == nil {
			_ = d.deletePool(ctx, r)
		}
	}
	return n, nil
}
