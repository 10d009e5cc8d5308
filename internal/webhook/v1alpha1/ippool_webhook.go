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
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/allocator"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/netutil"
)

// +kubebuilder:webhook:path=/mutate-ipam-kipam-dev-v1alpha1-ippool,mutating=true,failurePolicy=fail,sideEffects=NoneOnDryRun,groups=ipam.kipam.dev,resources=ippools,verbs=create;update,versions=v1alpha1,name=mippool-v1alpha1.kb.io,admissionReviewVersions=v1,timeoutSeconds=15
// +kubebuilder:webhook:path=/validate-ipam-kipam-dev-v1alpha1-ippool,mutating=false,failurePolicy=fail,sideEffects=None,groups=ipam.kipam.dev,resources=ippools,verbs=create;update,versions=v1alpha1,name=vippool-v1alpha1.kb.io,admissionReviewVersions=v1

// IPPoolValidator checks what the IPPool schema cannot: that reserved space
// lies inside the pool and exclusions fit, and, on update, that a change of
// reserved space or exclusions covers nothing allocated.
type IPPoolValidator struct {
	// APIReader reads pools and ledgers from the API server, not a cache.
	APIReader client.Reader
}

var _ admission.Validator[*ipamv1alpha1.IPPool] = &IPPoolValidator{}

// IPPoolAllocator gives a pool its place in the hierarchy as it is created:
// it commits the pool's prefix to its parent's ledger (the address space of
// its family for a top-level pool) through the same compare-and-swap as a
// claim's, carving it when the pool gives only a prefixLength, so that the
// object the API server stores and returns carries spec.cidr, and no other
// pool or claim can ever be given any of it. On update it keeps kipam's
// entry annotation as kipam set it, and the pool's drain finalizer: kipam
// serves no pool without it (a pool deleted without it would go at once,
// its claims' prefixes still held), and an update that drops it (kubectl
// replace or a GitOps apply of a manifest without it) gets it back. kipam
// itself removes it only from a pool being deleted, once the pool is
// drained and its prefix released.
type IPPoolAllocator struct {
	Manager *ipam.Manager
	// Reader is the cache; APIReader reads the API server.
	Reader, APIReader client.Reader
}

var _ admission.Defaulter[*ipamv1alpha1.IPPool] = &IPPoolAllocator{}

// Default carves on create and keeps kipam's fields on update.
func (a *IPPoolAllocator) Default(ctx context.Context, pool *ipamv1alpha1.IPPool) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return err
	}
	switch req.Operation {
	case admissionv1.Create:
		return a.carve(ctx, pool, req)
	case admissionv1.Update:
		var old ipamv1alpha1.IPPool
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return apierrors.NewBadRequest(fmt.Sprintf("decoding the old IPPool: %v", err))
		}
		if id, ok := old.Annotations[ipam.EntryAnnotation]; ok {
			metav1.SetMetaDataAnnotation(&pool.ObjectMeta, ipam.EntryAnnotation, id)
		} else {
			delete(pool.Annotations, ipam.EntryAnnotation)
		}
		if pool.DeletionTimestamp == nil {
			controllerutil.AddFinalizer(pool, ipamv1alpha1.PoolFinalizer)
		}
	}
	return nil
}

