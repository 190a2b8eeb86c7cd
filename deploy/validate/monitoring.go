package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	promds "github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// knownMetrics reads the series Sluice exports from the README's metrics
// table (each row's first cell names them: `sluice_x{labels}` / `sluice_y`),
// with a histogram's _bucket, _sum and _count: the rules and the dashboard
// may read these and no others, so a renamed metric fails here rather than
// in an operator's empty panel.
func knownMetrics(readme string) (map[string]bool, error) {
	f, err := os.Open(readme)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	name := regexp.MustCompile("`(sluice_[a-z_]+)")
	known := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "| `sluice_") {
			continue
		}
		cells := strings.Split(line, "|")
		histogram := len(cells) > 2 && strings.TrimSpace(cells[2]) == "histogram"
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			known[m[1]] = true
			if histogram {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					known[m[1]+suffix] = true
				}
			}
		}
	}
	if len(known) == 0 {
		return nil, fmt.Errorf("%s: no metrics table found", readme)
	}
	return known, sc.Err()
}

// seriesRead returns the metric names a PromQL expression reads.
func seriesRead(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && vs.Name != "" {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names, nil
}

// checkSeries reports the series of expr (where) that Sluice does not
// export.
func checkSeries(where, expr string, known map[string]bool) []error {
	names, err := seriesRead(expr)
	if err != nil {
		return []error{fmt.Errorf("%s: %w", where, err)}
	}
	var errs []error
	for _, n := range names {
		if !known[n] {
			errs = append(errs, fmt.Errorf("%s: reads %s, which Sluice does not export (README's metrics table)", where, n))
		}
	}
	return errs
}

// checkAlertRules parses a Prometheus rule file as Prometheus does (every
// expression, label and annotation template) and checks that its rules
// read only series Sluice exports.
func checkAlertRules(file string, known map[string]bool) []error {
	b, err := os.ReadFile(file)
	if err != nil {
		return []error{err}
	}
	groups, errs := rulefmt.Parse(b, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		return prefixed(file, errs)
	}
	var out []error
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				out = append(out, fmt.Errorf("%s: rule %q: an alert needs a name, a severity label and a summary", file, r.Alert))
			}
			out = append(out, checkSeries(fmt.Sprintf("%s: alert %s", file, r.Alert), r.Expr, known)...)
		}
	}
	return out
}

// grafanaVariables are replaced before a panel's query is parsed: Grafana
// fills them in, PromQL does not know them.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$function", ".*")

// checkDashboard decodes a Grafana dashboard strictly against Grafana's
// dashboard schema (the foundation SDK's: unknown or mistyped fields, and
// missing required ones, are errors), validates it, and checks that every
// panel's query parses and reads only series Sluice exports.
func checkDashboard(file string, known map[string]bool) []error {
	b, err := os.ReadFile(file)
	if err != nil {
		return []error{err}
	}
	rt := cog.NewRuntime()
	rt.RegisterPanelcfgVariant(timeseries.VariantConfig())
	rt.RegisterDataqueryVariant(promds.VariantConfig())
	//lint:ignore SA1019 the classic dashboard JSON is what Grafana's file and sidecar provisioning load; v2 is its Kubernetes API's
	var d dashboard.Dashboard
	if errs := buildErrors(d.UnmarshalJSONStrict(b)); len(errs) > 0 {
		return prefixed(file, errs)
	}
	if errs := buildErrors(d.Validate()); len(errs) > 0 {
		return prefixed(file, errs)
	}
	// Its queries, read plainly: the SDK's decoding checks their shape,
	// but leaves a panel's targets out of what it returns.
	var raw struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return []error{fmt.Errorf("%s: %w", file, err)}
	}
	var out []error
	for _, p := range raw.Panels {
		if len(p.Targets) == 0 {
			out = append(out, fmt.Errorf("%s: panel %q has no query", file, p.Title))
		}
		for _, t := range p.Targets {
			out = append(out, checkSeries(fmt.Sprintf("%s: panel %q", file, p.Title), grafanaVariables.Replace(t.Expr), known)...)
		}
	}
	return out
}

// buildErrors unwraps the foundation SDK's errors: it returns a typed nil
// for none.
func buildErrors(err error) []error {
	var be cog.BuildErrors
	if errors.As(err, &be) {
		out := make([]error, 0, len(be))
		for _, e := range be {
			out = append(out, e)
		}
		return out
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

func prefixed(file string, errs []error) []error {
	return slices.Collect(func(yield func(error) bool) {
		for _, e := range errs {
			if !yield(fmt.Errorf("%s: %w", file, e)) {
				return
			}
		}
	})
}
