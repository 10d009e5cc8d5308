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
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// +kubebuilder:webhook:path=/validate-ipam-kipam-dev-v1alpha1-ipledger,mutating=false,failurePolicy=fail,sideEffects=None,groups=ipam.kipam.dev,resources=ipledgers,verbs=delete,versions=v1alpha1,name=vipledger-v1alpha1.kb.io,admissionReviewVersions=v1

// IPLedgerValidator denies deleting an IPLedger while its pool is served:
// the ledger is the pool's durable record of what it handed out, and it
// goes with its pool. Deletes that come with the pool's own end pass: the
// garbage collector's (the pool is being deleted, or gone), kipam's ledger
// controller's (the pool is gone), and any delete of a ledger that an
// earlier pool of the same name left.
type IPLedgerValidator struct {
	// APIReader reads the pool from the API server.
	APIReader client.Reader
}

var _ admission.Validator[*ipamv1alpha1.IPLedger] = &IPLedgerValidator{}

// ValidateCreate allows creates; kipam alone writes ledgers (RBAC).
func (v *IPLedgerValidator) ValidateCreate(context.Context, *ipamv1alpha1.IPLedger) (admission.Warnings, error) {
	return nil, nil
}

// ValidateUpdate allows updates; kipam alone writes ledgers (RBAC).
func (v *IPLedgerValidator) ValidateUpdate(context.Context, *ipamv1alpha1.IPLedger, *ipamv1alpha1.IPLedger) (admission.Warnings, error) {
	return nil, nil
}

// ValidateDelete denies the delete while the ledger's pool exists as the
// pool the ledger belongs to and is not being deleted.
func (v *IPLedgerValidator) ValidateDelete(ctx context.Context, l *ipamv1alpha1.IPLedger) (admission.Warnings, error) {
	refuse := func(why string) error {
		return apierrors.NewForbidden(schema.GroupResource{Group: ipamv1alpha1.GroupVersion.Group, Resource: "ipledgers"}, l.Name,
			fmt.Errorf("%s: deleting it would forget what was handed out and let it be handed out twice", why))
	}
	if ipam.IsSpace(l.Spec.Pool) {
		return nil, refuse(fmt.Sprintf("it records which pools hold space in address space %s, which kipam keeps for as long as it runs", l.Spec.Pool))
	}
	var pool ipamv1alpha1.IPPool
	err := v.APIReader.Get(ctx, client.ObjectKey{Name: l.Spec.Pool}, &pool)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading pool %s of ledger %s: %w", l.Spec.Pool, l.Name, err)
	}
	if pool.DeletionTimestamp != nil {
		return nil, nil
	}
	if uid := ipam.PoolUID(l); uid != "" && uid != pool.UID {
		return nil, nil // an earlier pool's, which kipam deletes too
	}
	return nil, refuse(fmt.Sprintf("it is the record of what the live IPPool %s has allocated; it goes when the pool is deleted", pool.Name))
}
