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

// Package v1alpha1 holds kipam's admission webhooks for the v1alpha1 API:
// one file per kind.
package v1alpha1

import (
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// SetupWithManager registers every kipam webhook with the manager. Claims
// are allocated through m, which the claim controller shares.
func SetupWithManager(mgr ctrl.Manager, m *ipam.Manager) error {
	if err := SetupIPPoolWebhookWithManager(mgr, m); err != nil {
		return err
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &ipamv1alpha1.IPClaim{}).
		WithDefaulter(defaulter[*ipamv1alpha1.IPClaim](&IPClaimAllocator{
			Resolver: &ipam.Resolver{Reader: mgr.GetClient(), APIReader: mgr.GetAPIReader()},
			Manager:  m,
			Recorder: mgr.GetEventRecorder("kipam-webhook"),
			// The patch drops fields the Go types omit when empty ("pool":
			// ""), so that the object the API server validates after this
			// webhook is the one ValidateClaimCreate passed before it
			// committed anything.
		}), admission.DefaulterRemoveUnknownOrOmitableFields).
		Complete(); err != nil {
		return err
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &ipamv1alpha1.IPAllocation{}).
		WithValidator(validator[*ipamv1alpha1.IPAllocation](&IPAllocationValidator{APIReader: mgr.GetAPIReader()})).
		Complete(); err != nil {
		return err
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &ipamv1alpha1.IPLedger{}).
		WithValidator(validator[*ipamv1alpha1.IPLedger](&IPLedgerValidator{APIReader: mgr.GetAPIReader()})).
		Complete(); err != nil {
		return err
	}
	// Registered whether or not Cluster API's IPAddressClaim is served:
	// the API server calls it only for a kind it serves. It adds the
	// finalizer only where the kind was served at this start, as the
	// controller serves claims only then: one installed later is called
	// here before kipam's next start, with no controller to remove it.
	served, err := ipam.AddressClaimsServed(mgr.GetRESTMapper())
	if err != nil {
		return err
	}
	mgr.GetWebhookServer().Register(AddressClaimFinalizerPath, &webhook.Admission{Handler: AddressClaimFinalizer{Served: served}})
	return nil
}