// carve commits a new pool's prefix to its parent's ledger, once every
// rule that could deny the create has passed.
func (a *IPPoolAllocator) carve(ctx context.Context, pool *ipamv1alpha1.IPPool, req admission.Request) error {
	dryRun := req.DryRun != nil && *req.DryRun
	// The entry ID is kipam's to give: a user's would let the pool name
	// another holder's entry.
	delete(pool.Annotations, ipam.EntryAnnotation)
	controllerutil.AddFinalizer(pool, ipamv1alpha1.PoolFinalizer)
	if errs := validatePoolCreate(pool); len(errs) > 0 {
		return invalid("IPPool", pool.Name, errs)
	}
	if err := a.notExisting(ctx, pool.Name); err != nil {
		return err
	}
	parent, err := a.parent(ctx, pool)
	if err != nil {
		return poolError(pool, err)
	}
	r := ipam.Request{Pool: parent, Holder: ipam.PoolHolder(pool.Name), ID: ipam.NewEntryID(), DryRun: dryRun}
	if p, err := netutil.ParsePrefix(pool.Spec.CIDR); err == nil {
		// An entry an earlier, unstored attempt of this create committed
		// for exactly this prefix is taken over, not overlapped
		// (docs/design.md, "A create retried after an unstored attempt").
		r.CIDR, r.Bits, r.Reclaim = p, p.Bits(), true
	} else {
		r.Bits = int(*pool.Spec.PrefixLength)
	}
	p, entry, err := a.Manager.AllocateEntry(ctx, r)
	if err != nil {
		return a.denial(ctx, pool, r, err)
	}
	taken := entry.ID != r.ID
	if taken {
		// Not this attempt's to release on a denial: another create of
		// this name may carry it. The orphan sweep releases it if none does.
		if err := a.adoptable(ctx, pool, parent, p, entry.ID); err != nil {
			return err
		}
		r.ID = entry.ID
		logf.FromContext(ctx).Info("took over the entry an earlier create of the pool committed", "pool", pool.Name, "parent", parent.Name, "cidr", p, "entry", entry.ID)
	}
	pool.Spec.CIDR = p.String()
	metav1.SetMetaDataAnnotation(&pool.ObjectMeta, ipam.EntryAnnotation, r.ID)
	var errs field.ErrorList
	if !r.CIDR.IsValid() {
		// A carved pool's reserved space is checked once its cidr is known
		// (validatePoolCreate checked a given one).
		errs = validatePoolSpec(pool)
	}
	if len(errs) == 0 {
		// Every pool is checked against the pools that are not recorded
		// yet (created before kipam recorded pools, and not adopted yet),
		// which the commit cannot see.
		errs, err = a.unrecordedInTheWay(ctx, pool, p)
	}
	if len(errs) > 0 || err != nil {
		// What was committed for it goes back: its entry as this attempt
		// recorded it, time included, so that a concurrent create of the
		// name that took the entry over (renewing its time) and may be
		// stored keeps it. An entry taken over is left to the sweep (above).
		if !dryRun && !taken {
			if _, rerr := a.Manager.ReleaseAsOf(ctx, parent, p, entry, 0); rerr != nil {
				logf.FromContext(ctx).Error(rerr, "releasing the prefix of a pool denied after its carve; the orphan sweep will", "pool", pool.Name, "cidr", p)
			}
		}
		if err != nil {
			return err
		}
		return invalid("IPPool", pool.Name, errs)
	}
	logf.FromContext(ctx).V(1).Info("carved", "pool", pool.Name, "parent", parent.Name, "cidr", p, "dryRun", dryRun)
	return nil
}

// unrecordedInTheWay denies a pool whose prefix p overlaps a pool other
// than its ancestors, as the API server lists them. Every pool created
// through this webhook is recorded in its parent before it exists, so the
// commit already refused any overlap with one; what this finds is a pool
// created before kipam recorded pools, until the pool controller adopts it.
func (a *IPPoolAllocator) unrecordedInTheWay(ctx context.Context, pool *ipamv1alpha1.IPPool, p netip.Prefix) (field.ErrorList, error) {
	var pools ipamv1alpha1.IPPoolList
	if err := a.APIReader.List(ctx, &pools); err != nil {
		return nil, fmt.Errorf("listing pools: %w", err)
	}
	byName := make(map[string]*ipamv1alpha1.IPPool, len(pools.Items))
	for i := range pools.Items {
		byName[pools.Items[i].Name] = &pools.Items[i]
	}
	ancestors := ipam.Ancestors(byName, pool.Spec.ParentPool)
	var errs field.ErrorList
	for i := range pools.Items {
		o := &pools.Items[i]
		oc, err := netutil.ParsePrefix(o.Spec.CIDR)
		if err != nil || o.Name == pool.Name || ancestors[o.Name] || !oc.Overlaps(p) {
			continue
		}
		why := "which kipam has not recorded yet"
		if o.DeletionTimestamp != nil {
			why = "which is being deleted: create this pool once it is gone"
		}
		errs = append(errs, field.Invalid(field.NewPath("spec", "cidr"), p.String(), fmt.Sprintf("overlaps pool %s (%s), %s", o.Name, oc, why)))
	}
	return errs, nil
}

