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

// Command loadplot draws hack/load's CSV as a PNG: create latency (p50, p95,
// p99, the median over the repetitions) against the number of workers,
// kipam beside the bare CRD, on a log scale. It is a module of its own so
// that gonum/plot and its fonts stay out of kipam's go.mod.
//
//	go run . -in /tmp/load.csv -out ../../docs/claim-latency.png
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"image/color"
	"os"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

func main() {
	in := flag.String("in", "load.csv", "CSV written by hack/load -csv")
	out := flag.String("out", "claim-latency.png", "PNG to write")
	scenario := flag.String("scenario", "create", "rows of this scenario only")
	title := flag.String("title", "Create latency against concurrency", "title of the plot")
	flag.Parse()
	if err := run(*in, *out, *scenario, *title); err != nil {
		fmt.Fprintln(os.Stderr, "loadplot:", err)
		os.Exit(1)
	}
}

type key struct {
	kind, quantile string
	workers        int
}

func run(in, out, scenario, title string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return err
	}
	if len(rows) < 2 {
		return fmt.Errorf("%s has no runs", in)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	for _, need := range []string{"scenario", "kind", "workers", "rate", "p50_ms", "p95_ms", "p99_ms"} {
		if _, ok := col[need]; !ok {
			return fmt.Errorf("%s has no column %s", in, need)
		}
	}
	values := map[key][]float64{}
	for _, r := range rows[1:] {
		if r[col["scenario"]] != scenario || r[col["rate"]] != "0.000" {
			continue // open-loop runs have no worker count
		}
		w, err := strconv.Atoi(r[col["workers"]])
		if err != nil {
			return err
		}
		for _, q := range []string{"p50", "p95", "p99"} {
			v, err := strconv.ParseFloat(r[col[q+"_ms"]], 64)
			if err != nil {
				return err
			}
			k := key{r[col["kind"]], q, w}
			values[k] = append(values[k], v)
		}
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "concurrent clients (closed loop)"
	p.Y.Label.Text = "create latency, ms (median of the repetitions)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = false, false // bottom right, below the lines
	p.Legend.XOffs = -vg.Points(20)            // clear of the right edge
	p.X.Min, p.X.Max = 0.8, 80                 // room for the end points' marks
	colors := map[string]color.Color{"kipam": color.RGBA{R: 200, G: 40, B: 40, A: 255}, "bare": color.RGBA{R: 40, G: 80, B: 200, A: 255}}
	dashes := map[string][]vg.Length{"p50": nil, "p95": {vg.Points(6), vg.Points(3)}, "p99": {vg.Points(2), vg.Points(2)}}
	for _, kind := range []string{"bare", "kipam"} {
		for _, q := range []string{"p50", "p95", "p99"} {
			var pts plotter.XYs
			var workers []int
			for k := range values {
				if k.kind == kind && k.quantile == q {
					workers = append(workers, k.workers)
				}
			}
			slices.Sort(workers)
			for _, w := range workers {
				v := values[key{kind, q, w}]
				slices.Sort(v)
				pts = append(pts, plotter.XY{X: float64(w), Y: v[len(v)/2]})
			}
			if len(pts) == 0 {
				continue
			}
			line, points, err := plotter.NewLinePoints(pts)
			if err != nil {
				return err
			}
			line.Color, line.Dashes = colors[kind], dashes[q]
			points.Color, points.Shape = colors[kind], draw.CircleGlyph{}
			p.Add(line, points)
			name := "IPClaim (kipam)"
			if kind == "bare" {
				name = "bare CRD, same schema"
			}
			p.Legend.Add(name+" "+q, line, points)
		}
	}
	return p.Save(7*vg.Inch, 5*vg.Inch, out)
}
