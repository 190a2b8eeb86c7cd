package main

import (
	"errors"
	"io"
	"log"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const root = "../.."

// TestDeployFiles is what CI runs: the repository's deployment files pass
// every check.
func TestDeployFiles(t *testing.T) {
	for _, err := range validateAll(root) {
		t.Error(err)
	}
}

// The tests below prove each check can fail: each breaks one thing in a
// copy of a real file and wants an error that names it.

func wantError(t *testing.T, errs []error, want string) {
	t.Helper()
	if len(errs) == 0 {
		t.Fatalf("no error; want one containing %q", want)
	}
	if !strings.Contains(errors.Join(errs...).Error(), want) {
		t.Fatalf("errors do not mention %q:\n%v", want, errors.Join(errs...))
	}
}

// renderedDefault is the chart rendered with its default values, as one
// YAML stream per template.
func renderedDefault(t *testing.T) map[string]string {
	t.Helper()
	out, err := renderChart(chartDir, "")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var chartDir = filepath.Join(root, "deploy", "helm", "sluice")

func TestManifestChecksReject(t *testing.T) {
	tests := []struct {
		name, template, old, new, want string
	}{
		{"unknown field", "deployment.yaml", "  strategy:\n", "  replica: 2\n  strategy:\n", `unknown field "spec.replica"`},
		{"unknown nested field", "deployment.yaml", "          imagePullPolicy:", "          imagePullPolicyy: Always\n          imagePullPolicy:", `unknown field "spec.template.spec.containers[0].imagePullPolicyy"`},
		{"wrong type", "hpa.yaml", "minReplicas: 2", `minReplicas: "two"`, "minReplicas"},
		{"duplicate field", "service.yaml", "  type: ClusterIP\n", "  type: ClusterIP\n  type: NodePort\n", `key "type" already set`},
		{"unknown kind", "pdb.yaml", "kind: PodDisruptionBudget", "kind: PodDisruptionBudgett", "no kind"},
		{"missing name", "service.yaml", "  name: sluice\n", "", "metadata.name: required"},
		{"bad label value", "configmap.yaml", "app.kubernetes.io/version: \"0.1.0\"", "app.kubernetes.io/version: \"0.1.0 beta\"", "metadata.labels"},
		{"service selects nothing", "service.yaml", "  selector:\n    app.kubernetes.io/name: sluice", "  selector:\n    app.kubernetes.io/name: sluicer", "does not select the Deployment's pods"},
		{"target port missing", "service.yaml", "targetPort: grpc", "targetPort: grcp", `targetPort "grcp": no container port`},
		{"probe port missing", "deployment.yaml", "path: /readyz\n              port: http", "path: /readyz\n              port: https", `readinessProbe.httpGet.port "https"`},
		{"no liveness probe", "deployment.yaml", "          livenessProbe:\n            httpGet:\n              path: /healthz\n              port: http\n", "          startupProbe:\n            httpGet:\n              path: /healthz\n              port: http\n", "livenessProbe: required"},
		{"runs as root", "deployment.yaml", "runAsNonRoot: true", "runAsNonRoot: false", "runAsNonRoot: must be true"},
		{"writable root fs", "deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem: must be true"},
		{"undeclared volume", "deployment.yaml", "- name: config\n              mountPath", "- name: konfig\n              mountPath", `no volume named "konfig"`},
		{"grace period too short", "deployment.yaml", "terminationGracePeriodSeconds: 50", "terminationGracePeriodSeconds: 20", "does not cover --shutdown-delay plus --drain-timeout"},
		{"no replicas flag", "deployment.yaml", "            - --replicas=3\n", "", "--replicas is required"},
		{"hpa targets another deployment", "hpa.yaml", "    name: sluice", "    name: other", "is not the Deployment sluice"},
		{"hpa min above max", "hpa.yaml", "maxReplicas: 10", "maxReplicas: 1", "minReplicas 2 > maxReplicas 1"},
		{"pdb selects nothing", "pdb.yaml", "      app.kubernetes.io/name: sluice", "      app.kubernetes.io/name: nope", "does not select the Deployment's pods"},
		{"configmap not rendered", "configmap.yaml", "  name: sluice\n", "  name: sluice-config\n", `ConfigMap "sluice" is not rendered`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := renderedDefault(t)
			key := "sluice/templates/" + tt.template
			if !strings.Contains(out[key], tt.old) {
				t.Fatalf("%s does not contain %q; fix the test", key, tt.old)
			}
			out[key] = strings.Replace(out[key], tt.old, tt.new, 1)
			var ms []manifest
			var errs []error
			for _, name := range slices.Sorted(maps.Keys(out)) {
				got, derrs := decodeManifests(filepath.Base(name), splitYAML([]byte(out[name])))
				ms = append(ms, got...)
				errs = append(errs, derrs...)
			}
			errs = append(errs, checkManifests(ms)...)
			wantError(t, errs, tt.want)
		})
	}
}

func TestServiceMonitorChecksReject(t *testing.T) {
	out, err := renderChart(chartDir, filepath.Join(chartDir, "ci", "full-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	key := "sluice/templates/servicemonitor.yaml"
	for _, tt := range []struct{ name, old, new, want string }{
		{"unknown field", "      path: /metrics", "      pathh: /metrics", `unknown field "spec.endpoints[0].pathh"`},
		{"no such port", "- port: http", "- port: metrics", `port "metrics": Service sluice has no such port`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(out[key], tt.old) {
				t.Fatalf("%s does not contain %q; fix the test", key, tt.old)
			}
			broken := maps.Clone(out)
			broken[key] = strings.Replace(out[key], tt.old, tt.new, 1)
			var ms []manifest
			var errs []error
			for _, name := range slices.Sorted(maps.Keys(broken)) {
				got, derrs := decodeManifests(filepath.Base(name), splitYAML([]byte(broken[name])))
				ms = append(ms, got...)
				errs = append(errs, derrs...)
			}
			errs = append(errs, checkManifests(ms)...)
			wantError(t, errs, tt.want)
		})
	}
}

// TestChartRefusesBadValues: values the chart must refuse to render.
func TestChartRefusesBadValues(t *testing.T) {
	log.SetOutput(io.Discard) // Helm logs each fail before returning it
	t.Cleanup(func() { log.SetOutput(os.Stderr) })
	for _, tt := range []struct{ name, values, want string }{
		{"callback secret in a ConfigMap", "config:\n  functions: [{name: f, url: 'http://f/'}]\n  callbacks: {secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]}\n", "config.callbacks.secrets would go into a ConfigMap"},
		{"no NATS URL", "nats: {url: ''}\n", "nats.url"},
		{"no functions", "config: {functions: []}\n", "config.functions"},
		{"client CA without certificate", "tls: {clientCASecretName: ca}\n", "tls.clientCASecretName needs tls.secretName"},
		{"NATS creds and NKey both", "nats: {credsSecret: a, nkeySecret: b}\n", "nats.credsSecret and nats.nkeySecret: give one"},
		{"values not matching the schema", "replicaCount: two\n", "replicaCount"},
		{"unknown value", "natss: {url: x}\n", "natss"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "bad-values.yaml")
			if err := os.WriteFile(f, []byte(tt.values), 0o644); err != nil {
				t.Fatal(err)
			}
			wantError(t, checkChart(chartDir, []string{f}), tt.want)
		})
	}
}