// adoptable says whether pool may carry entry id, which its parent's
// ledger records for p under pool's name and which the commit just took
// over: only when no pool of that name exists now (the API server would
// refuse this create anyway), and no pool of that name that was stored
// ever carried it (its IPAllocation records the entry, or claims or
// pools inside p still live: a pool gone without draining, whose
// addresses p must keep out of circulation until the sweep releases it).
// The entry is left as it is either way.
func (a *IPPoolAllocator) adoptable(ctx context.Context, pool, parent *ipamv1alpha1.IPPool, p netip.Prefix, id string) error {
	if err := a.APIReader.Get(ctx, client.ObjectKey{Name: pool.Name}, &ipamv1alpha1.IPPool{}); err == nil {
		return apierrors.NewAlreadyExists(schema.GroupResource{Group: ipamv1alpha1.GroupVersion.Group, Resource: "ippools"}, pool.Name)
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading pool %s: %w", pool.Name, err)
	}
	var alloc ipamv1alpha1.IPAllocation
	err := a.APIReader.Get(ctx, client.ObjectKey{Name: ipam.AllocationName(parent.Name, p)}, &alloc)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading the IPAllocation of %s: %w", p, err)
	}
	stored := err == nil && alloc.Spec.Entry == id
	claims, pools, err := ipam.Inside(ctx, a.APIReader, parent.Name, p)
	if err != nil {
		return fmt.Errorf("listing what lies inside %s: %w", p, err)
	}
	if !stored && claims+pools == 0 {
		return nil
	}
	return poolError(pool, field.Forbidden(field.NewPath("spec", "cidr"), fmt.Sprintf(
		"%s is still held for the pool %s that was stored before and went without draining (%d claims and %d pools inside it live): "+
			"kipam's orphan sweep releases it once they are gone and the orphan grace (2 minutes by default) has passed; delete them, then retry",
		p, pool.Name, claims, pools)))
}

// notExisting answers AlreadyExists for a pool whose name is taken, before
// anything is committed for it (see IPClaimAllocator.notExisting).
func (a *IPPoolAllocator) notExisting(ctx context.Context, name string) error {
	var cur ipamv1alpha1.IPPool
	err := a.Reader.Get(ctx, client.ObjectKey{Name: name}, &cur)
	if err == nil {
		err = a.APIReader.Get(ctx, client.ObjectKey{Name: name}, &cur)
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("reading pool %s: %w", name, err)
	}
	return apierrors.NewAlreadyExists(schema.GroupResource{Group: ipamv1alpha1.GroupVersion.Group, Resource: "ippools"}, name)
}

