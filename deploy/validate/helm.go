package main

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/engine"
)

// kubeVersion is the Kubernetes version the chart is linted and rendered
// for: the oldest its Chart.yaml allows.
const kubeVersion = "v1.25.0"

// lintChart is `helm lint --strict` with the values in valuesFile (none if
// empty): errors and warnings both fail.
func lintChart(chartDir, valuesFile string) []error {
	vals := map[string]any{}
	if valuesFile != "" {
		v, err := common.ReadValuesFile(valuesFile)
		if err != nil {
			return []error{err}
		}
		vals = v
	}
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		return []error{err}
	}
	l := lint.RunAll(chartDir, vals, "sluice", lint.WithKubeVersion(kv))
	var errs []error
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			errs = append(errs, fmt.Errorf("helm lint %s: %s", valuesLabel(valuesFile), m))
		}
	}
	return errs
}

// renderChart is `helm template` with the values in valuesFile (none if
// empty): the rendered manifests by template, NOTES.txt left out.
func renderChart(chartDir, valuesFile string) (map[string]string, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	vals := map[string]any{}
	if valuesFile != "" {
		if vals, err = common.ReadValuesFile(valuesFile); err != nil {
			return nil, err
		}
	}
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	caps := common.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	if !chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, kv.String()) {
		return nil, fmt.Errorf("chart's kubeVersion %q excludes %s", ch.Metadata.KubeVersion, kv)
	}
	opts := common.ReleaseOptions{Name: "sluice", Namespace: "sluice", Revision: 1, IsInstall: true}
	rv, err := util.ToRenderValues(ch, vals, opts, caps)
	if err != nil {
		return nil, err
	}
	out, err := engine.Render(ch, rv)
	if err != nil {
		return nil, err
	}
	for name := range out {
		if strings.HasSuffix(name, "NOTES.txt") {
			delete(out, name)
		}
	}
	return out, nil
}

// checkChart lints and renders the chart with each values file ("" for the
// defaults), decodes every rendered object strictly into its Kubernetes API
// type and checks the objects together.
func checkChart(chartDir string, valuesFiles []string) []error {
	var errs []error
	for _, vf := range valuesFiles {
		errs = append(errs, lintChart(chartDir, vf)...)
		out, err := renderChart(chartDir, vf)
		if err != nil {
			errs = append(errs, fmt.Errorf("helm template %s: %w", valuesLabel(vf), err))
			continue
		}
		var ms []manifest
		for _, name := range slices.Sorted(maps.Keys(out)) {
			got, derrs := decodeManifests(filepath.Base(name), splitYAML([]byte(out[name])))
			ms = append(ms, got...)
			for _, e := range derrs {
				errs = append(errs, fmt.Errorf("helm template %s: %w", valuesLabel(vf), e))
			}
		}
		for _, e := range checkManifests(ms) {
			errs = append(errs, fmt.Errorf("helm template %s: %w", valuesLabel(vf), e))
		}
	}
	return errs
}

func valuesLabel(valuesFile string) string {
	if valuesFile == "" {
		return "(default values)"
	}
	return "-f " + filepath.Base(valuesFile)
}
