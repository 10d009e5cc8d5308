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

package ipam

import (
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// Cluster API's IPAM contract: an IPAddressClaim whose poolRef names a
// kipam IPPool is served by kipam's IPAddressClaim controller through the
// same fenced commit as an IPClaim. Its entry's holder is
// AddressClaimHolder(namespace) and its ID the claim's uid, so the entry
// names the claim from the moment it is committed, before any object says
// so.

// AddressClaimsServed reports whether the API server serves Cluster API's
// IPAddressClaim (ipam.cluster.x-k8s.io/v1beta2), as mapper knows it:
// kipam serves Cluster API's contract, its controller and its finalizer
// webhook alike, only where it is served when kipam starts.
func AddressClaimsServed(mapper meta.RESTMapper) (bool, error) {
	gvk := capiv1beta2.GroupVersion.WithKind("IPAddressClaim")
	_, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	switch {
	case meta.IsNoMatchError(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("looking up Cluster API's IPAddressClaim: %w", err)
	}
	return true, nil
}

// AddressClaimHolderPrefix starts the ledger holder of every address
// committed for a Cluster API IPAddressClaim.
const AddressClaimHolderPrefix = "IPAddressClaim/"

// AddressClaimHolder is the ledger holder of an address committed for an
// IPAddressClaim in namespace.
func AddressClaimHolder(namespace string) string { return AddressClaimHolderPrefix + namespace }

// HolderNamespace is the namespace of a claim's holder (an IPClaim's or an
// IPAddressClaim's); false for a pool's.
func HolderNamespace(holder string) (string, bool) {
	for _, prefix := range []string{ClaimHolderPrefix, AddressClaimHolderPrefix} {
		if ns, ok := strings.CutPrefix(holder, prefix); ok {
			return ns, true
		}
	}
	return "", false
}

// ServesPoolRef reports whether a Cluster API pool reference names a kipam
// IPPool: the claims kipam serves.
func ServesPoolRef(ref capiv1beta2.IPPoolReference) bool {
	return ref.APIGroup == ipamv1alpha1.GroupVersion.Group && ref.Kind == "IPPool" && ref.Name != ""
}

// AddressClaimCarries reports whether IPAddressClaim c carries entry e of
// pool: it is in the entry's namespace, the entry's ID is its uid, and it
// asks pool.
func AddressClaimCarries(pool string, e Entry, c *capiv1beta2.IPAddressClaim) bool {
	return e.Is(AddressClaimHolder(c.Namespace), string(c.UID)) && ServesPoolRef(c.Spec.PoolRef) && c.Spec.PoolRef.Name == pool
}

// AddressClaimHolds reports whether c, the IPAddressClaim a's claimRef
// names, carries a's prefix: it is the claim recorded (same uid), and a's
// entry is its.
func AddressClaimHolds(c *capiv1beta2.IPAddressClaim, a *ipamv1alpha1.IPAllocation) bool {
	return a.Spec.ClaimRef.UID == c.UID && a.Spec.Entry == string(c.UID) && ServesPoolRef(c.Spec.PoolRef) && c.Spec.PoolRef.Name == a.Spec.Pool
}

// AddressPrefixLength is the prefix length reported with each address of
// pool (an IPAddress's spec.prefix): spec.addressPrefixLength, else the
// pool's own length.
func AddressPrefixLength(pool *ipamv1alpha1.IPPool) int {
	if l := pool.Spec.AddressPrefixLength; l != nil {
		return int(*l)
	}
	p, err := netip.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return 0
	}
	return p.Bits()
}

// Gateway is the gateway reported with each address of pool
// (spec.gateway), empty when it has none.
func Gateway(pool *ipamv1alpha1.IPPool) string { return pool.Spec.Gateway }