// parent returns the pool that pool's prefix is to be allocated from, read
// from the API server, or a field error saying why pool cannot be.
func (a *IPPoolAllocator) parent(ctx context.Context, pool *ipamv1alpha1.IPPool) (*ipamv1alpha1.IPPool, error) {
	spec := field.NewPath("spec")
	prefix, perr := netutil.ParsePrefix(pool.Spec.CIDR)
	name := pool.Spec.ParentPool
	if name == "" {
		return ipam.Space(prefix.Addr()), nil
	}
	var parent ipamv1alpha1.IPPool
	err := a.APIReader.Get(ctx, client.ObjectKey{Name: name}, &parent)
	switch {
	case apierrors.IsNotFound(err):
		return nil, field.Invalid(spec.Child("parentPool"), name, "no IPPool of that name exists: create the parent first")
	case err != nil:
		return nil, fmt.Errorf("reading parent pool %s: %w", name, err)
	case parent.DeletionTimestamp != nil:
		return nil, field.Forbidden(spec.Child("parentPool"), fmt.Sprintf("pool %s is being deleted: nothing can be carved from it", name))
	}
	pp, err := netutil.ParsePrefix(parent.Spec.CIDR)
	if err != nil {
		return nil, field.Invalid(spec.Child("parentPool"), name, fmt.Sprintf("pool %s has no usable cidr: %v", name, err))
	}
	if perr == nil { // an explicit cidr
		switch {
		case prefix.Addr().Is4() != pp.Addr().Is4():
			return nil, field.Invalid(spec.Child("cidr"), pool.Spec.CIDR, fmt.Sprintf("is %s but its parent pool %s (%s) is %s",
				netutil.Family(prefix.Addr()), name, pp, netutil.Family(pp.Addr())))
		case prefix.Bits() < pp.Bits() || !pp.Contains(prefix.Addr()):
			return nil, field.Invalid(spec.Child("cidr"), pool.Spec.CIDR, fmt.Sprintf("lies outside its parent pool %s (%s)", name, pp))
		}
		return &parent, nil
	}
	bits := int(*pool.Spec.PrefixLength)
	if bits < pp.Bits() || bits > pp.Addr().BitLen() {
		return nil, field.Invalid(spec.Child("prefixLength"), bits, fmt.Sprintf("a /%d cannot be carved from pool %s (%s): it must lie between /%d and /%d",
			bits, name, pp, pp.Bits(), pp.Addr().BitLen()))
	}
	return &parent, nil
}

// denial says why a pool's prefix could not be committed in its parent.
func (a *IPPoolAllocator) denial(ctx context.Context, pool *ipamv1alpha1.IPPool, r ipam.Request, err error) error {
	spec := field.NewPath("spec")
	parent := r.Pool.Name
	in := "pool " + parent
	if ipam.IsSpace(parent) {
		in = "the cluster's pools"
	}
	var ex *allocator.ExhaustedError
	switch {
	case errors.As(err, &ex):
		return poolError(pool, field.Forbidden(spec.Child("prefixLength"), fmt.Sprintf("%s is exhausted: %s", in, ex.Error())))
	case errors.Is(err, allocator.ErrOverlap):
		if q, ok := a.heldForName(ctx, pool, parent, r.CIDR); ok {
			return poolError(pool, field.Invalid(spec.Child("cidr"), r.CIDR.String(), fmt.Sprintf(
				"a pool of this name that is not stored holds %s in %s (an earlier create that the API server failed after kipam committed it, "+
					"or a pool deleted without draining): kipam's orphan sweep releases it within the orphan grace (2 minutes by default) "+
					"once nothing inside it lives; retry then, or ask for exactly %s", q, in, q)))
		}
		what, rerr := ipam.InTheWay(ctx, a.APIReader, parent, r.CIDR)
		if rerr != nil || what == "" {
			what = "an allocation"
		}
		return poolError(pool, field.Invalid(spec.Child("cidr"), r.CIDR.String(), fmt.Sprintf("overlaps %s in %s", what, in)))
	case errors.Is(err, ipam.ErrPoolDeleted):
		return poolError(pool, field.Forbidden(spec.Child("parentPool"), fmt.Sprintf("pool %s is being deleted: nothing can be carved from it", parent)))
	case errors.Is(err, allocator.ErrHeld):
		return poolError(pool, field.Invalid(spec.Child("cidr"), r.CIDR.String(), fmt.Sprintf(
			"was released recently in %s (a pool deleted, or addresses of it) and is held for the reuse grace period; retry later or ask for another", in)))
	case errors.Is(err, ipam.ErrBusy):
		return apierrors.NewTooManyRequests(err.Error(), 1)
	}
	if _, full := ipam.Full(err); full {
		return poolError(pool, field.Forbidden(spec.Child("parentPool"), err.Error()))
	}
	return poolError(pool, ipam.ClaimError(err, r))
}

