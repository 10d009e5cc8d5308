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
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// Outcomes of a client operation.
const (
	allowed = "allowed" // done as asked
	denied  = "denied"  // refused with a definite answer (4xx): nothing to retry
	failed  = "failed"  // never got a definite answer, after retries
)

// op is one client operation (a create or a delete of a claim or pool,
// with its retries), counted under every fault active when it started.
type op struct {
	id      string
	kind    string // create-claim, delete-claim, create-pool, delete-pool, probe, ...
	faults  []string
	start   time.Time
	http    atomic.Int64 // HTTP requests sent for it, retries included
	retries atomic.Int64 // its own retries after a failed attempt
}

type opKey struct{}

// withOp tags ctx so that the counting transport attributes the HTTP
// requests made under it to o.
func withOp(ctx context.Context, o *op) context.Context { return context.WithValue(ctx, opKey{}, o) }

// countingTransport counts each op's HTTP requests, so that client-go's
// own retries (of a 429 with Retry-After) show as retries.
type countingTransport struct{ next http.RoundTripper }

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if o, ok := r.Context().Value(opKey{}).(*op); ok {
		o.http.Add(1)
	}
	return t.next.RoundTrip(r)
}

type counts struct{ sent, allowed, denied, retried, failed int }

// stats counts operations per fault kind and per operation kind, and why
// they were denied or failed.
type stats struct {
	mu      sync.Mutex
	byFault map[string]*counts
	byOp    map[string]*counts
	denies  map[string]int
	fails   map[string]int
}

func newStats() *stats {
	return &stats{byFault: map[string]*counts{}, byOp: map[string]*counts{}, denies: map[string]int{}, fails: map[string]int{}}
}

var digits = regexp.MustCompile(`[0-9a-f]{6,}|[0-9]+(\.[0-9]+)*|[0-9a-f:]+::[0-9a-f:/]*`)

// reason shortens an error to a countable class: numbers, addresses and
// names dropped, at most 110 characters.
func reason(op string, err error) string {
	s := err.Error()
	if i := strings.Index(s, "admission webhook"); i >= 0 {
		s = s[i:]
	}
	s = digits.ReplaceAllString(s, "N")
	s = regexp.MustCompile(`"[^"]*"`).ReplaceAllString(s, `"…"`)
	if len(s) > 110 {
		s = s[:110] + "…"
	}
	return op + ": " + s
}

// done counts o with its outcome (err says why for denied and failed).
func (s *stats) done(o *op, outcome string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	retried := int(o.retries.Load())
	if n := int(o.http.Load()) - 1; n > retried {
		retried = n
	}
	add := func(c *counts) {
		c.sent++
		c.retried += retried
		switch outcome {
		case allowed:
			c.allowed++
		case denied:
			c.denied++
		case failed:
			c.failed++
		}
	}
	faults := o.faults
	if len(faults) == 0 {
		faults = []string{"none"}
	}
	for _, f := range faults {
		if s.byFault[f] == nil {
			s.byFault[f] = &counts{}
		}
		add(s.byFault[f])
	}
	if s.byOp[o.kind] == nil {
		s.byOp[o.kind] = &counts{}
	}
	add(s.byOp[o.kind])
	if s.byOp["all"] == nil {
		s.byOp["all"] = &counts{}
	}
	add(s.byOp["all"])
	switch outcome {
	case denied:
		s.denies[reason(o.kind, err)]++
	case failed:
		s.fails[reason(o.kind, err)]++
	}
}

func (s *stats) write(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	table := func(title string, m map[string]*counts) {
		fmt.Fprintf(w, "%s\n", title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tsent\tallowed\tdenied\tretried\tfailed\t")
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			c := m[k]
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t\n", k, c.sent, c.allowed, c.denied, c.retried, c.failed)
		}
		_ = tw.Flush()
	}
	table("requests by operation:", s.byOp)
	table("requests by fault active when they were sent (an operation under two faults counts under both):", s.byFault)
	top := func(title string, m map[string]int) {
		if len(m) == 0 {
			return
		}
		fmt.Fprintf(w, "%s\n", title)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int {
			if m[a] != m[b] {
				return m[b] - m[a]
			}
			return strings.Compare(a, b)
		})
		for i, k := range keys {
			if i == 12 {
				fmt.Fprintf(w, "  ... %d more\n", len(keys)-i)
				break
			}
			fmt.Fprintf(w, "  %6d  %s\n", m[k], k)
		}
	}
	top("why requests were denied:", s.denies)
	top("why requests failed (no definite answer after retries):", s.fails)
}

// failover measures, for each fault that takes a pool's owner away, how
// long until the pool serves again: a probe claim created in it (answered
// with a prefix), and that claim's release done (deleted and gone).
type failover struct {
	mu      sync.Mutex
	samples map[string][]failoverSample
	// leaks are the leak probes' repair times: from a create refused after
	// kipam committed its prefix until the prefix was free again (0: not
	// within 10 minutes).
	leaks []time.Duration
}

func (f *failover) addLeak(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leaks = append(f.leaks, d)
}

type failoverSample struct {
	pool              string
	victim            string
	created, released time.Duration // 0: never, within the probe's patience
}

func (f *failover) add(kind string, s failoverSample) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.samples == nil {
		f.samples = map[string][]failoverSample{}
	}
	f.samples[kind] = append(f.samples[kind], s)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.999999) - 1 // nearest rank
	return s[max(0, min(i, len(s)-1))]
}

func (f *failover) write(w io.Writer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fmt.Fprintln(w, "failover: time from the fault until a probe claim in the pool was created, and until its release was done")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fault\tn\tcreate p50\tcreate p99\trelease p50\trelease p99\tnever served\tnever released\t")
	kinds := make([]string, 0, len(f.samples))
	for k := range f.samples {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var all []failoverSample
	row := func(name string, ss []failoverSample) {
		var created, released []time.Duration
		never, unreleased := 0, 0
		for _, s := range ss {
			if s.created == 0 {
				never++
				continue
			}
			created = append(created, s.created)
			if s.released > 0 {
				released = append(released, s.released)
			} else {
				unreleased++
			}
		}
		r := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t\n", name, len(ss), r(percentile(created, .5)), r(percentile(created, .99)),
			r(percentile(released, .5)), r(percentile(released, .99)), never, unreleased)
	}
	for _, k := range kinds {
		row(k, f.samples[k])
		if k == faultKillOwner || k == faultStopOwner {
			all = append(all, f.samples[k]...)
		}
	}
	row("owner kill+stop", all)
	_ = tw.Flush()
	var repaired []time.Duration
	for _, d := range f.leaks {
		if d > 0 {
			repaired = append(repaired, d)
		}
	}
	r := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
	fmt.Fprintf(w, "leak repair: from a create refused after kipam committed its prefix until the prefix was free again: "+
		"n=%d p50 %s p99 %s max %s, not free within 10 minutes %d (target: the orphan grace plus 10 s)\n",
		len(f.leaks), r(percentile(repaired, .5)), r(percentile(repaired, .99)), r(percentile(repaired, 1)), len(f.leaks)-len(repaired))
}
