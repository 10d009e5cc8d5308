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

package v1alpha1

import (
	"context"
	"fmt"
	"math/big"
	"net/netip"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/netutil"
)

// +kubebuilder:webhook:path=/mutate-ipam-kipam-dev-v1alpha1-ippool,mutating=true,failurePolicy=fail,sideEffects=None,groups=ipam.kipam.dev,resources=ippools,verbs=create;update,versions=v1alpha1,name=mippool-v1alpha1.kb.io,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-ipam-kipam-dev-v1alpha1-ippool,mutating=false,failurePolicy=fail,sideEffects=None,groups=ipam.kipam.dev,resources=ippools,verbs=create;update,versions=v1alpha1,name=vippool-v1alpha1.kb.io,admissionReviewVersions=v1

// IPPoolValidator checks what the IPPool schema cannot: that reserved space
// lies inside the pool, that exclusions fit, and that the pool overlaps no
// other pool except its own ancestors.
type IPPoolValidator struct {
	// Reader lists the other pools. The API server's own view is wanted
	// here, not a cache, so that a pool created a moment ago is seen.
	Reader client.Reader
}

var _ admission.Validator[*ipamv1alpha1.IPPool] = &IPPoolValidator{}

// IPPoolDefaulter keeps a pool's drain finalizer on it from its creation
// until it is deleted: kipam serves no pool without it (a pool deleted
// without it would go at once, its claims' prefixes still held), and an
// update that drops it (kubectl replace or a GitOps apply of a manifest
// without it) gets it back. kipam itself removes it only from a pool being
// deleted, once the pool is drained.
type IPPoolDefaulter struct{}

var _ admission.Defaulter[*ipamv1alpha1.IPPool] = IPPoolDefaulter{}

// Default adds the drain finalizer to a pool not being deleted.
func (IPPoolDefaulter) Default(_ context.Context, pool *ipamv1alpha1.IPPool) error {
	if pool.DeletionTimestamp == nil {
		controllerutil.AddFinalizer(pool, ipamv1alpha1.PoolFinalizer)
	}
	return nil
}

// SetupIPPoolWebhookWithManager registers the IPPool webhooks.
func SetupIPPoolWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &ipamv1alpha1.IPPool{}).
		WithDefaulter(IPPoolDefaulter{}).
		WithValidator(&IPPoolValidator{Reader: mgr.GetAPIReader()}).
		Complete()
}

// ValidateCreate validates a new pool.
func (v *IPPoolValidator) ValidateCreate(ctx context.Context, pool *ipamv1alpha1.IPPool) (admission.Warnings, error) {
	if pool.Spec.ParentPool != "" {
		return nil, invalid("IPPool", pool.Name, field.ErrorList{field.Forbidden(field.NewPath("spec", "parentPool"),
			"child pools are not carved from their parent yet: a child and its parent would hand out the same addresses; "+
				"create the pool with a cidr that overlaps no other pool")})
	}
	errs := validatePoolSpec(pool)
	if len(errs) == 0 && pool.Spec.CIDR != "" {
		overlap, err := v.validateNoOverlap(ctx, pool)
		if err != nil {
			return nil, err
		}
		errs = append(errs, overlap...)
	}
	return nil, invalid("IPPool", pool.Name, errs)
}

// ValidateUpdate validates a changed pool. Its address space is immutable,
// so only the reserved list and exclusions need checking again.
func (v *IPPoolValidator) ValidateUpdate(ctx context.Context, old, pool *ipamv1alpha1.IPPool) (admission.Warnings, error) {
	if old.Spec.CIDR == "" && pool.Spec.CIDR != "" {
		return nil, invalid("IPPool", pool.Name, field.ErrorList{field.Forbidden(field.NewPath("spec", "cidr"),
			"a pool's cidr is set when it is created, never later: no overlap with other pools is checked on update")})
	}
	return nil, invalid("IPPool", pool.Name, validatePoolSpec(pool))
}

// ValidateDelete allows every delete; the pool's finalizer holds it until
// nothing is allocated from it.
func (v *IPPoolValidator) ValidateDelete(context.Context, *ipamv1alpha1.IPPool) (admission.Warnings, error) {
	return nil, nil
}

