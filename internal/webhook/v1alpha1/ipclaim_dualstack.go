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
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
	"github.com/kipam/kipam/internal/netutil"
)

// ValidateFamilies denies, with the field path, a claim whose family
// fields contradict its spec.ipFamilyPolicy. These are kipam's rules, not
// the CRD's (ValidateClaimCreate mirrors those): the CRD admits kipam's own
// answer, a dual-stack claim carrying spec.cidr and spec.cidrs, which a
// create must not ask for.
func ValidateFamilies(claim *ipamv1alpha1.IPClaim) field.ErrorList {
	spec := &claim.Spec
	path := field.NewPath("spec")
	var errs field.ErrorList
	if !ipam.DualStack(claim) {
		for _, f := range []struct {
			name string
			set  bool
		}{{"ipFamilies", len(spec.IPFamilies) > 0}, {"pools", len(spec.Pools) > 0}, {"prefixLengths", len(spec.PrefixLengths) > 0}, {"cidrs", len(spec.CIDRs) > 0}} {
			if f.set {
				errs = append(errs, field.Forbidden(path.Child(f.name),
					"only a dual-stack claim (ipFamilyPolicy PreferDualStack or RequireDualStack) has it; a single-stack claim uses ipFamily, pool, prefixLength and cidr"))
			}
		}
		return errs
	}
	families := path.Child("ipFamilies")
	switch n := len(spec.IPFamilies); {
	case n == 0:
		errs = append(errs, field.Required(families, "a dual-stack claim names both families, IPv4 and IPv6, primary first"))
	case n == 1:
		errs = append(errs, field.Invalid(families, spec.IPFamilies,
			string(spec.IPFamilyPolicy)+" needs both families, IPv4 and IPv6, primary first (for one family use ipFamilyPolicy SingleStack and ipFamily)"))
	case spec.IPFamilies[0] == spec.IPFamilies[1]:
		errs = append(errs, field.Duplicate(families.Index(1), spec.IPFamilies[1]))
	}
	if spec.IPFamily != "" {
		errs = append(errs, field.Forbidden(path.Child("ipFamily"), "a dual-stack claim names its families in spec.ipFamilies"))
	}
	if spec.Pool != "" {
		errs = append(errs, field.Forbidden(path.Child("pool"), "a dual-stack claim names one pool per family in spec.pools, or chooses them by spec.poolSelector"))
	}
	if spec.PrefixLength != nil {
		errs = append(errs, field.Forbidden(path.Child("prefixLength"), "a dual-stack claim gives one length per family in spec.prefixLengths"))
	}
	if spec.CIDR != "" && (len(spec.CIDRs) == 0 || spec.CIDR != spec.CIDRs[0]) {
		errs = append(errs, field.Forbidden(path.Child("cidr"),
			"a dual-stack claim asks for specific prefixes only as a restore, in spec.cidrs (one per family, in the order of spec.ipFamilies; spec.cidr, if given, is spec.cidrs[0])"))
	}
	errs = append(errs, validateRestore(claim)...)
	if spec.WhenExhausted == ipamv1alpha1.Wait && spec.IPFamilyPolicy == ipamv1alpha1.PreferDualStack {
		errs = append(errs, field.Forbidden(path.Child("whenExhausted"),
			"a PreferDualStack claim takes the family that fits instead of waiting: use ipFamilyPolicy RequireDualStack to wait for both"))
	}
	if n := len(spec.Pools); n > 0 && n != len(spec.IPFamilies) {
		errs = append(errs, field.Invalid(path.Child("pools"), spec.Pools, "names one pool per family of spec.ipFamilies, in the same order"))
	} else if n == 2 && spec.Pools[0] == spec.Pools[1] {
		errs = append(errs, field.Duplicate(path.Child("pools").Index(1), spec.Pools[1]))
	}
	lengths := path.Child("prefixLengths")
	if n := len(spec.PrefixLengths); n > 0 && n != len(spec.IPFamilies) {
		errs = append(errs, field.Invalid(lengths, spec.PrefixLengths, "gives one length per family of spec.ipFamilies, in the same order"))
	} else {
		for i, l := range spec.PrefixLengths {
			if spec.IPFamilies[i] == ipamv1alpha1.IPv4 && l > 32 {
				errs = append(errs, field.Invalid(lengths.Index(i), l, "must be at most 32 for IPv4"))
			}
		}
	}
	return errs
}

