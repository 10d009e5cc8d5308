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
	"net/http"
	"slices"

	"gomodules.xyz/jsonpatch/v2"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

// AddressClaimFinalizerPath is where kipam's webhook adds its release
// finalizer to Cluster API's IPAddressClaims of kipam's pools.
const AddressClaimFinalizerPath = "/mutate-ipam-cluster-x-k8s-io-v1beta2-ipaddressclaim"

// +kubebuilder:webhook:path=/mutate-ipam-cluster-x-k8s-io-v1beta2-ipaddressclaim,mutating=true,failurePolicy=ignore,sideEffects=None,groups=ipam.cluster.x-k8s.io,resources=ipaddressclaims,verbs=create,versions=v1beta2,name=mipaddressclaim-v1beta2.kb.io,admissionReviewVersions=v1,timeoutSeconds=5

// AddressClaimFinalizer adds kipam's release finalizer to an IPAddressClaim
// whose spec.poolRef names a kipam IPPool, in its create: the one write
// kipam's controller made before it committed the claim's address, a
// fifth of its writes a claim, now part of the create. It touches nothing
// else, and answers every other claim (another provider's pool) with no
// change. Its failure policy is Ignore: kipam down never refuses another
// provider's claims (a slow kipam delays them by at most the webhook's
// timeout), and a claim created without the finalizer gets it from the
// controller before anything is committed for it, as before.
type AddressClaimFinalizer struct {
	// Served is whether kipam serves Cluster API's IPAddressClaims: the
	// kind was served at kipam's start, as the controller decides
	// (controller.SetupWithManager). Cluster API installed after kipam
	// started is served from kipam's next start; a claim created before
	// it gets no finalizer, which nothing would remove while the
	// controller does not run (its deletion would wait for that start).
	Served bool
}

// Handle adds the finalizer by a JSON patch of metadata.finalizers alone:
// kipam's Go types of Cluster API's objects hold only the fields kipam
// reads, and a patch computed from them could drop the others.
func (h AddressClaimFinalizer) Handle(_ context.Context, req admission.Request) admission.Response {
	if !h.Served {
		return admission.Allowed("")
	}
	var claim struct {
		Metadata struct {
			Finalizers []string `json:"finalizers"`
		} `json:"metadata"`
		Spec struct {
			PoolRef capiv1beta2.IPPoolReference `json:"poolRef"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(req.Object.Raw, &claim); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	fs := claim.Metadata.Finalizers
	if !ipam.ServesPoolRef(claim.Spec.PoolRef) || slices.Contains(fs, ipamv1alpha1.ClaimFinalizer) {
		return admission.Allowed("")
	}
	op := jsonpatch.JsonPatchOperation{Operation: "add", Path: "/metadata/finalizers/-", Value: ipamv1alpha1.ClaimFinalizer}
	if fs == nil {
		op = jsonpatch.JsonPatchOperation{Operation: "add", Path: "/metadata/finalizers", Value: []string{ipamv1alpha1.ClaimFinalizer}}
	}
	return admission.Patched("", op)
}
