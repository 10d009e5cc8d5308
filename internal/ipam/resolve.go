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

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/netutil"
)

// PoolAnnotation on an IPClaim names the pool its prefix came from; kipam
// sets it at admission, so that claims by selector know their pool too.
const PoolAnnotation = "ipam.kipam.dev/pool"

var specPath = field.NewPath("spec")

// Resolver finds the pools a claim may draw from.
type Resolver struct {
	// Reader reads pools and namespaces (a cache is fine).
	Reader client.Reader
	// APIReader reads the API server, for a pool created a moment ago.
	APIReader client.Reader
}

// Candidates returns the pools a claim in namespace may allocate from, in
// the order to try them: the named pool, or every pool matching the selector
// and family, by name. A pool the namespace may not use is reported exactly
// like one that does not exist, so tenants learn nothing of each other.
func (r *Resolver) Candidates(ctx context.Context, claim *ipamv1alpha1.IPClaim, namespace string) ([]*ipamv1alpha1.IPPool, error) {
	nsLabels, err := r.namespaceLabels(ctx, namespace)
	if err != nil {
		return nil, err
	}
	if name := claim.Spec.Pool; name != "" {
		var pool ipamv1alpha1.IPPool
		err := r.Reader.Get(ctx, client.ObjectKey{Name: name}, &pool)
		if apierrors.IsNotFound(err) && r.APIReader != nil {
			err = r.APIReader.Get(ctx, client.ObjectKey{Name: name}, &pool)
		}
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("reading pool %s: %w", name, err)
		case !admits(&pool, nsLabels):
		case pool.DeletionTimestamp != nil:
			return nil, field.Forbidden(specPath.Child("pool"), fmt.Sprintf("pool %s is being deleted: it takes no new claims", name))
		case Overlaps(&pool):
			return nil, field.Forbidden(specPath.Child("pool"), fmt.Sprintf("pool %s overlaps another pool that kipam recorded first "+
				"(see its Overlapping condition): it takes no new claims until one of them is deleted", name))
		default:
			return []*ipamv1alpha1.IPPool{&pool}, nil
		}
		return nil, field.NotFound(specPath.Child("pool"), fmt.Sprintf("%s (no such pool is open to namespace %s)", name, namespace))
	}
	sel, err := metav1.LabelSelectorAsSelector(claim.Spec.PoolSelector)
	if err != nil {
		return nil, field.Invalid(specPath.Child("poolSelector"), claim.Spec.PoolSelector, err.Error())
	}
	// The API server's view, not the cache's: the choice among pools must
	// not depend on how far a cache has caught up. Pools are few.
	reader := r.Reader
	if r.APIReader != nil {
		reader = r.APIReader
	}
	var pools ipamv1alpha1.IPPoolList
	if err := reader.List(ctx, &pools, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("listing pools: %w", err)
	}
	family := ClaimFamily(claim)
	var out []*ipamv1alpha1.IPPool
	for i := range pools.Items {
		p := &pools.Items[i]
		prefix, err := netip.ParsePrefix(p.Spec.CIDR)
		if err != nil || p.DeletionTimestamp != nil || netutil.Family(prefix.Addr()) != string(family) || !admits(p, nsLabels) || Overlaps(p) {
			continue
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, field.Invalid(specPath.Child("poolSelector"), sel.String(),
			fmt.Sprintf("no %s pool matching the selector is open to namespace %s", family, namespace))
	}
	slices.SortFunc(out, func(a, b *ipamv1alpha1.IPPool) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (r *Resolver) namespaceLabels(ctx context.Context, namespace string) (labels.Set, error) {
	var ns corev1.Namespace
	err := r.Reader.Get(ctx, client.ObjectKey{Name: namespace}, &ns)
	if apierrors.IsNotFound(err) && r.APIReader != nil {
		// A namespace created a moment ago may not be cached yet.
		err = r.APIReader.Get(ctx, client.ObjectKey{Name: namespace}, &ns)
	}
	switch {
	case apierrors.IsNotFound(err):
		return labels.Set{}, nil
	case err != nil:
		return nil, fmt.Errorf("reading namespace %s: %w", namespace, err)
	}
	return ns.Labels, nil
}

// Overlaps reports whether pool could not be recorded in its parent for
// an overlap with another pool (a pool from before kipam recorded pools):
// it hands out nothing, or the two could hand out the same address.
func Overlaps(pool *ipamv1alpha1.IPPool) bool {
	c := meta.FindStatusCondition(pool.Status.Conditions, ipamv1alpha1.ConditionOverlapping)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == ipamv1alpha1.ReasonOverlap
}

func admits(pool *ipamv1alpha1.IPPool, nsLabels labels.Set) bool {
	if pool.Spec.NamespaceSelector == nil {
		return true
	}
	sel, err := metav1.LabelSelectorAsSelector(pool.Spec.NamespaceSelector)
	return err == nil && sel.Matches(nsLabels)
}

// ClaimFamily is the family a claim asks for: ipFamily, else that of cidr.
func ClaimFamily(claim *ipamv1alpha1.IPClaim) ipamv1alpha1.IPFamily {
	if claim.Spec.IPFamily != "" {
		return claim.Spec.IPFamily
	}
	if p, err := netip.ParsePrefix(claim.Spec.CIDR); err == nil {
		return ipamv1alpha1.IPFamily(netutil.Family(p.Addr()))
	}
	return ""
}

// RequestFor checks a claim against one pool and returns the request to
// make of it, or a field error saying why the claim does not fit the pool.
func RequestFor(claim *ipamv1alpha1.IPClaim, pool *ipamv1alpha1.IPPool, holder string, dryRun bool) (Request, error) {
	prefix, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return Request{}, field.Invalid(specPath.Child("pool"), pool.Name, "the pool has no usable cidr yet")
	}
	family := netutil.Family(prefix.Addr())
	if f := claim.Spec.IPFamily; f != "" && string(f) != family {
		return Request{}, field.Invalid(specPath.Child("ipFamily"), f, fmt.Sprintf("pool %s is %s", pool.Name, family))
	}
	req := Request{Pool: pool, Holder: holder, DryRun: dryRun, Bits: DefaultBits(pool)}
	if Retains(pool) {
		req.Sticky = IdentityOf(claim)
	}
	maxBits := prefix.Addr().BitLen()
	if claim.Spec.PrefixLength != nil {
		req.Bits = int(*claim.Spec.PrefixLength)
	}
	if claim.Spec.CIDR != "" {
		p, err := netutil.ParsePrefix(claim.Spec.CIDR)
		if err != nil {
			return Request{}, field.Invalid(specPath.Child("cidr"), claim.Spec.CIDR, err.Error())
		}
		if netutil.Family(p.Addr()) != family {
			return Request{}, field.Invalid(specPath.Child("cidr"), claim.Spec.CIDR, fmt.Sprintf("pool %s is %s", pool.Name, family))
		}
		if p.Bits() < prefix.Bits() && p.Contains(prefix.Addr()) {
			return Request{}, field.Invalid(specPath.Child("cidr"), claim.Spec.CIDR,
				fmt.Sprintf("is larger than pool %s (%s), which holds it whole at most", pool.Name, prefix))
		}
		if p.Bits() < prefix.Bits() || !prefix.Contains(p.Addr()) {
			return Request{}, field.Invalid(specPath.Child("cidr"), claim.Spec.CIDR, fmt.Sprintf("lies outside pool %s (%s)", pool.Name, prefix))
		}
		req.CIDR, req.Bits = p, p.Bits()
		return req, nil
	}
	if req.Bits < prefix.Bits() || req.Bits > maxBits {
		return Request{}, field.Invalid(specPath.Child("prefixLength"), req.Bits,
			fmt.Sprintf("must lie between /%d (the size of pool %s, %s) and /%d", prefix.Bits(), pool.Name, prefix, maxBits))
	}
	return req, nil
}

// ClaimError turns an allocator error for a claim into a field error that
// says what the user can do about it. Exhaustion is reported by the caller.
func ClaimError(err error, req Request) error {
	path := specPath.Child("cidr")
	var value any = req.CIDR.String()
	if !req.CIDR.IsValid() {
		path, value = specPath.Child("prefixLength"), req.Bits
	}
	var kept *RetainedError
	switch {
	case errors.As(err, &kept):
		return field.Invalid(path, value, fmt.Sprintf("is retained in pool %s for %s/%s, which released %s, until %s (the pool's spec.retainReleased)",
			req.Pool.Name, kept.Release.Namespace, kept.Release.Identity, kept.Prefix, kept.Release.Until.UTC().Format(time.RFC3339)))
	case errors.Is(err, allocator.ErrOverlap):
		return field.Invalid(path, value, fmt.Sprintf("is already allocated in pool %s (in whole or in part)", req.Pool.Name))
	case errors.Is(err, allocator.ErrReserved):
		return field.Invalid(path, value, fmt.Sprintf("overlaps space reserved in pool %s", req.Pool.Name))
	case errors.Is(err, allocator.ErrHeld):
		return field.Invalid(path, value, fmt.Sprintf("was released recently and is held for pool %s's reuse grace period; retry later or ask for another", req.Pool.Name))
	case errors.Is(err, allocator.ErrOutsidePool), errors.Is(err, allocator.ErrWrongFamily), errors.Is(err, allocator.ErrNotCanonical), errors.Is(err, allocator.ErrInvalidLength):
		return field.Invalid(path, value, err.Error())
	}
	return err
}