// copyDeployTree copies compose/ and nats/ into a temporary deploy
// directory, applying edit to the file at rel, and returns the copy of
// compose.yaml.
func copyDeployTree(t *testing.T, rel, old, new string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range []string{"compose/compose.yaml", "compose/sluice.yaml", "nats/nats-cluster.conf"} {
		b, err := os.ReadFile(filepath.Join(root, "deploy", f))
		if err != nil {
			t.Fatal(err)
		}
		if f == rel {
			if !strings.Contains(string(b), old) {
				t.Fatalf("%s does not contain %q; fix the test", f, old)
			}
			b = []byte(strings.Replace(string(b), old, new, 1))
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dst, "compose", "compose.yaml")
}

func TestComposeChecksReject(t *testing.T) {
	for _, tt := range []struct{ name, file, old, new, want string }{
		{"unknown service field", "compose/compose.yaml", "  read_only: true\n", "  read_only: true\n  readonly: true\n", "readonly"},
		{"wrong type", "compose/compose.yaml", "stop_grace_period: 45s\n  depends_on", "stop_grace_period: [45s]\n  depends_on", "stop_grace_period"},
		{"depends on a missing service", "compose/compose.yaml", "fnsim: {condition: service_started}", "fnsimm: {condition: service_started}", "fnsimm"},
		{"missing config file", "compose/compose.yaml", "./sluice.yaml:/etc/sluice/sluice.yaml:ro", "./sluice.yml:/etc/sluice/sluice.yaml:ro", "sluice.yml"},
		{"R1 streams", "compose/compose.yaml", "--replicas=3", "--replicas=1", "--replicas=1: want 3"},
		{"a NATS node left out", "compose/compose.yaml", ",nats://nats-3:4222", "", "does not name NATS node nats-3"},
		{"grace period too short", "compose/compose.yaml", "stop_grace_period: 45s\n  depends_on", "stop_grace_period: 20s\n  depends_on", "stop_grace_period does not cover"},
		{"NATS without sync always", "nats/nats-cluster.conf", "sync_interval: always", "sync_interval: 2m", "sync_interval: want always"},
		{"NATS config typo", "nats/nats-cluster.conf", "sync_interval: always", "sync_intervall: always", "sync_intervall"},
		{"NATS small max_payload", "nats/nats-cluster.conf", "max_payload: 8MB", "max_payload: 1MB", "max_payload 1048576"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, checkCompose(copyDeployTree(t, tt.file, tt.old, tt.new)), tt.want)
		})
	}
}

