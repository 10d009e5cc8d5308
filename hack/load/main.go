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

// Command load measures kipam's claim path against a running cluster and
// compares it with a bare create of the same object on the same API server
// in the same session.
//
// The bare resource is IPClaim's own CRD served under another group
// (ipclaims.load.kipam.dev): the same schema and size, no webhook, no
// controller. Every run of IPClaims has a run of bare creates beside it, with
// the same client, workers and count, and the two alternate which goes
// first from one repetition to the next.
//
// Per run it reports create latency (an HDR histogram: p50, p95, p99, max),
// throughput, the duplicates among the CIDRs the create responses gave
// (which must be zero), create-to-Ready per claim and the lag of the last
// Ready after the last create (from a watch opened before the run), the
// watch lag of the bare objects, the API server's writes per object (a diff
// of its apiserver_request_total), and, when -manager-metrics is given,
// kipam's CPU seconds per 1,000 claims and its heap and RSS. Then it deletes
// what it made and reports how long the release took.
//
//	make demo
//	go run ./hack/load -kubeconfig .local/demo/cluster/kubeconfig \
//	    -manager-metrics "$(sed -n 's/^METRICS_ADDR=//p' .local/demo/cluster/env)" \
//	    -workers 1,10,50 -claims 2000 -reps 5 -csv /tmp/load.csv
//
// -scenario capi times Cluster API's IPAddressClaims from a kipam pool to
// Ready (status.addressRef and the IPAddress), interleaved with IPClaims
// and, with -incluster, with the in-cluster provider's, at each of
// -preloads live objects in the pool (see capi.go).
//
// -rate switches from closed-loop workers to an open loop: creates start at
// a fixed rate whatever the answers do, and each latency counts from when
// its create was due, so a slow server cannot hide behind a slower request
// rate. -scenario exhaustion times denials from a full pool; -scenario list
// times lists of -claims objects of each kind. -scenario scale fills
// -pools pools with live claims up to each of -levels and measures kipam's
// heap and RSS per live claim, creates beside the empty cluster's, and
// (-manager-pidfile) how long a restarted manager takes to serve again.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
)

type options struct {
	kubeconfig     string
	managerMetrics string
	scenario       string
	workers        []int
	rate           float64
	claims         int
	reps           int
	family         string
	prefixLength   int
	depth          int
	exhaustSize    int
	preload        int
	maxWrites      float64
	csv            string
	crd            string
	readyTimeout   string
	// -scenario scale
	levels         []int
	pools          int
	managerPprof   string
	managerPidfile string
	profileDir     string
	// -scenario capi
	preloads   []int
	inCluster  bool
	noIPClaims bool
	beforeRun  string
}

// numbers parses a comma-separated list of positive numbers, or exits.
func numbers(flag, list string) []int {
	var ns []int
	for f := range strings.SplitSeq(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "load: -%s: %q is not a positive number\n", flag, f)
			os.Exit(2)
		}
		ns = append(ns, n)
	}
	return ns
}

func main() {
	var o options
	var workers, levels, preloads string
	flag.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster running kipam")
	flag.StringVar(&o.managerMetrics, "manager-metrics", "", "host:port of kipam's metrics endpoint (http), for its CPU, heap and RSS")
	flag.StringVar(&o.scenario, "scenario", "create", "create, exhaustion, list, scale or capi")
	flag.StringVar(&workers, "workers", "1,10,50", "concurrent clients, one run per value (closed loop)")
	flag.Float64Var(&o.rate, "rate", 0, "creates per second in an open loop instead of closed-loop workers")
	flag.IntVar(&o.claims, "claims", 2000, "objects created per run")
	flag.IntVar(&o.reps, "reps", 5, "repetitions of every run; the summary gives the median and the spread")
	flag.StringVar(&o.family, "family", "ipv4", "ipv4 (hosts from a /16) or ipv6 (/64s from a /48)")
	flag.IntVar(&o.prefixLength, "prefix-length", 0, "prefix length each claim asks for (default /32 or /64)")
	flag.IntVar(&o.depth, "depth", 1, "claim from a pool this many levels deep (1: a top-level pool)")
	flag.IntVar(&o.exhaustSize, "exhaust-size", 16, "-scenario exhaustion: how many claims fill the pool (a power of two, 2 to 65,536)")
	flag.IntVar(&o.preload, "preload", 0, "live claims put in the pool before the timed creates (a full pool measured, not an empty one)")
	flag.Float64Var(&o.maxWrites, "max-writes", 0, "fail if a run of IPClaims cost more API writes per claim than this (0: report only)")
	flag.StringVar(&o.csv, "csv", "", "append one CSV row per run to this file")
	flag.StringVar(&o.crd, "crd", "config/crd/bases/ipam.kipam.dev_ipclaims.yaml", "IPClaim's CRD, served again under the group load.kipam.dev for the bare baseline")
	flag.StringVar(&o.readyTimeout, "ready-timeout", "5m", "how long to wait for every claim to be Ready or released")
	flag.StringVar(&levels, "levels", "10000,100000", "-scenario scale: the live claims measured at, after the empty cluster")
	flag.IntVar(&o.pools, "pools", 1, "-scenario scale: the pools the live and timed claims are spread over")
	flag.StringVar(&o.managerPprof, "manager-pprof", "", "-scenario scale: host:port of kipam's pprof endpoint, to collect its garbage before its heap is read")
	flag.StringVar(&o.managerPidfile, "manager-pidfile", "", "-scenario scale: kipam's pid file; restart it at every level and time until it serves again")
	flag.StringVar(&o.profileDir, "profile-dir", "", "-scenario scale: keep kipam's heap profile at every level here")
	flag.StringVar(&preloads, "preloads", "0,1000,5000", "-scenario capi: the live objects in each kind's pool, one level after another")
	flag.BoolVar(&o.inCluster, "incluster", false, "-scenario capi: also IPAddressClaims of an InClusterIPPool (Cluster API's in-cluster provider must be running)")
	flag.BoolVar(&o.noIPClaims, "no-ipclaims", false, "-scenario capi: leave out kipam's own IPClaims (their fill and their runs)")
	flag.StringVar(&o.beforeRun, "before-run", "", "-scenario capi: a shell command run before each timed run, with LOAD_KIND, LOAD_POOL, LOAD_LIVE, "+
		"LOAD_WORKERS and LOAD_REP in its environment (to swap kipam between runs, for one before-and-after comparison on one fill)")
	flag.Parse()
	o.workers = numbers("workers", workers)
	if n := o.exhaustSize; n < 2 || n > 1<<16 || n&(n-1) != 0 {
		fmt.Fprintf(os.Stderr, "load: -exhaust-size %d: want a power of two from 2 to 65,536\n", n)
		os.Exit(2)
	}
	if o.scenario == "scale" {
		o.levels = numbers("levels", levels)
	}
	if o.scenario == "capi" {
		var err error
		if o.preloads, err = preloadList(preloads); err != nil {
			fmt.Fprintln(os.Stderr, "load:", err)
			os.Exit(2)
		}
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}
