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
	"context"
	"fmt"
	"net/netip"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
)

// Recorded reports whether pool's ledger, as stored now, records exactly
// cidr, and for which holder. It reads through the Store, never a cache or
// this process's allocator, so that a record lost or never made (a claim
// restored with the webhook bypassed) is seen as missing. A pool without a
// ledger records nothing.
func (m *Manager) Recorded(ctx context.Context, pool *ipamv1alpha1.IPPool, cidr netip.Prefix) (holder string, ok bool, err error) {
	ledger, err := m.store.Get(ctx, pool.Name)
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("reading the ledger of pool %s: %w", pool.Name, err)
	}
	for _, e := range ledger.Spec.Allocations {
		if p, err := netip.ParsePrefix(e.CIDR); err == nil && p == cidr {
			return e.Holder, true, nil
		}
	}
	return "", false, nil
}