// validateRestore checks the spec.cidrs a dual-stack claim is created
// with (a restore, kipam's own answer applied again): one prefix per
// family, in the order of spec.ipFamilies, each of the length
// spec.prefixLengths gives it; or, for PreferDualStack (a claim that
// fell back), one prefix of one of its families.
func validateRestore(claim *ipamv1alpha1.IPClaim) field.ErrorList {
	spec := &claim.Spec
	path := field.NewPath("spec", "cidrs")
	if len(spec.CIDRs) == 0 || len(spec.IPFamilies) != 2 {
		return nil
	}
	var errs field.ErrorList
	if len(spec.CIDRs) == 1 && spec.IPFamilyPolicy == ipamv1alpha1.RequireDualStack {
		errs = append(errs, field.Invalid(path, spec.CIDRs, "a RequireDualStack claim is restored with both families: one prefix per family of spec.ipFamilies, in the same order"))
	}
	for i, c := range spec.CIDRs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			continue // the CRD's rule says so
		}
		family := ipamv1alpha1.IPFamily(netutil.Family(p.Addr()))
		j := slices.Index(spec.IPFamilies, family)
		switch {
		case len(spec.CIDRs) == 2 && spec.IPFamilies[i] != family:
			errs = append(errs, field.Invalid(path.Index(i), c, fmt.Sprintf("is not of family %s (spec.ipFamilies[%d]): a restore gives one prefix per family, in the order of spec.ipFamilies", spec.IPFamilies[i], i)))
		case len(spec.PrefixLengths) == 2 && j >= 0 && int(spec.PrefixLengths[j]) != p.Bits():
			errs = append(errs, field.Invalid(path.Index(i), c, fmt.Sprintf("is not a /%d, the length spec.prefixLengths[%d] asks for", spec.PrefixLengths[j], j)))
		}
	}
	return errs
}

// familyView is the single-stack claim that asks for family i of a
// dual-stack claim (ipam.FamilyView); for a restore, the prefix spec.cidrs
// gives that family, which it never waits for. skip reports a family a
// restore of a claim that fell back to one family does not ask for.
func familyView(claim *ipamv1alpha1.IPClaim, i int) (view *ipamv1alpha1.IPClaim, skip bool) {
	view = ipam.FamilyView(claim, i)
	view.Spec.CIDR = ""
	if len(claim.Spec.CIDRs) == 0 {
		return view, false
	}
	for _, c := range claim.Spec.CIDRs {
		if p, err := netip.ParsePrefix(c); err == nil && ipamv1alpha1.IPFamily(netutil.Family(p.Addr())) == claim.Spec.IPFamilies[i] {
			view.Spec.CIDR = c
			view.Spec.WhenExhausted = ipamv1alpha1.Deny
			return view, false
		}
	}
	return view, true
}

// unfitError is a denial that says a claim (or one family of a
// dual-stack claim) does not fit where it asked: no pool of it is open to
// the namespace, they are exhausted or full, being deleted, or older
// claims of the namespace wait on them.
type unfitError struct{ error }

func (e *unfitError) Unwrap() error { return e.error }

// Status is the wrapped denial's, so that the denial goes out as the
// status it is: answer, and controller-runtime's admission handler, take
// an APIStatus as kipam's own answer.
func (e *unfitError) Status() metav1.Status {
	if s, ok := e.error.(apierrors.APIStatus); ok { //nolint:errorlint // the denial itself, as allocate made it
		return s.Status()
	}
	return apierrors.NewInternalError(e.error).Status()
}

// allocated is one family of a dual-stack claim, committed.
type allocated struct {
	pool   *ipamv1alpha1.IPPool
	prefix netip.Prefix
}

