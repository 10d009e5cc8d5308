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

// Package metrics holds kipam's Prometheus metrics, registered with
// controller-runtime's registry so that the manager's /metrics serves them.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	// ClaimsDenied counts claims denied at admission, by pool and reason.
	ClaimsDenied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kipam_claims_denied_total",
		Help: "IPClaims denied at admission, by pool and reason (Exhausted, LedgerFull, NamespaceLimit, or Queued: behind older waiting claims of its namespace).",
	}, []string{"pool", "reason"})

	// ClaimsQueued counts claims created Pending (whenExhausted: Wait) at
	// admission for lack of room, by pool and reason.
	ClaimsQueued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kipam_claims_queued_total",
		Help: "IPClaims with whenExhausted: Wait created Pending at admission, by pool and reason (Exhausted, LedgerFull, NamespaceLimit, or Queued: behind older waiting claims of its namespace); not counted as denied.",
	}, []string{"pool", "reason"})
	// Released counts prefixes returned to their pool, by pool and cause.
	Released = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kipam_prefixes_released_total",
		Help: "Prefixes released, by pool and cause (Deleted, Expired, Orphaned, or PoolDeleted: a child pool's prefix returned to its parent).",
	}, []string{"pool", "cause"})

	// LedgerBytes is the size of each pool's fullest ledger object, as its
	// owning replica last wrote it.
	LedgerBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kipam_pool_ledger_bytes",
		Help: "Entry text of the pool's fullest ledger object (root or shard), reported by the replica serving the pool. " +
			"Claims that would take a ledger past --max-ledger-bytes (1 MiB by default) are denied (reason LedgerFull).",
	}, []string{"pool"})

	// Forwarded counts changes this replica sent to a pool's owning
	// replica, by result: Forwarded, or Unreachable (then served here).
	Forwarded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kipam_forwarded_total",
		Help: "Changes sent to the replica owning the pool, by result (Forwarded, Unreachable: served here instead).",
	}, []string{"result"})
)

func init() {
	metrics.Registry.MustRegister(ClaimsDenied, ClaimsQueued, Released, Forwarded, LedgerBytes)
}
