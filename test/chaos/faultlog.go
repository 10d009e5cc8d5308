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
	"sort"
	"strings"
	"sync"
	"time"
)

// faultLog knows which faults are active, so that each client operation is
// counted under them, and keeps a timestamped log of what the harness did
// and saw, printed as it happens and quoted around a failure.
type faultLog struct {
	mu     sync.Mutex
	start  time.Time
	out    io.Writer
	open   map[string]int
	lines  []logLine
	counts map[string]int // faults injected, by kind
}

type logLine struct {
	at   time.Time
	text string
}

func newFaultLog(out io.Writer) *faultLog {
	return &faultLog{start: time.Now(), out: out, open: map[string]int{}, counts: map[string]int{}}
}

func (f *faultLog) logf(at time.Time, format string, args ...any) {
	line := fmt.Sprintf("[chaos +%7.1fs] %s", at.Sub(f.start).Seconds(), fmt.Sprintf(format, args...))
	f.lines = append(f.lines, logLine{at: at, text: line})
	fmt.Fprintln(f.out, line)
}

// rebase makes offsets count from now (the start of the traffic, which
// the schedule's offsets count from).
func (f *faultLog) rebase() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.start = time.Now()
}

// origin is when offsets count from.
func (f *faultLog) origin() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.start
}

// begin marks a fault of kind active and logs it.
func (f *faultLog) begin(kind, format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.open[kind]++
	f.counts[kind]++
	f.logf(time.Now(), "%s begins: %s", kind, fmt.Sprintf(format, args...))
}

// finish marks it over.
func (f *faultLog) finish(kind, format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open[kind]--; f.open[kind] <= 0 {
		delete(f.open, kind)
	}
	f.logf(time.Now(), "%s ends: %s", kind, fmt.Sprintf(format, args...))
}

// event logs something the harness did or saw.
func (f *faultLog) event(what, format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logf(time.Now(), "%s: %s", what, fmt.Sprintf(format, args...))
}

// active is the sorted kinds of the faults active now.
func (f *faultLog) active() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.open))
	for k := range f.open {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// around returns the log lines from a little before t0 to a little after t1.
func (f *faultLog) around(t0, t1 time.Time, margin time.Duration) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.lines {
		if !l.at.Before(t0.Add(-margin)) && !l.at.After(t1.Add(margin)) {
			out = append(out, l.text)
		}
	}
	return out
}

// matching returns the log lines containing s.
func (f *faultLog) matching(s string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.lines {
		if strings.Contains(l.text, s) {
			out = append(out, l.text)
		}
	}
	return out
}

func (f *faultLog) injected() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.counts {
		out[k] = v
	}
	return out
}

// since is the offset of t from the start of the run.
func (f *faultLog) since(t time.Time) string {
	return fmt.Sprintf("+%.1fs", t.Sub(f.start).Seconds())
}