// allocateDual allocates both families of a dual-stack claim in this
// admission, each through the fenced commit of its own pool (forwarded to
// that pool's owner, which may be another replica than the first's), as
// one entry ID. Both are committed or neither: when a family is denied
// after another was committed, that one is released first, by its entry,
// and the denial returned; if that release fails, no claim will ever carry
// the entry (the create is denied), so the ledger's orphan sweep releases
// it after the orphan grace. A RequireDualStack claim that waits
// (whenExhausted: Wait) for a family with no room is created waiting and
// holding nothing, the other family released the same way (the entry ID
// is this request's, which the claim does not carry); the claim
// controller binds both when both fit. PreferDualStack keeps the family
// that fits when the other does not (FallbackAnnotation says why).
func (a *IPClaimAllocator) allocateDual(ctx context.Context, claim *ipamv1alpha1.IPClaim, namespace string, dryRun bool) error {
	holder := ipam.ClaimHolder(namespace)
	id := ipam.NewEntryID()
	var (
		held     []allocated
		fallback []string
		denials  []error
	)
	for i, family := range claim.Spec.IPFamilies {
		view, skip := familyView(claim, i)
		if skip {
			fallback = append(fallback, fmt.Sprintf("%s (spec.ipFamilies[%d]): restored without it, as the claim held one family (spec.cidrs)", family, i))
			continue
		}
		p, pool, err := a.allocateFrom(ctx, view, namespace, id, dryRun)
		if err == nil && pool == nil {
			// The family waits for room (only RequireDualStack may wait,
			// ValidateFamilies): the claim is created waiting, and holds
			// nothing meanwhile.
			var released []string
			if !dryRun {
				released = a.release(ctx, held, holder, id)
			}
			logf.FromContext(ctx).V(1).Info("dual-stack claim waits for room", "family", family, "released", released, "dryRun", dryRun)
			controllerutil.AddFinalizer(claim, ipamv1alpha1.ClaimFinalizer)
			return nil
		}
		if err == nil {
			held = append(held, allocated{pool, p})
			continue
		}
		var unfit *unfitError
		if claim.Spec.IPFamilyPolicy == ipamv1alpha1.PreferDualStack {
			// A PreferDualStack claim cannot wait (ValidateFamilies).
			err = withMessage(err, func(m string) string { return strings.TrimSuffix(m, waitHint) })
		}
		err = forFamily(err, claim, i)
		if claim.Spec.IPFamilyPolicy == ipamv1alpha1.PreferDualStack && errors.As(err, &unfit) {
			fallback = append(fallback, reasonOf(err))
			denials = append(denials, err)
			continue
		}
		return a.undo(ctx, held, holder, id, dryRun, err)
	}
	if len(held) == 0 {
		return joinDenials(denials)
	}
	cidrs := make([]string, 0, len(held))
	for _, h := range held {
		cidrs = append(cidrs, h.prefix.String())
	}
	claim.Spec.CIDR, claim.Spec.CIDRs = cidrs[0], cidrs
	metav1.SetMetaDataAnnotation(&claim.ObjectMeta, ipam.PoolAnnotation, held[0].pool.Name)
	metav1.SetMetaDataAnnotation(&claim.ObjectMeta, ipam.EntryAnnotation, id)
	if len(held) > 1 {
		metav1.SetMetaDataAnnotation(&claim.ObjectMeta, ipam.SecondaryPoolAnnotation, held[1].pool.Name)
	}
	if len(fallback) > 0 {
		metav1.SetMetaDataAnnotation(&claim.ObjectMeta, ipam.FallbackAnnotation, strings.Join(fallback, "; "))
	}
	controllerutil.AddFinalizer(claim, ipamv1alpha1.ClaimFinalizer)
	logf.FromContext(ctx).V(1).Info("allocated dual-stack", "cidrs", cidrs, "dryRun", dryRun)
	return nil
}

// undo releases what a dual-stack claim's admission committed before
// denial (release), and returns denial saying so.
func (a *IPClaimAllocator) undo(ctx context.Context, held []allocated, holder, id string, dryRun bool, denial error) error {
	if dryRun || len(held) == 0 {
		return denial
	}
	notes := a.release(ctx, held, holder, id)
	return withMessage(denial, func(msg string) string {
		return fmt.Sprintf("%s; nothing is allocated to the claim: %s", msg, strings.Join(notes, ", "))
	})
}

