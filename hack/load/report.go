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

package main

import (
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

func ms(us int64) float64 { return float64(us) / 1000 }

func (r *result) load() string {
	if r.rate > 0 {
		return fmt.Sprintf("%.0f/s open loop", r.rate)
	}
	return fmt.Sprintf("%d workers", r.workers)
}

func (r *result) throughput() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

func (r *result) print() {
	fmt.Printf("%s rep %d, %s, %s: %d/%d ok in %s (%.0f/s); latency p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms",
		r.scenario, r.rep+1, r.load(), kindOf(r.kind), r.ok, r.n, r.elapsed.Round(time.Millisecond), r.throughput(),
		ms(r.latency.ValueAtQuantile(50)), ms(r.latency.ValueAtQuantile(95)), ms(r.latency.ValueAtQuantile(99)), ms(r.latency.Max()))
	if r.ready.TotalCount() > 0 {
		what := "Ready"
		if r.kind == bare {
			what = "watch event"
		}
		fmt.Printf("; create to %s p50 %.0f ms, p95 %.0f ms, p99 %.0f ms, the last %s after the last create",
			what, ms(r.ready.ValueAtQuantile(50)), ms(r.ready.ValueAtQuantile(95)), ms(r.ready.ValueAtQuantile(99)), r.lastReady.Round(time.Millisecond))
	}
	fmt.Printf("; duplicates %d; writes %.2f per object", r.duplicates, r.writes)
	if r.kind == kipam && r.release > 0 {
		fmt.Printf("; released in %s", r.release.Round(time.Millisecond))
	}
	if r.process.ok {
		fmt.Printf("; kipam %.2f CPU s per 1,000, heap %.1f MB, RSS %.1f MB", r.process.cpu/float64(max(r.n, 1))*1000, r.process.heap/1e6, r.process.rss/1e6)
	}
	fmt.Println()
	for _, k := range slices.SortedFunc(maps.Keys(r.writesBy), func(a, b requestKey) int { return cmp.Compare(a.String(), b.String()) }) {
		note := ""
		if k.resource == "leases" {
			note = " (renewals on a clock: not counted)"
		}
		fmt.Printf("    %-7s %-28s %8.0f  %.3f per object%s\n", k.verb, k.resource, r.writesBy[k], r.writesBy[k]/float64(max(r.n, 1)), note)
	}
	for msg, n := range r.failures {
		fmt.Printf("    failed %d×: %s\n", n, msg)
	}
}

// stat is one figure of a run; the summary gives its median and spread over
// the repetitions.
type stat struct {
	name  string
	get   func(*result) float64
	ratio bool // whether kipam's figure over the bare one means something
}

var stats = []stat{
	{"throughput /s", (*result).throughput, true},
	{"p50 ms", func(r *result) float64 { return ms(r.latency.ValueAtQuantile(50)) }, true},
	{"p95 ms", func(r *result) float64 { return ms(r.latency.ValueAtQuantile(95)) }, true},
	{"p99 ms", func(r *result) float64 { return ms(r.latency.ValueAtQuantile(99)) }, true},
	{"max ms", func(r *result) float64 { return ms(r.latency.Max()) }, true},
	{"to Ready (bare: watch) p95 ms", func(r *result) float64 { return ms(r.ready.ValueAtQuantile(95)) }, false},
	{"last Ready after last create s", func(r *result) float64 { return r.lastReady.Seconds() }, false},
	{"writes per object", func(r *result) float64 { return r.writes }, true},
}

// summary prints, per load and kind, the median and the range of each
// figure over the repetitions, and kipam's ratio to the bare create.
func (h *harness) summary() {
	type key struct {
		load, kind string
	}
	groups := map[key][]*result{}
	var loads []string
	for _, r := range h.results {
		k := key{r.load(), r.kind}
		if len(groups[k]) == 0 && r.kind == kipam {
			loads = append(loads, k.load)
		}
		groups[k] = append(groups[k], r)
	}
	fmt.Printf("\nsummary of %s, %s, depth %d, %d preloaded: median (min–max) over the repetitions\n\n", h.o.scenario, h.o.family, h.o.depth, h.o.preload)
	fmt.Print("| load | kind | runs |")
	for _, s := range stats {
		fmt.Printf(" %s |", s.name)
	}
	fmt.Print("\n|---|---|--:|")
	fmt.Print(strings.Repeat("--:|", len(stats)))
	fmt.Println()
	median := func(rs []*result, s stat) (float64, float64, float64) {
		var v []float64
		for _, r := range rs {
			v = append(v, s.get(r))
		}
		slices.Sort(v)
		return v[len(v)/2], v[0], v[len(v)-1]
	}
	for _, load := range loads {
		for _, kind := range []string{bare, kipam} {
			rs := groups[key{load, kind}]
			if len(rs) == 0 {
				continue
			}
			fmt.Printf("| %s | %s | %d |", load, kindOf(kind), len(rs))
			for _, s := range stats {
				m, lo, hi := median(rs, s)
				fmt.Printf(" %s (%s–%s) |", num(m), num(lo), num(hi))
			}
			fmt.Println()
		}
		b, k := groups[key{load, bare}], groups[key{load, kipam}]
		if len(b) > 0 && len(k) > 0 {
			fmt.Printf("| %s | ratio | |", load)
			for _, s := range stats {
				mb, _, _ := median(b, s)
				mk, _, _ := median(k, s)
				if mb == 0 || !s.ratio {
					fmt.Print(" |")
					continue
				}
				fmt.Printf(" %.2f× |", mk/mb)
			}
			fmt.Println()
		}
	}
}

func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// check fails the invocation when a run handed out a prefix twice, failed a
// request, or cost more writes per claim than -max-writes.
func (h *harness) check() error {
	var errs []error
	for _, r := range h.results {
		what := fmt.Sprintf("%s rep %d, %s, %s", r.scenario, r.rep+1, r.load(), kindOf(r.kind))
		if r.duplicates > 0 {
			errs = append(errs, fmt.Errorf("%s: %d prefixes handed out twice or overlapping", what, r.duplicates))
		}
		for msg, n := range r.failures {
			errs = append(errs, fmt.Errorf("%s: %d× %s", what, n, msg))
		}
		if h.o.maxWrites > 0 && r.kind == kipam && r.scenario == "create" && r.writes > h.o.maxWrites {
			errs = append(errs, fmt.Errorf("%s: %.2f API writes per claim, more than %.2f", what, r.writes, h.o.maxWrites))
		}
	}
	return errors.Join(errs...)
}

// csvFile appends one row per run.
type csvFile struct {
	f *os.File
	w *csv.Writer
}

var csvHeader = []string{"date", "scenario", "family", "depth", "preload", "kind", "workers", "rate", "rep", "objects", "ok", "failed",
	"elapsed_s", "throughput_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "ready_p50_ms", "ready_p95_ms", "ready_p99_ms",
	"last_ready_s", "duplicates", "writes_per_object", "release_s", "kipam_cpu_s_per_1000", "kipam_heap_mb", "kipam_rss_mb"}

func openCSV(path string) (*csvFile, error) {
	if path == "" {
		return &csvFile{}, nil
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	c := &csvFile{f: f, w: csv.NewWriter(f)}
	if statErr != nil {
		_ = c.w.Write(csvHeader)
	}
	return c, nil
}

func (c *csvFile) write(h *harness, r *result) error {
	if c.w == nil {
		return nil
	}
	failed := 0
	for _, n := range r.failures {
		failed += n
	}
	q := func(hist *hdrhistogram.Histogram, p float64) string {
		return strconv.FormatFloat(ms(hist.ValueAtQuantile(p)), 'f', 3, 64)
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	cpu, heap, rss := "", "", ""
	if r.process.ok {
		cpu, heap, rss = f(r.process.cpu/float64(max(r.n, 1))*1000), f(r.process.heap/1e6), f(r.process.rss/1e6)
	}
	_ = c.w.Write([]string{time.Now().UTC().Format(time.RFC3339), r.scenario, h.o.family, strconv.Itoa(h.o.depth), strconv.Itoa(r.preload),
		r.kind, strconv.Itoa(r.workers), f(r.rate), strconv.Itoa(r.rep + 1), strconv.Itoa(r.n), strconv.Itoa(r.ok), strconv.Itoa(failed),
		f(r.elapsed.Seconds()), f(r.throughput()), q(r.latency, 50), q(r.latency, 95), q(r.latency, 99), f(ms(r.latency.Max())),
		q(r.ready, 50), q(r.ready, 95), q(r.ready, 99), f(r.lastReady.Seconds()), strconv.Itoa(r.duplicates), f(r.writes),
		f(r.release.Seconds()), cpu, heap, rss})
	c.w.Flush()
	return c.w.Error()
}

func (c *csvFile) Close() error {
	if c.f == nil {
		return nil
	}
	return c.f.Close()
}