// heldForName returns the prefix overlapping p that parent's stored
// ledger records for pool's own name, if any: what a create retried with
// another spec, or a pool created again over a pool gone without
// draining, finds in its way.
func (a *IPPoolAllocator) heldForName(ctx context.Context, pool *ipamv1alpha1.IPPool, parent string, p netip.Prefix) (netip.Prefix, bool) {
	ledger, err := ipam.ReadLedger(ctx, a.APIReader, parent)
	if err != nil {
		return netip.Prefix{}, false
	}
	for _, q := range ledger.Prefixes() {
		if q.Overlaps(p) && ledger.Allocations[q].Holder == ipam.PoolHolder(pool.Name) {
			return q, true
		}
	}
	return netip.Prefix{}, false
}

// poolError turns a field error into the API's Invalid error for pool.
func poolError(pool *ipamv1alpha1.IPPool, err error) error {
	return fieldError("IPPool", pool.Name, err)
}

// SetupIPPoolWebhookWithManager registers the IPPool webhooks.
func SetupIPPoolWebhookWithManager(mgr ctrl.Manager, m *ipam.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &ipamv1alpha1.IPPool{}).
		WithDefaulter(defaulter[*ipamv1alpha1.IPPool](&IPPoolAllocator{Manager: m, Reader: mgr.GetClient(), APIReader: mgr.GetAPIReader()}),
			admission.DefaulterRemoveUnknownOrOmitableFields).
		WithValidator(validator[*ipamv1alpha1.IPPool](&IPPoolValidator{APIReader: mgr.GetAPIReader()})).
		Complete()
}

// ValidateCreate checks a new pool as the allocating webhook did before it
// committed the pool's prefix, and that its cidr is the prefix committed
// for it: a webhook after kipam's could have changed it.
func (v *IPPoolValidator) ValidateCreate(ctx context.Context, pool *ipamv1alpha1.IPPool) (admission.Warnings, error) {
	if errs := validatePoolSpec(pool); len(errs) > 0 {
		return nil, invalid("IPPool", pool.Name, errs)
	}
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return nil, err
	}
	if req.DryRun != nil && *req.DryRun {
		return nil, nil // nothing was committed
	}
	cidr, err := netutil.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return nil, nil // validatePoolSpec said so
	}
	e, ok, err := ipam.LookupEntry(ctx, v.APIReader, ipam.ParentOf(pool), cidr)
	if err != nil {
		return nil, err
	}
	if !ok || !e.Is(ipam.PoolHolder(pool.Name), pool.Annotations[ipam.EntryAnnotation]) {
		return nil, invalid("IPPool", pool.Name, field.ErrorList{field.Forbidden(field.NewPath("spec", "cidr"),
			fmt.Sprintf("%s is not the prefix kipam recorded for this pool in %s: something changed it after kipam's webhook", cidr, ipam.ParentOf(pool)))})
	}
	return nil, nil
}