// release releases what a dual-stack claim's admission committed and
// will not give the claim, each by its entry, and says what became of
// each. It runs even when the request's context has ended (the API
// server gave up on it): the entries are no claim's either way.
func (a *IPClaimAllocator) release(ctx context.Context, held []allocated, holder, id string) []string {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	notes := make([]string, 0, len(held))
	for _, h := range held {
		// No reuse grace: no claim ever carried the prefix.
		freed, err := a.Manager.Release(rctx, h.pool, h.prefix, holder, id, 0, nil)
		if err != nil {
			logf.FromContext(ctx).Error(err, "releasing a dual-stack claim's first family after the second was denied; the orphan sweep will",
				"pool", h.pool.Name, "cidr", h.prefix, "entry", id)
			notes = append(notes, fmt.Sprintf("%s in pool %s could not be released yet and is released by kipam's orphan sweep", h.prefix, h.pool.Name))
			continue
		}
		if !freed {
			// Nothing else releases an entry no claim was ever stored with.
			notes = append(notes, fmt.Sprintf("%s in pool %s was no longer recorded", h.prefix, h.pool.Name))
			continue
		}
		notes = append(notes, fmt.Sprintf("%s, committed in pool %s, was released", h.prefix, h.pool.Name))
	}
	return notes
}

// forFamily says which family of a dual-stack claim a denial is about, and
// names the fields of the claim the user wrote (spec.pools[i] for the
// view's spec.pool).
func forFamily(err error, claim *ipamv1alpha1.IPClaim, i int) error {
	idx := func(name string) string { return fmt.Sprintf("spec.%s[%d]", name, i) }
	renames := map[string]string{"spec.ipFamily": idx("ipFamilies"), "spec.prefixLength": idx("prefixLengths")}
	if len(claim.Spec.Pools) > 0 {
		renames["spec.pool"] = idx("pools")
	}
	var se *apierrors.StatusError
	if !errors.As(err, &se) {
		return fmt.Errorf("%s (%s): %w", claim.Spec.IPFamilies[i], idx("ipFamilies"), err)
	}
	st := se.ErrStatus
	if st.Details != nil {
		d := *st.Details
		d.Causes = slices.Clone(d.Causes)
		for j := range d.Causes {
			if to, ok := renames[d.Causes[j].Field]; ok {
				d.Causes[j].Field = to
			}
		}
		st.Details = &d
	}
	msg := st.Message
	for from, to := range renames {
		msg = strings.ReplaceAll(msg, from+":", to+":")
	}
	st.Message = fmt.Sprintf("%s (%s): %s", claim.Spec.IPFamilies[i], idx("ipFamilies"), msg)
	out := error(&apierrors.StatusError{ErrStatus: st})
	var unfit *unfitError
	if errors.As(err, &unfit) {
		out = &unfitError{out}
	}
	return out
}

// withMessage returns err with its message rewritten, keeping its status
// and whether it says the claim does not fit.
func withMessage(err error, f func(string) string) error {
	var se *apierrors.StatusError
	if !errors.As(err, &se) {
		if msg := f(err.Error()); msg != err.Error() {
			return fmt.Errorf("%s", msg)
		}
		return err
	}
	st := se.ErrStatus
	st.Message = f(st.Message)
	out := error(&apierrors.StatusError{ErrStatus: st})
	var unfit *unfitError
	if errors.As(err, &unfit) {
		out = &unfitError{out}
	}
	return out
}

// joinDenials is the denial of a PreferDualStack claim that fits neither
// family: the first family's status, with both messages.
func joinDenials(denials []error) error {
	msgs := make([]string, 0, len(denials))
	for _, d := range denials {
		msgs = append(msgs, reasonOf(d))
	}
	return withMessage(denials[0], func(string) string { return strings.Join(msgs, "; ") })
}

// reasonOf is what a family's denial says, without the API's framing: the
// field errors of an Invalid one (which name their family's field), else
// its message (which forFamily prefixed with the family).
func reasonOf(err error) string {
	var se *apierrors.StatusError
	if !errors.As(err, &se) {
		return err.Error()
	}
	st := se.ErrStatus
	if st.Reason != metav1.StatusReasonInvalid || st.Details == nil || len(st.Details.Causes) == 0 {
		return st.Message
	}
	causes := make([]string, 0, len(st.Details.Causes))
	for _, c := range st.Details.Causes {
		causes = append(causes, fmt.Sprintf("%s: %s", c.Field, c.Message))
	}
	return strings.Join(causes, ", ")
}
