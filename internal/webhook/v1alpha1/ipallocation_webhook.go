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

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// +kubebuilder:webhook:path=/validate-ipam-kipam-dev-v1alpha1-ipallocation,mutating=false,failurePolicy=fail,sideEffects=None,groups=ipam.kipam.dev,resources=ipallocations,verbs=delete,versions=v1alpha1,name=vipallocation-v1alpha1.kb.io,admissionReviewVersions=v1

// IPAllocationValidator denies deleting an IPAllocation whose holder still
// lives: the prefix is released by deleting the claim, not its record.
type IPAllocationValidator struct {
	// APIReader reads the holder from the API server.
	APIReader client.Reader
}

var _ admission.Validator[*ipamv1alpha1.IPAllocation] = &IPAllocationValidator{}

// ValidateCreate allows creates; kipam alone creates allocations (RBAC).
func (v *IPAllocationValidator) ValidateCreate(context.Context, *ipamv1alpha1.IPAllocation) (admission.Warnings, error) {
	return nil, nil
}

// ValidateUpdate allows updates; the schema keeps pool, cidr and holder fixed.
func (v *IPAllocationValidator) ValidateUpdate(context.Context, *ipamv1alpha1.IPAllocation, *ipamv1alpha1.IPAllocation) (admission.Warnings, error) {
	return nil, nil
}

// ValidateDelete denies the delete while the holder exists and is not
// itself being deleted.
func (v *IPAllocationValidator) ValidateDelete(ctx context.Context, a *ipamv1alpha1.IPAllocation) (admission.Warnings, error) {
	ref := a.Spec.ClaimRef
	var holder client.Object
	switch ref.Kind {
	case "IPClaim":
		holder = &ipamv1alpha1.IPClaim{}
	case "IPPool":
		holder = &ipamv1alpha1.IPPool{}
	case "IPAddressClaim":
		holder = &capiv1beta2.IPAddressClaim{}
	default:
		return nil, nil
	}
	if ref.Name == "" {
		return nil, nil
	}
	err := v.APIReader.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, holder)
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return nil, nil // gone, or its kind is not served (so none exists)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the holder of %s: %w", a.Name, err)
	}
	if holder.GetDeletionTimestamp() != nil || (ref.UID != "" && holder.GetUID() != ref.UID) {
		return nil, nil
	}
	who := ref.Name
	if ref.Namespace != "" {
		who = ref.Namespace + "/" + ref.Name
	}
	return nil, apierrors.NewForbidden(schema.GroupResource{Group: ipamv1alpha1.GroupVersion.Group, Resource: "ipallocations"}, a.Name,
		fmt.Errorf("%s is held by the live %s %s: delete the %s to release it", a.Spec.CIDR, ref.Kind, who, ref.Kind))
}
