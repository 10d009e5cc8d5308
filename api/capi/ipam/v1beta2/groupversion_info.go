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

// Package v1beta2 holds kipam's own Go types for Cluster API's IPAM contract
// (ipam.cluster.x-k8s.io/v1beta2): IPAddressClaim, which an infrastructure
// provider creates, and IPAddress, which kipam creates in answer. They are
// wire-compatible with Cluster API's types (the same JSON names and
// shapes, checked against Cluster API's published CRDs in
// config/capi/crd) but carry only the fields kipam reads or writes, so
// that kipam need not depend on sigs.k8s.io/cluster-api.
//
// Cluster API owns these CRDs: the package is marked kubebuilder:skip, so
// controller-gen generates deepcopy for it and no CRD.
//
// +kubebuilder:skip
// +kubebuilder:object:generate=true
// +groupName=ipam.cluster.x-k8s.io
package v1beta2

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of Cluster API's IPAM contract.
	GroupVersion = schema.GroupVersion{Group: "ipam.cluster.x-k8s.io", Version: "v1beta2"}

	// SchemeBuilder registers the contract's types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the contract's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