// ValidateUpdate validates a changed pool. Its place in the hierarchy
// (cidr, parentPool, prefixLength) is immutable; reserved space and
// exclusions may change as long as they cover nothing allocated.
func (v *IPPoolValidator) ValidateUpdate(ctx context.Context, old, pool *ipamv1alpha1.IPPool) (admission.Warnings, error) {
	spec := field.NewPath("spec")
	if old.Spec.CIDR != pool.Spec.CIDR {
		return nil, invalid("IPPool", pool.Name, field.ErrorList{field.Forbidden(spec.Child("cidr"),
			"a pool's cidr is set when it is created (by kipam when it is carved from its parent), never later")})
	}
	if !ptr.Equal(old.Spec.PrefixLength, pool.Spec.PrefixLength) {
		return nil, invalid("IPPool", pool.Name, field.ErrorList{field.Forbidden(spec.Child("prefixLength"), "prefixLength is immutable")})
	}
	errs := validatePoolSpec(pool)
	if len(errs) == 0 && pool.DeletionTimestamp == nil && !reservedEqual(old, pool) {
		covered, err := v.covered(ctx, old, pool)
		if err != nil {
			return nil, err
		}
		if covered > 0 {
			errs = append(errs, field.Forbidden(spec.Child("reserved"), fmt.Sprintf(
				"the change of reserved, excludeFirst, excludeLast or gateway would cover %d allocations (claims or child pools) of the pool: "+
					"release them first, or reserve around them", covered)))
		}
	}
	return nil, invalid("IPPool", pool.Name, errs)
}

// reservedEqual reports whether two versions of a pool keep the same space
// out of circulation.
func reservedEqual(a, b *ipamv1alpha1.IPPool) bool {
	return slices.Equal(a.Spec.Reserved, b.Spec.Reserved) && a.Spec.ExcludeFirst == b.Spec.ExcludeFirst && a.Spec.ExcludeLast == b.Spec.ExcludeLast &&
		a.Spec.Gateway == b.Spec.Gateway
}

// covered counts the allocations of the pool, as its stored ledger records
// them, that the new reserved space covers and the old did not. A claim
// committed meanwhile is not counted, and is still never reserved from
// under its holder (ipam.Build): the count is for the user, not the fence.
func (v *IPPoolValidator) covered(ctx context.Context, old, pool *ipamv1alpha1.IPPool) (int, error) {
	ledger, err := ipam.ReadLedger(ctx, v.APIReader, pool.Name)
	if err != nil {
		return 0, err
	}
	was, is := ipam.ReservedSet(old), ipam.ReservedSet(pool)
	n := 0
	for p := range ledger.Allocations {
		if is.OverlapsPrefix(p) && !was.OverlapsPrefix(p) {
			n++
		}
	}
	return n, nil
}

// ValidateDelete allows every delete; the pool's finalizer holds it until
// nothing is allocated from it.
func (v *IPPoolValidator) ValidateDelete(context.Context, *ipamv1alpha1.IPPool) (admission.Warnings, error) {
	return nil, nil
}

// The messages of the IPPool CRD's rules that validatePoolCreate and
// validatePoolSpec mirror, word for word (api/v1alpha1, ippool_types.go).
const (
	msgCIDRRequired         = "cidr is required unless parentPool is set"
	msgPrefixLengthRequired = "prefixLength is required when cidr is empty, to say what size to carve from parentPool"
	msgPoolPrefixLength     = "prefixLength must equal the prefix length of cidr when both are set"
	msgPoolIPv4Length       = "prefixLength must be at most 32 for an IPv4 pool"
	msgDefaultPrefixLength  = "defaultPrefixLength must lie between the pool's own prefix length and the family's maximum (32 for IPv4, 128 for IPv6)"
	msgAddressSpace         = "namespaceLimit.addressSpace must lie between the pool's own prefix length and the family's maximum (32 for IPv4, 128 for IPv6)"
	msgSpaceName            = "names containing " + ipam.SpaceSuffix + " are kipam's own address spaces and their ledgers"
)

