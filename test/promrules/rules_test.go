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

// Package promrules checks the alerting rules the Helm chart ships
// (dist/chart/templates/prometheusrule.yaml) with Prometheus' own rule
// parser, and against the metrics kipam exports. It is a module of its
// own so that the main go.mod does not require Prometheus.
package promrules

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/kipam/kipam/internal/metrics"
	"github.com/kipam/kipam/internal/metrics/poolmetrics"
)

// render runs helm template on the chart with flags and returns its output.
func render(t *testing.T, flags ...string) string {
	t.Helper()
	helm := os.Getenv("HELM")
	if helm == "" {
		helm = filepath.Join("..", "..", "bin", "helm")
	}
	args := append([]string{"template", "kipam", filepath.Join("..", "..", "dist", "chart"), "--namespace", "kipam-system"}, flags...)
	out, err := exec.Command(helm, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// prometheusRule is a PrometheusRule as this test reads it: its labels,
// and its rules as Prometheus parsed them.
type prometheusRule struct {
	labels map[string]string
	groups *rulefmt.RuleGroups
}

// rules returns the PrometheusRule among the documents of out, its rules
// parsed and checked by rulefmt as Prometheus would load them.
func rules(t *testing.T, out string) prometheusRule {
	t.Helper()
	for _, doc := range strings.Split(out, "\n---\n") {
		if !strings.Contains(doc, "kind: PrometheusRule") {
			continue
		}
		var pr struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
			Spec map[string]any `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &pr); err != nil {
			t.Fatal(err)
		}
		spec, err := yaml.Marshal(pr.Spec)
		if err != nil {
			t.Fatal(err)
		}
		groups, errs := rulefmt.Parse(spec, false, model.LegacyValidation, parser.NewParser(parser.Options{}), nil)
		if len(errs) > 0 {
			t.Fatalf("Prometheus would not load the rules: %v\n%s", errs, spec)
		}
		return prometheusRule{labels: pr.Metadata.Labels, groups: groups}
	}
	t.Fatalf("no PrometheusRule in\n%s", out)
	return prometheusRule{}
}

// exported returns the labels of each metric kipam exports, by name.
func exported(t *testing.T) map[string][]string {
	t.Helper()
	ch := make(chan *prometheus.Desc, 100)
	for _, c := range []prometheus.Collector{poolmetrics.NewPoolCollector(nil),
		metrics.ClaimsDenied, metrics.Released, metrics.LedgerBytes, metrics.Forwarded} {
		c.Describe(ch)
	}
	close(ch)
	re := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	names := map[string][]string{}
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read %s", d)
		}
		names[m[1]] = strings.Split(m[2], ",")
	}
	if len(names) < 16 {
		t.Fatalf("only %d metrics described: %v", len(names), names)
	}
	return names
}

func TestRulesLoadAndNameExportedMetrics(t *testing.T) {
	pr := rules(t, render(t, "--set", "metrics.prometheusRule.enabled=true",
		"--set", "metrics.prometheusRule.labels.release=prom"))
	if pr.labels["release"] != "prom" {
		t.Errorf("labels %v: want release=prom from metrics.prometheusRule.labels", pr.labels)
	}
	names := exported(t)
	var alerts []string
	for _, g := range pr.groups.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("%s: %v", r.Alert, err)
			}
			// Every selector names a metric kipam exports, and every
			// aggregation keeps only labels the metrics under it have.
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				switch n := n.(type) {
				case *parser.VectorSelector:
					if _, ok := names[n.Name]; !ok {
						t.Errorf("%s: %s is not a metric kipam exports", r.Alert, n.Name)
					}
				case *parser.AggregateExpr:
					parser.Inspect(n.Expr, func(m parser.Node, _ []parser.Node) error {
						if vs, ok := m.(*parser.VectorSelector); ok {
							for _, l := range n.Grouping {
								if labels, ok := names[vs.Name]; ok && !slices.Contains(labels, l) {
									t.Errorf("%s: %s has no label %q to aggregate by", r.Alert, vs.Name, l)
								}
							}
						}
						return nil
					})
				}
				return nil
			})
		}
	}
	want := []string{"KipamPoolNearlyFull", "KipamPoolExhausted", "KipamClaimsDenied",
		"KipamLedgerNearlyFull", "KipamNamespaceAtLimit", "KipamPrefixesOrphaned", "KipamForwardingFailing"}
	if !slices.Equal(alerts, want) {
		t.Errorf("alerts %v, want %v", alerts, want)
	}
}

func TestRulesTakeTheirThresholdsFromValues(t *testing.T) {
	pr := rules(t, render(t, "--set", "metrics.prometheusRule.enabled=true",
		"--set", "metrics.prometheusRule.poolUsagePercent=80", "--set", "metrics.prometheusRule.ledgerBytes=500000"))
	exprs := map[string]string{}
	for _, r := range pr.groups.Groups[0].Rules {
		exprs[r.Alert] = r.Expr
	}
	if !strings.HasSuffix(exprs["KipamPoolNearlyFull"], "> 80") || !strings.HasSuffix(exprs["KipamLedgerNearlyFull"], "> 500000") {
		t.Errorf("thresholds not taken from values: %q, %q", exprs["KipamPoolNearlyFull"], exprs["KipamLedgerNearlyFull"])
	}
}

func TestNoRulesUnlessAsked(t *testing.T) {
	if out := render(t); strings.Contains(out, "kind: PrometheusRule") {
		t.Error("the chart renders a PrometheusRule by default (its CRD may not exist)")
	}
}
