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

package poolmetrics

import (
	"context"
	"math"
	"math/big"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/ipam"
)

var (
	poolInfo = prometheus.NewDesc("kipam_pool_info",
		"One series per pool, 1, labelled with its CIDR and parent pool.",
		[]string{"pool", "cidr", "parent"}, nil)
	poolCapacity = prometheus.NewDesc("kipam_pool_capacity_addresses",
		"Addresses the pool spans.", []string{"pool"}, nil)
	poolAllocated = prometheus.NewDesc("kipam_pool_allocated_addresses",
		"Addresses held by the pool's claims and child pools.", []string{"pool"}, nil)
	poolAvailable = prometheus.NewDesc("kipam_pool_available_addresses",
		"Addresses neither allocated, reserved nor held back by a reuse grace period. "+
			"allocated / (allocated + available) is the share of the usable space in use.", []string{"pool"}, nil)
	poolClaims = prometheus.NewDesc("kipam_pool_claims",
		"IPClaims holding a prefix of the pool.", []string{"pool"}, nil)
	poolChildPools = prometheus.NewDesc("kipam_pool_child_pools",
		"IPPools carved out of the pool.", []string{"pool"}, nil)
	poolLargestFree = prometheus.NewDesc("kipam_pool_largest_free_prefix_length",
		"Prefix length of the largest free aligned block: the largest claim the pool can still satisfy. "+
			"Absent when nothing is free.", []string{"pool"}, nil)
	poolExhausted = prometheus.NewDesc("kipam_pool_exhausted",
		"1 when the pool's Exhausted condition is True: no prefix of its default length is left.", []string{"pool"}, nil)
	poolOverlapping = prometheus.NewDesc("kipam_pool_overlapping",
		"1 when the pool's Overlapping condition is True: it overlaps another pool, created before kipam recorded every pool's prefix.",
		[]string{"pool"}, nil)

	// Per namespace, for the pools that have a spec.namespaceLimit.
	nsClaims = prometheus.NewDesc("kipam_pool_namespace_claims",
		"Prefixes the namespace's IPClaims and IPAddressClaims hold from the pool, as its ledgers record them (what spec.namespaceLimit counts), for pools with a spec.namespaceLimit.",
		[]string{"pool", "namespace"}, nil)
	nsAddresses = prometheus.NewDesc("kipam_pool_namespace_addresses",
		"Addresses the namespace's IPClaims and IPAddressClaims hold from the pool, as its ledgers record them (what spec.namespaceLimit counts), for pools with a spec.namespaceLimit.",
		[]string{"pool", "namespace"}, nil)
	nsLimitClaims = prometheus.NewDesc("kipam_pool_namespace_limit_claims",
		"The pool's spec.namespaceLimit.claims.", []string{"pool"}, nil)
	nsLimitAddresses = prometheus.NewDesc("kipam_pool_namespace_limit_addresses",
		"The addresses the pool's spec.namespaceLimit.addressSpace allows one namespace.", []string{"pool"}, nil)

	poolDescs = []*prometheus.Desc{poolInfo, poolCapacity, poolAllocated, poolAvailable,
		poolClaims, poolChildPools, poolLargestFree, poolExhausted, poolOverlapping,
		nsClaims, nsAddresses, nsLimitClaims, nsLimitAddresses}
)

// PoolCollector reports every pool's usage as its status last recorded it,
// read from reader (the manager's cache) at each scrape, so that the
// figures are those `kubectl get ippools` shows and any replica can serve
// them. IPv6 counts beyond 2^53 lose precision as Prometheus floats.
type PoolCollector struct {
	reader  client.Reader
	timeout time.Duration
}

