package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
)

// The files under deploy/ are checked offline by deploy/validate (Helm,
// Kubernetes and Compose schemas). What only this binary knows is checked
// here: that the Sluice configs they carry load, and that every flag they
// pass exists.

// pendingFlags are flags the deployment files already pass that `sluice
// serve` does not have yet.
var pendingFlags = map[string]bool{}

// commandFlags returns the flags `sluice <command> -h` lists.
func commandFlags(t *testing.T, command string) map[string]bool {
	t.Helper()
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{command, "-h"}, io.Discard, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("sluice %s -h: %v", command, err)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)`).FindAllStringSubmatch(stderr.String(), -1) {
		flags[m[1]] = true
	}
	if len(flags) == 0 {
		t.Fatalf("sluice %s -h listed no flags:\n%s", command, stderr.String())
	}
	return flags
}

func checkFlags(t *testing.T, where, command string, args []string) {
	t.Helper()
	known := commandFlags(t, command)
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			t.Errorf("%s: sluice %s: argument %q is not a flag", where, command, a)
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !known[name] && !pendingFlags[name] {
			t.Errorf("%s: sluice %s has no flag --%s", where, command, name)
		}
	}
}

func TestDeployCompose(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "compose")
	if _, err := config.LoadConfig(filepath.Join(dir, "sluice.yaml")); err != nil {
		t.Error(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for name, svc := range compose.Services {
		if len(svc.Command) == 0 {
			continue
		}
		switch cmd := svc.Command[0]; cmd {
		case "serve", "fnsim":
			seen[cmd] = true
			checkFlags(t, "compose.yaml service "+name, cmd, svc.Command[1:])
		}
	}
	if !seen["serve"] || !seen["fnsim"] {
		t.Errorf("compose.yaml: want services running serve and fnsim, saw %v", seen)
	}
}

func TestDeployHelmChart(t *testing.T) {
	chart := filepath.Join("..", "..", "deploy", "helm", "sluice")
	ci, err := filepath.Glob(filepath.Join(chart, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The config each values file carries (the chart writes it out as is).
	for _, f := range slices.Concat([]string{filepath.Join(chart, "values.yaml")}, ci) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var values struct {
			Config yaml.Node `yaml:"config"`
		}
		if err := yaml.Unmarshal(b, &values); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if values.Config.Kind == 0 {
			continue // this values file leaves the config alone
		}
		cfg, err := yaml.Marshal(&values.Config)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := config.ParseConfig(cfg); err != nil {
			t.Errorf("%s: config: %v", f, err)
		}
	}
	// The flags the Deployment passes, read from its template.
	b, err := os.ReadFile(filepath.Join(chart, "templates", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, m := range regexp.MustCompile(`(?m)^\s+- (--[a-z][a-z0-9-]*)=`).FindAllStringSubmatch(string(b), -1) {
		args = append(args, m[1])
	}
	if len(args) < 5 {
		t.Fatalf("found only %q in the Deployment's args", args)
	}
	checkFlags(t, "deployment.yaml", "serve", args)
}