// validatePoolSpec checks the pool against itself.
func validatePoolSpec(pool *ipamv1alpha1.IPPool) field.ErrorList {
	spec := field.NewPath("spec")
	if pool.Spec.CIDR == "" {
		return nil // carved from the parent at creation; checked then
	}
	prefix, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return field.ErrorList{field.Invalid(spec.Child("cidr"), pool.Spec.CIDR, err.Error())}
	}
	var errs field.ErrorList
	for i, s := range pool.Spec.Reserved {
		path := spec.Child("reserved").Index(i)
		r, err := netutil.ParseRange(s)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(path, s, err.Error()))
		case r.From().Is4() != prefix.Addr().Is4():
			errs = append(errs, field.Invalid(path, s, fmt.Sprintf("is %s but the pool is %s",
				netutil.Family(r.From()), netutil.Family(prefix.Addr()))))
		case !prefix.Contains(r.From()) || !prefix.Contains(r.To()):
			errs = append(errs, field.Invalid(path, s, fmt.Sprintf("lies outside the pool %s", prefix)))
		}
	}
	excluded := new(big.Int).Add(big.NewInt(pool.Spec.ExcludeFirst), big.NewInt(pool.Spec.ExcludeLast))
	if size := netutil.Size(prefix); excluded.Cmp(size) > 0 {
		errs = append(errs, field.Invalid(spec.Child("excludeFirst"), pool.Spec.ExcludeFirst,
			fmt.Sprintf("excludeFirst + excludeLast = %s exceeds the pool's %s addresses", excluded, size)))
	}
	return errs
}

// validateNoOverlap denies a pool whose prefix overlaps another pool's,
// unless that pool is one of its ancestors through parentPool.
func (v *IPPoolValidator) validateNoOverlap(ctx context.Context, pool *ipamv1alpha1.IPPool) (field.ErrorList, error) {
	prefix, _ := netutil.ParsePrefix(pool.Spec.CIDR)
	var pools ipamv1alpha1.IPPoolList
	if err := v.Reader.List(ctx, &pools); err != nil {
		return nil, fmt.Errorf("listing pools: %w", err)
	}
	byName := make(map[string]*ipamv1alpha1.IPPool, len(pools.Items))
	for i := range pools.Items {
		byName[pools.Items[i].Name] = &pools.Items[i]
	}
	ancestors := map[string]bool{}
	for name := pool.Spec.ParentPool; name != "" && !ancestors[name]; {
		ancestors[name] = true
		if p := byName[name]; p != nil {
			name = p.Spec.ParentPool
		} else {
			name = ""
		}
	}
	var errs field.ErrorList
	path := field.NewPath("spec", "cidr")
	if parent := pool.Spec.ParentPool; parent != "" {
		p := byName[parent]
		if p == nil {
			errs = append(errs, field.NotFound(field.NewPath("spec", "parentPool"), parent))
		} else if pp, err := netip.ParsePrefix(p.Spec.CIDR); err == nil && (pp.Bits() > prefix.Bits() || !pp.Contains(prefix.Addr())) {
			errs = append(errs, field.Invalid(path, pool.Spec.CIDR, fmt.Sprintf("lies outside its parent pool %s (%s)", parent, pp)))
		}
	}
	for i := range pools.Items {
		other := &pools.Items[i]
		if other.Name == pool.Name || ancestors[other.Name] {
			continue
		}
		op, err := netip.ParsePrefix(other.Spec.CIDR)
		if err == nil && op.Overlaps(prefix) {
			errs = append(errs, field.Invalid(path, pool.Spec.CIDR, fmt.Sprintf("overlaps pool %s (%s)", other.Name, op)))
		}
	}
	return errs, nil
}

// invalid turns a field.ErrorList into the API's Invalid error for a kipam
// kind, or nil when the list is empty.
func invalid(kind, name string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(ipamv1alpha1.GroupVersion.WithKind(kind).GroupKind(), name, errs)
}
