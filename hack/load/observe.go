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
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"
)

// requestKey is a counter of apiserver_request_total: a verb on a
// resource (and subresource).
type requestKey struct{ verb, resource string }

func (k requestKey) String() string { return k.verb + " " + k.resource }

// requests reads the API server's apiserver_request_total, summed over
// codes and scopes, from its /metrics.
func requests(ctx context.Context, cs kubernetes.Interface) (map[requestKey]float64, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's request counts: %w", err)
	}
	families, err := parse(raw)
	if err != nil {
		return nil, err
	}
	out := map[requestKey]float64{}
	for _, m := range families["apiserver_request_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		r := labels["resource"]
		if sub := labels["subresource"]; sub != "" {
			r += "/" + sub
		}
		out[requestKey{labels["verb"], r}] += m.GetCounter().GetValue()
	}
	return out, nil
}

func parse(raw []byte) (map[string]*dto.MetricFamily, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(bytes.NewReader(raw))
}

// writes is what the API server wrote (POST, PUT, PATCH, APPLY) between two
// readings, per object of the run and per resource. Everything counts,
// kipam's writes and the load's own creates alike, except Leases: their
// renewals (kipam's pool owners, leader elections) follow the clock, not the
// claims, so they are listed but not counted.
func writes(before, after map[requestKey]float64, objects int) (float64, map[requestKey]float64) {
	by := map[requestKey]float64{}
	total := 0.0
	for k, v := range after {
		if d := v - before[k]; d > 0 && (k.verb == "POST" || k.verb == "PUT" || k.verb == "PATCH" || k.verb == "APPLY") {
			by[k] = d
			if k.resource != "leases" {
				total += d
			}
		}
	}
	if objects == 0 {
		return 0, by
	}
	return total / float64(objects), by
}

// processSample is kipam's own process metrics at one moment.
type processSample struct {
	at             time.Time
	cpu, heap, rss float64 // CPU seconds, heap in use and resident bytes
	ok             bool
}

// processDelta is kipam's CPU over a run and its memory at the end.
type processDelta struct {
	cpu, heap, rss float64
	ok             bool
}

func (s processSample) since(before processSample) processDelta {
	if !s.ok || !before.ok {
		return processDelta{}
	}
	return processDelta{cpu: s.cpu - before.cpu, heap: s.heap, rss: s.rss, ok: true}
}

// process reads kipam's metrics endpoint, if the run was given one.
func (h *harness) process(ctx context.Context) processSample {
	families := h.managerMetrics(ctx)
	if families == nil {
		return processSample{}
	}
	value := func(name string) float64 {
		f := families[name]
		if f == nil || len(f.GetMetric()) == 0 {
			return 0
		}
		m := f.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return processSample{cpu: value("process_cpu_seconds_total"), heap: value("go_memstats_heap_inuse_bytes"),
		rss: value("process_resident_memory_bytes"), ok: true}
}

// queued is how many items kipam's controllers have queued, or -1 when its
// metrics cannot be read.
func (h *harness) queued(ctx context.Context) float64 {
	families := h.managerMetrics(ctx)
	if families == nil {
		return -1
	}
	n := 0.0
	for _, m := range families["workqueue_depth"].GetMetric() {
		n += m.GetGauge().GetValue()
	}
	return n
}

// managerMetrics reads kipam's metrics endpoint: nil without one, or when
// it does not answer.
func (h *harness) managerMetrics(ctx context.Context) map[string]*dto.MetricFamily {
	if h.o.managerMetrics == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.o.managerMetrics+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil
	}
	families, err := parse(raw)
	if err != nil {
		return nil
	}
	return families
}
