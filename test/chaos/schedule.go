//go:build chaos

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

package chaos

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"
)

// The faults.
const (
	faultKillOwner        = "kill-owner"        // SIGKILL the owner of the busiest pool, start it again after Hold
	faultStopOwner        = "stop-owner"        // SIGSTOP it for Hold (longer than its pool Lease), then SIGCONT
	faultRestartReplicas  = "restart-replicas"  // every replica down at once (SIGKILL or SIGTERM), up after Hold
	faultRestartAPIServer = "restart-apiserver" // kube-apiserver down (SIGKILL or SIGTERM), up after Hold
	faultRestartEtcd      = "restart-etcd"      // etcd down (SIGKILL or SIGTERM), up after Hold
	faultRecreatePool     = "recreate-pool"     // delete a leaf pool and create it again under its name
	faultRejectCreates    = "reject-creates"    // a policy refuses a share of claim and pool creates after kipam allowed them
	faultFailReleases     = "fail-releases"     // a policy fails a share of IPAllocation deletes and claim finalizer removals
	faultAmbiguousWrites  = "ambiguous-writes"  // one replica's ledger writes go through, and their answers are dropped or late
	faultMidflight        = "midflight-delete"  // every claim is deleted right after its create returns
	faultDeleteRecords    = "delete-records"    // try to delete IPAllocations and IPLedgers directly
	faultClockOffset      = "clock-offset"      // one replica restarted with its clock off by more than the orphan grace, for Hold
)

// processFaults take turns on one track; backgroundFaults on another, so
// that a policy window or ambiguous writes overlap process faults.
var (
	processFaults    = []string{faultKillOwner, faultStopOwner, faultRestartReplicas, faultRestartAPIServer, faultRestartEtcd, faultRecreatePool, faultClockOffset}
	backgroundFaults = []string{faultRejectCreates, faultFailReleases, faultAmbiguousWrites, faultMidflight, faultDeleteRecords}
)

// step is one planned fault.
type step struct {
	At    time.Duration // planned start, from the start of the traffic; later if the one before it ran long (then Gap after it)
	Kind  string
	Hold  time.Duration // how long the process stays down or stopped, or the window lasts
	Gap   time.Duration // the quiet after it, before the next fault of its track
	How   string        // kill or term for a restart; claims-first or pool-first for recreate-pool
	Pick  int           // which candidate (replica when no owner is known, pool for recreate-pool)
	Share float64       // of ledger writes made ambiguous; of time the release policy refuses
	N     int           // delete-records: how many attempts of each kind
	Shift time.Duration // clock-offset: how far the replica's clock is off (either way)
	Seed  uint64        // for what the fault draws while it runs
}

func (s step) String() string {
	extra := ""
	switch s.Kind {
	case faultRestartReplicas, faultRestartAPIServer, faultRestartEtcd, faultRecreatePool:
		extra = " " + s.How
	case faultAmbiguousWrites, faultFailReleases:
		extra = fmt.Sprintf(" share %.2f", s.Share)
	case faultDeleteRecords:
		extra = fmt.Sprintf(" n=%d", s.N)
	case faultClockOffset:
		extra = fmt.Sprintf(" offset %+.0fs", s.Shift.Seconds())
	}
	return fmt.Sprintf("+%5.1fs %-18s hold %5.1fs%s", s.At.Seconds(), s.Kind, s.Hold.Seconds(), extra)
}

// schedule is the plan of a run, decided by its seed alone.
type schedule struct {
	process, background []step
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// makeSchedule plans faults from warmup until duration. Each track goes
// through its kinds in a seeded order, a new order each round, so every
// kind comes up about as often, and many times in a long run. only, when
// not empty, selects and weighs the kinds: each kind comes up in a round
// as many times as only names it, and a kind it does not name never.
func makeSchedule(seed uint64, warmup, duration, lease, grace time.Duration, only []string) schedule {
	var s schedule
	plan := func(stream uint64, kinds []string, gapLo, gapHi time.Duration, fill func(*rand.Rand, *step)) []step {
		if len(only) > 0 {
			kinds = slices.DeleteFunc(slices.Clone(only), func(k string) bool { return !slices.Contains(kinds, k) })
		}
		rng := rand.New(rand.NewPCG(seed, stream))
		var out []step
		at := warmup
		var round []string
		for at < duration && len(kinds) > 0 {
			if len(round) == 0 {
				round = append([]string(nil), kinds...)
				rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
			}
			st := step{At: at, Kind: round[0], Seed: rng.Uint64()}
			round = round[1:]
			fill(rng, &st)
			st.Gap = between(rng, gapLo, gapHi)
			out = append(out, st)
			at += st.Hold + st.Gap
		}
		return out
	}
	s.process = plan(1, processFaults, 10*time.Second, 25*time.Second, func(rng *rand.Rand, st *step) {
		st.Pick = rng.IntN(1 << 20)
		st.How = []string{"kill", "term"}[rng.IntN(2)]
		switch st.Kind {
		case faultKillOwner:
			st.Hold, st.How = between(rng, time.Second, 8*time.Second), "kill"
		case faultStopOwner:
			st.Hold, st.How = lease+between(rng, 2*time.Second, 10*time.Second), "stop"
		case faultRestartReplicas:
			st.Hold = between(rng, time.Second, 5*time.Second)
		case faultRestartAPIServer, faultRestartEtcd:
			st.Hold = between(rng, time.Second, 6*time.Second)
		case faultRecreatePool:
			st.How = []string{"claims-first", "pool-first"}[rng.IntN(2)]
			st.Hold = 5 * time.Second // nominal: it takes as long as the pool takes to drain
		case faultClockOffset:
			// Past the orphan grace either way: ahead, the replica judges
			// the others' pool Leases lapsed and sightings old at once;
			// behind, its Leases and holds end early by the others' clocks.
			st.Hold = between(rng, 30*time.Second, 90*time.Second)
			st.Shift = grace + between(rng, 5*time.Second, 60*time.Second)
			if rng.IntN(2) == 0 {
				st.Shift = -st.Shift
			}
		}
	})
	s.background = plan(2, backgroundFaults, 5*time.Second, 20*time.Second, func(rng *rand.Rand, st *step) {
		switch st.Kind {
		case faultRejectCreates:
			st.Hold = between(rng, 10*time.Second, 30*time.Second)
		case faultFailReleases:
			st.Hold, st.Share = between(rng, 10*time.Second, 30*time.Second), 0.4
		case faultAmbiguousWrites:
			st.Hold, st.Share = between(rng, 10*time.Second, 30*time.Second), 0.2+0.3*rng.Float64()
		case faultMidflight:
			st.Hold = between(rng, 5*time.Second, 15*time.Second)
		case faultDeleteRecords:
			st.N = 2 + rng.IntN(5)
		}
	})
	return s
}

func (s schedule) write(w io.Writer) {
	fmt.Fprintln(w, "schedule (process track):")
	for _, st := range s.process {
		fmt.Fprintf(w, "  %s\n", st)
	}
	fmt.Fprintln(w, "schedule (background track):")
	for _, st := range s.background {
		fmt.Fprintf(w, "  %s\n", st)
	}
}
