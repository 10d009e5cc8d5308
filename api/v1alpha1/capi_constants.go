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

// What kipam writes when it serves Cluster API's IPAM contract
// (IPAddressClaims whose poolRef names a kipam IPPool).
const (
	// AddressFinalizer keeps an IPAddress that kipam created for an
	// IPAddressClaim while the claim lives; the claim's own finalizer is
	// ClaimFinalizer, which releases its address.
	AddressFinalizer = "ipam.kipam.dev/protect-address"
	// ClusterNameLabel is Cluster API's label naming the Cluster an object
	// belongs to, set on an IPAddress from its claim's spec.clusterName.
	ClusterNameLabel = "cluster.x-k8s.io/cluster-name"
	// PausedAnnotation is Cluster API's annotation that pauses the
	// reconciling of an object, or of everything of a Cluster.
	PausedAnnotation = "cluster.x-k8s.io/paused"
)
