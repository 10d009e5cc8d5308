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
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// watched are the counters the report sums over the run, by the label
// that splits them (others, such as pool, are summed over).
var watched = map[string][]string{
	"kipam_prefixes_released_total":                     {"cause"},
	"kipam_forwarded_total":                             {"result"},
	"kipam_claims_denied_total":                         {"reason"},
	"apiserver_validating_admission_policy_check_total": {"policy", "enforcement_action", "error_type"},
	"apiserver_admission_webhook_rejection_count":       {"name", "operation", "error_type", "rejection_code"},
}

// gauges are the gauges whose largest value over the run the report
// gives, summed over the other labels in one scrape of one process.
var gauges = map[string][]string{
	"workqueue_depth": {"name"},
}

// counters scrapes the replicas' and the API server's /metrics every few
// seconds and sums each watched counter over the run: a process that
// restarts starts its counters again from zero, which a scrape notices as
// a value lower than the last. What a process counted after its last
// scrape before it was killed is lost, so the sums are lower bounds.
type counters struct {
	mu   sync.Mutex
	last map[string]float64 // source and series -> last value
	sum  map[string]float64 // metric{label} -> total
	max  map[string]float64 // gauge{label} -> largest
}

type scrapeTarget struct {
	name   string
	url    string
	client *http.Client
}

func (c *counters) run(ctx context.Context, targets func() []scrapeTarget) {
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for {
		for _, tg := range targets() {
			c.scrape(ctx, tg)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *counters) scrape(ctx context.Context, tg scrapeTarget) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, tg.url, nil)
	if err != nil {
		return
	}
	resp, err := tg.client.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last, c.sum, c.max = map[string]float64{}, map[string]float64{}, map[string]float64{}
	}
	now := map[string]float64{} // this scrape's gauges
	defer func() {
		for k, v := range now {
			c.max[k] = max(c.max[k], v)
		}
	}()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, value, ok := parseSample(line)
		if split, gauge := gauges[name]; ok && gauge && tg.name != "kube-apiserver" {
			now[metricKey(name, labels, split)] += value
			continue
		}
		split, watch := watched[name]
		if !ok || !watch {
			continue
		}
		series := tg.name + " " + line[:strings.LastIndexByte(line, ' ')]
		prev, seen := c.last[series]
		delta := value - prev
		if !seen || value < prev {
			delta = value // first sight, or the process started again
		}
		c.last[series] = value
		c.sum[metricKey(name, labels, split)] += delta
	}
}

// metricKey names a metric by the labels in split.
func metricKey(name string, labels map[string]string, split []string) string {
	var parts []string
	for _, l := range split {
		if labels[l] != "" {
			parts = append(parts, fmt.Sprintf("%s=%q", l, labels[l]))
		}
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// parseSample reads a text-format sample line: name{k="v",...} value.
func parseSample(line string) (name string, labels map[string]string, value float64, ok bool) {
	sp := strings.LastIndexByte(line, ' ')
	if sp < 0 {
		return "", nil, 0, false
	}
	v, err := strconv.ParseFloat(line[sp+1:], 64)
	if err != nil {
		return "", nil, 0, false
	}
	head := line[:sp]
	labels = map[string]string{}
	if i := strings.IndexByte(head, '{'); i >= 0 {
		name = head[:i]
		body := strings.TrimSuffix(head[i+1:], "}")
		for body != "" {
			eq := strings.IndexByte(body, '=')
			if eq < 0 || eq+1 >= len(body) || body[eq+1] != '"' {
				break
			}
			k := body[:eq]
			rest := body[eq+2:]
			end := strings.IndexByte(rest, '"')
			if end < 0 {
				break
			}
			labels[k] = rest[:end]
			body = strings.TrimPrefix(rest[end+1:], ",")
		}
	} else {
		name = head
	}
	return name, labels, v, true
}

func (c *counters) write(w io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.sum))
	for k := range c.sum {
		if c.sum[k] > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	fmt.Fprintln(w, "counted by kipam and the API server over the run (scraped every 3 s, summed across restarts: lower bounds):")
	for _, k := range keys {
		fmt.Fprintf(w, "  %8.0f  %s\n", c.sum[k], k)
	}
	keys = keys[:0]
	for k := range c.max {
		if c.max[k] > 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %8.0f  largest %s (one replica's controller queue)\n", c.max[k], k)
	}
}