func TestDockerfileChecksReject(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, old, new, want string }{
		{"no USER", "USER 65532:65532\n", "", "no USER"},
		{"USER root", "USER 65532:65532", "USER root", "USER root is root"},
		{"USER 0", "USER 65532:65532", "USER 0:0", "USER 0:0 is root"},
		{"fat final image", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM debian:bookworm", "want scratch or gcr.io/distroless"},
		{"cgo on", "CGO_ENABLED=0 ", "", "CGO_ENABLED=0"},
		{"shell-form entrypoint", `ENTRYPOINT ["/sluice"]`, "ENTRYPOINT /sluice", "ENTRYPOINT in shell form"},
		{"copy from a missing stage", "COPY --from=build /out/sluice", "COPY --from=builder /out/sluice", "COPY --from=builder"},
		{"build check", "-bookworm AS build", "-bookworm as build", "FromAsCasing"},
		{"unknown instruction", "EXPOSE 8080 9090", "EXPOZE 8080 9090", "unknown instruction: EXPOZE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(orig), tt.old) {
				t.Fatalf("Dockerfile does not contain %q; fix the test", tt.old)
			}
			f := filepath.Join(t.TempDir(), "Dockerfile")
			if err := os.WriteFile(f, []byte(strings.Replace(string(orig), tt.old, tt.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			wantError(t, checkDockerfile(f), tt.want)
		})
	}
}

func TestDockerContextCheckRejects(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "Dockerfile.dockerignore")
	if err := os.WriteFile(f, []byte(strings.Replace(string(orig), "!gateway/\n", "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, checkDockerContext(abs, f), "excludes gateway/")
}

// TestChartPassesNATSCredentials: with a secured NATS's values, the
// gateway's args name the files of the Secrets the pod mounts, and the URL
// comes from its Secret through the environment.
func TestChartPassesNATSCredentials(t *testing.T) {
	out, err := renderChart(chartDir, filepath.Join(chartDir, "ci", "nats-auth-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	d := out["sluice/templates/deployment.yaml"]
	for _, want := range []string{
		"- --nats-url=$(SLUICE_NATS_URL)", "name: SLUICE_NATS_URL", "name: sluice-nats-url",
		"- --nats-creds=/etc/sluice/nats/creds/nats.creds", "mountPath: /etc/sluice/nats/creds", "secretName: sluice-nats-creds",
		"- --nats-tls-ca=/etc/sluice/nats/ca/ca.crt", "secretName: nats-ca",
		"- --nats-tls-cert=/etc/sluice/nats/client/tls.crt", "- --nats-tls-key=/etc/sluice/nats/client/tls.key", "secretName: sluice-nats-client",
		"- --nats-js-domain=hub",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("the deployment does not have %q:\n%s", want, d)
		}
	}
	if strings.Contains(d, "--nats-nkey") {
		t.Error("the deployment passes --nats-nkey without nats.nkeySecret")
	}
}

// TestMonitoringChecksReject: the alert rules and the dashboard are held
// to Prometheus's rule parser, Grafana's dashboard schema and the series
// Sluice exports; each case breaks the shipped file one way.
func TestMonitoringChecksReject(t *testing.T) {
	known, err := knownMetrics(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"sluice_dead_letters_total", "sluice_invocation_duration_seconds_bucket", "sluice_pool_granted", "sluice_store_fill_ratio"} {
		if !known[m] {
			t.Errorf("knownMetrics misses %s", m)
		}
	}
	rules, err := os.ReadFile(filepath.Join(chartDir, "files", "sluice-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dash, err := os.ReadFile(filepath.Join(chartDir, "files", "sluice-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if errs := checkAlertRules(filepath.Join(chartDir, "files", "sluice-alerts.yaml"), known); len(errs) > 0 {
		t.Fatalf("the shipped rules: %v", errs)
	}
	for _, tt := range []struct{ name, file, old, new, want string }{
		{"PromQL that does not parse", "rules", "max by (sluice_function) (sluice_queue_oldest_age_seconds) > 300", "max by (sluice_function) (sluice_queue_oldest_age_seconds > 300", "unclosed left parenthesis"},
		{"a series Sluice does not export", "rules", "sluice_dispatch_circuit_open", "sluice_circuit_open", "reads sluice_circuit_open, which Sluice does not export"},
		{"a bad duration", "rules", "for: 10m", "for: ten minutes", "ten minutes"},
		{"an unknown dashboard field", "dash", `"gridPos": {`, `"gridPoz": {"h": 1}, "gridPos": {`, "gridPoz"},
		{"a dashboard query reading an unknown series", "dash", "sluice_queue_depth{", "sluice_queue_size{", "reads sluice_queue_size"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src, check := rules, checkAlertRules
			name := "alerts.yaml"
			if tt.file == "dash" {
				src, check, name = dash, checkDashboard, "dashboard.json"
			}
			if !strings.Contains(string(src), tt.old) {
				t.Fatalf("the shipped %s does not contain %q; fix the test", tt.file, tt.old)
			}
			f := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(f, []byte(strings.Replace(string(src), tt.old, tt.new, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			wantError(t, check(f, known), tt.want)
		})
	}
}

// TestChartShipsAlertsAndDashboard: with prometheusRule and
// grafanaDashboard on, the chart makes a PrometheusRule of every rule in
// files/sluice-alerts.yaml and a ConfigMap with the dashboard.
func TestChartShipsAlertsAndDashboard(t *testing.T) {
	out, err := renderChart(chartDir, filepath.Join(chartDir, "ci", "full-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rule := out["sluice/templates/prometheusrule.yaml"]
	for _, alert := range []string{"SluiceBacklogAging", "SluiceThrottled", "SluiceDeadLetters", "SluiceCircuitOpen", "SluiceStoreFilling", "SluiceStoreFull", "SluiceParkedFinishes"} {
		if !strings.Contains(rule, "alert: "+alert) {
			t.Errorf("the PrometheusRule has no %s:\n%s", alert, rule)
		}
	}
	if !strings.Contains(rule, "release: prometheus") {
		t.Error("the PrometheusRule does not carry prometheusRule.labels")
	}
	if dash := out["sluice/templates/grafana-dashboard.yaml"]; !strings.Contains(dash, `"uid": "sluice-overview"`) || !strings.Contains(dash, `grafana_dashboard: "1"`) {
		t.Errorf("the dashboard ConfigMap:\n%s", dash)
	}
	if out, err := renderChart(chartDir, ""); err != nil || strings.TrimSpace(out["sluice/templates/prometheusrule.yaml"]) != "" {
		t.Errorf("with the defaults the chart makes a PrometheusRule: %v", err)
	}
}