// validatePoolCreate checks a new pool before anything is committed for
// it: the CRD's rules that could deny it after the webhook (the API server
// runs them after every mutating webhook), and validatePoolSpec when the
// pool gives its cidr.
func validatePoolCreate(pool *ipamv1alpha1.IPPool) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if pool.Name == "" {
		// Its name is what its parent's ledger records it by, and the API
		// server gives a generated one only after admission.
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), "a pool needs a name: generateName is not served for pools"))
	}
	if strings.Contains(pool.Name, ipam.SpaceSuffix) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), pool.Name, msgSpaceName))
	}
	if pool.Spec.CIDR == "" {
		if pool.Spec.ParentPool == "" {
			errs = append(errs, field.Invalid(spec.Child("cidr"), field.OmitValueType{}, msgCIDRRequired))
		}
		if pool.Spec.PrefixLength == nil {
			errs = append(errs, field.Invalid(spec.Child("prefixLength"), field.OmitValueType{}, msgPrefixLengthRequired))
		}
		return errs // the rest is checked once the pool is carved
	}
	return append(errs, validatePoolSpec(pool)...)
}

// validatePoolSpec checks the pool, with its cidr, against itself.
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
	rule := func(child, message string) {
		errs = append(errs, field.Invalid(spec.Child(child), field.OmitValueType{}, message))
	}
	maxBits := int32(prefix.Addr().BitLen())
	inRange := func(v int32) bool { return v >= int32(prefix.Bits()) && v <= maxBits }
	if pl := pool.Spec.PrefixLength; pl != nil && int(*pl) != prefix.Bits() {
		rule("prefixLength", msgPoolPrefixLength)
	}
	if pl := pool.Spec.PrefixLength; pl != nil && prefix.Addr().Is4() && *pl > 32 {
		rule("prefixLength", msgPoolIPv4Length)
	}
	if d := pool.Spec.DefaultPrefixLength; d != nil && !inRange(*d) {
		rule("defaultPrefixLength", msgDefaultPrefixLength)
	}
	if l := pool.Spec.NamespaceLimit; l != nil && l.AddressSpace != nil && !inRange(*l.AddressSpace) {
		errs = append(errs, field.Invalid(spec.Child("namespaceLimit", "addressSpace"), field.OmitValueType{}, msgAddressSpace))
	}
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
	if gw := pool.Spec.Gateway; gw != "" {
		path := spec.Child("gateway")
		addr, err := netip.ParseAddr(gw)
		switch {
		case err != nil || addr.Zone() != "":
			errs = append(errs, field.Invalid(path, gw, "must be an IP address such as 10.0.0.1 or 2001:db8::1"))
		case addr.String() != gw:
			errs = append(errs, field.Invalid(path, gw, fmt.Sprintf("must be written in canonical form: %s", addr)))
		case addr.Is4() != prefix.Addr().Is4():
			errs = append(errs, field.Invalid(path, gw, fmt.Sprintf("is %s but the pool is %s", netutil.Family(addr), netutil.Family(prefix.Addr()))))
		case !prefix.Contains(addr):
			errs = append(errs, field.Invalid(path, gw, fmt.Sprintf("lies outside the pool %s: a pool's gateway is one of its own addresses, "+
				"which kipam never hands out", prefix)))
		}
	}
	if l := pool.Spec.AddressPrefixLength; l != nil && *l > maxBits {
		errs = append(errs, field.Invalid(spec.Child("addressPrefixLength"), *l, fmt.Sprintf("must be at most %d for an %s pool", maxBits, netutil.Family(prefix.Addr()))))
	}
	excluded := new(big.Int).Add(big.NewInt(pool.Spec.ExcludeFirst), big.NewInt(pool.Spec.ExcludeLast))
	if size := netutil.Size(prefix); excluded.Cmp(size) > 0 {
		errs = append(errs, field.Invalid(spec.Child("excludeFirst"), pool.Spec.ExcludeFirst,
			fmt.Sprintf("excludeFirst + excludeLast = %s exceeds the pool's %s addresses", excluded, size)))
	}
	return errs
}

// invalid turns a field.ErrorList into the API's Invalid error for a kipam
// kind, or nil when the list is empty.
func invalid(kind, name string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(ipamv1alpha1.GroupVersion.WithKind(kind).GroupKind(), name, errs)
}