// NewPoolCollector returns a collector that lists IPPools from reader.
func NewPoolCollector(reader client.Reader) *PoolCollector {
	return &PoolCollector{reader: reader, timeout: 5 * time.Second}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range poolDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	var pools ipamv1alpha1.IPPoolList
	if err := c.reader.List(ctx, &pools); err != nil {
		ch <- prometheus.NewInvalidMetric(poolInfo, err)
		return
	}
	for i := range pools.Items {
		p := &pools.Items[i]
		ch <- prometheus.MustNewConstMetric(poolInfo, prometheus.GaugeValue, 1, p.Name, p.Spec.CIDR, p.Spec.ParentPool)
		s := &p.Status
		if s.Capacity == "" {
			continue // its controller has not counted it yet
		}
		for _, g := range []struct {
			d *prometheus.Desc
			v string
		}{{poolCapacity, s.Capacity}, {poolAllocated, s.Allocated}, {poolAvailable, s.Available}} {
			if f, ok := new(big.Float).SetString(g.v); ok {
				v, _ := f.Float64()
				ch <- prometheus.MustNewConstMetric(g.d, prometheus.GaugeValue, v, p.Name)
			}
		}
		ch <- prometheus.MustNewConstMetric(poolClaims, prometheus.GaugeValue, float64(s.Claims), p.Name)
		ch <- prometheus.MustNewConstMetric(poolChildPools, prometheus.GaugeValue, float64(s.ChildPools), p.Name)
		if s.LargestFreePrefix != nil {
			ch <- prometheus.MustNewConstMetric(poolLargestFree, prometheus.GaugeValue, float64(*s.LargestFreePrefix), p.Name)
		}
		exhausted := 0.0
		if meta.IsStatusConditionTrue(s.Conditions, ipamv1alpha1.ConditionExhausted) {
			exhausted = 1
		}
		ch <- prometheus.MustNewConstMetric(poolExhausted, prometheus.GaugeValue, exhausted, p.Name)
		overlapping := 0.0
		if meta.IsStatusConditionTrue(s.Conditions, ipamv1alpha1.ConditionOverlapping) {
			overlapping = 1
		}
		ch <- prometheus.MustNewConstMetric(poolOverlapping, prometheus.GaugeValue, overlapping, p.Name)
	}
	c.collectNamespaces(ctx, ch, pools.Items)
}

// collectNamespaces reports what each namespace holds from the pools that
// limit it, as their ledgers record it (what the limit counts), and the
// limits.
func (c *PoolCollector) collectNamespaces(ctx context.Context, ch chan<- prometheus.Metric, pools []ipamv1alpha1.IPPool) {
	limited := map[string]bool{}
	for i := range pools {
		p := &pools[i]
		lim := p.Spec.NamespaceLimit
		if lim == nil {
			continue
		}
		limited[p.Name] = true
		if lim.Claims != nil {
			ch <- prometheus.MustNewConstMetric(nsLimitClaims, prometheus.GaugeValue, float64(*lim.Claims), p.Name)
		}
		if prefix, err := netip.ParsePrefix(p.Spec.CIDR); err == nil && lim.AddressSpace != nil {
			bits := prefix.Addr().BitLen() - min(int(*lim.AddressSpace), prefix.Addr().BitLen())
			ch <- prometheus.MustNewConstMetric(nsLimitAddresses, prometheus.GaugeValue, math.Ldexp(1, bits), p.Name)
		}
	}
	if len(limited) == 0 {
		return
	}
	for pool := range limited {
		// The pool's ledgers, as the cache holds them, record what the
		// limit counts: each namespace's IPClaims and IPAddressClaims, an
		// entry committed for a create not yet stored included.
		l, err := ipam.ReadLedger(ctx, c.reader, pool)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(nsClaims, err)
			return
		}
		for ns, u := range l.NamespaceUses() {
			addresses, _ := new(big.Float).SetInt(&u.Addresses).Float64()
			ch <- prometheus.MustNewConstMetric(nsClaims, prometheus.GaugeValue, float64(u.Claims), pool, ns)
			ch <- prometheus.MustNewConstMetric(nsAddresses, prometheus.GaugeValue, addresses, pool, ns)
		}
	}
}
