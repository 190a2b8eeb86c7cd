// Command validate checks Sluice's deployment files offline: the Helm chart
// (helm lint, then helm template with each set of values, every object
// decoded strictly into its Kubernetes API type and checked), the Compose
// file (loaded against the Compose specification), the NATS server config
// (parsed by nats-server itself), the Dockerfile (BuildKit's parser and
// build checks), and the Prometheus alert rules (parsed as Prometheus does)
// and Grafana dashboard (decoded strictly against Grafana's schema), each
// query reading only series Sluice exports. It needs no cluster, no Docker
// and no network.
//
//	cd deploy/validate && go run .
//
// It is a module of its own so that Helm, Kubernetes and Compose stay out
// of Sluice's go.mod; `go test` here runs it too, along with cases proving
// that each check rejects a broken file.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	root := flag.String("root", "../..", "the repository's root")
	flag.Parse()
	errs := validateAll(*root)
	for _, err := range errs {
		fmt.Fprintln(os.Stderr, err)
	}
	if len(errs) > 0 {
		fmt.Fprintf(os.Stderr, "deploy: %d problem(s)\n", len(errs))
		os.Exit(1)
	}
	fmt.Println("deploy: chart, compose file, NATS config, Dockerfile, alert rules and dashboard are valid")
}

// validateAll checks every deployment file under root/deploy.
func validateAll(root string) []error {
	root, err := filepath.Abs(root)
	if err != nil {
		return []error{err}
	}
	deploy := filepath.Join(root, "deploy")
	chart := filepath.Join(deploy, "helm", "sluice")
	valuesFiles, err := filepath.Glob(filepath.Join(chart, "ci", "*-values.yaml"))
	if err != nil {
		return []error{err}
	}
	var errs []error
	errs = append(errs, checkChart(chart, append([]string{""}, valuesFiles...))...)
	errs = append(errs, checkCompose(filepath.Join(deploy, "compose", "compose.yaml"))...)
	errs = append(errs, checkNATSConfig(filepath.Join(deploy, "nats", "nats-cluster.conf"), map[string]string{"SERVER_NAME": "nats-1"}, true)...)
	errs = append(errs, checkDockerfile(filepath.Join(deploy, "Dockerfile"))...)
	errs = append(errs, checkDockerContext(root, filepath.Join(deploy, "Dockerfile.dockerignore"))...)
	known, err := knownMetrics(filepath.Join(root, "README.md"))
	if err != nil {
		return append(errs, err)
	}
	errs = append(errs, checkAlertRules(filepath.Join(chart, "files", "sluice-alerts.yaml"), known)...)
	errs = append(errs, checkDashboard(filepath.Join(chart, "files", "sluice-dashboard.json"), known)...)
	return errs
}
