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

// Package controller holds kipam's reconcilers: one per kind.
package controller

import (
	ctrl "sigs.k8s.io/controller-runtime"
)

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// SetupWithManager registers every kipam reconciler with the manager.
func SetupWithManager(mgr ctrl.Manager) error {
	for _, r := range []interface{ SetupWithManager(ctrl.Manager) error }{
		&IPPoolReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme()},
		&IPClaimReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme()},
		&IPAllocationReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme()},
	} {
		if err := r.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	return nil
}
