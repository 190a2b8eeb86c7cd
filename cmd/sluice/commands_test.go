package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/gateway"
)

func TestHashKey(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"hash-key", "test-key-0123456789"}, &out, &out); err != nil || out.String() != "sha256:0b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d\n" {
		t.Errorf("hash-key = %q, %v", out.String(), err)
	}
	if err := runHashKey(nil, strings.NewReader("test-key-0123456789\n"), &out); err != nil || !strings.HasSuffix(out.String(), "394d\n") {
		t.Errorf("hash-key from stdin = %q, %v", out.String(), err)
	}
	if err := runHashKey([]string{"short"}, nil, &out); err == nil {
		t.Error("hash-key took a 5-character key")
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte("functions:\n  - name: a\n    url: http://x/\n    concurrency: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err := run(t.Context(), []string{"serve", "--config", path, "--data-dir", dir}, &stderr, &stderr)
	if err == nil || !strings.Contains(err.Error(), "sluice.yaml") || !strings.Contains(err.Error(), "concurrency") {
		t.Errorf("serve with a bad config: %v, want an error naming the file and the field", err)
	}
	for _, args := range [][]string{{"serve"}, {"serve", "--config", filepath.Join(dir, "missing.yaml")}, {"nonsense"}, {}} {
		if err := run(t.Context(), args, &stderr, &stderr); err == nil {
			t.Errorf("run %q succeeded, want an error", args)
		}
	}
}

// TestCallbackSecretCommand: `sluice callback-secret` prints what a
// tenant's receivers need, one secret a line in signing order.
func TestCallbackSecretCommand(t *testing.T) {
	newGateway, oldGateway := servertest.CallbackSecret(1), servertest.CallbackSecret(2)
	own := servertest.CallbackSecret(3)
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	yaml := `
functions:
  - {name: f, url: "http://127.0.0.1:9/"}
tenants:
  - {name: acme, api_keys: [` + gateway.HashKey("key-of-tenant-acme-0123456789") + `], callback_secrets: [` + own + `]}
  - {name: bolt, api_keys: [` + gateway.HashKey("key-of-tenant-bolt-0123456789") + `]}
callbacks:
  secrets: [` + newGateway + ", " + oldGateway + `]
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		tenant, want string
	}{
		{"bolt", servertest.TenantCallbackSecret(t, newGateway, "bolt") + "\n" + servertest.TenantCallbackSecret(t, oldGateway, "bolt") + "\n"},
		{"acme", own + "\n"},
	} {
		var out, errOut bytes.Buffer
		if err := run(t.Context(), []string{"callback-secret", "--config", path, "--tenant", tt.tenant}, &out, &errOut); err != nil {
			t.Fatalf("callback-secret --tenant %s: %v (%s)", tt.tenant, err, errOut.String())
		}
		if out.String() != tt.want {
			t.Errorf("callback-secret --tenant %s printed %q, want %q", tt.tenant, out.String(), tt.want)
		}
	}
	for _, args := range [][]string{
		{"callback-secret", "--config", path},                          // no tenant
		{"callback-secret", "--config", path, "--tenant", "Not Valid"}, // not a tenant name
		{"callback-secret", "--tenant", "acme"},                        // no config
		{"callback-secret", "--config", path, "--tenant", "acm"},       // not a tenant of the file: a typo
	} {
		var out, errOut bytes.Buffer
		if err := run(t.Context(), args, &out, &errOut); err == nil || out.Len() > 0 {
			t.Errorf("%v: printed %q, err %v; want an error and nothing printed", args, out.String(), err)
		}
	}
}

// TestDev runs `sluice dev` as the README's quickstart does, on free ports,
// and submits a job to its demo function.
func TestDev(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var stdout, stderr buffertest.LockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--fn-duration", "10ms"}, &stdout, &stderr)
	}()
	restURL := regexp.MustCompile(`REST on (http://\S+),`)
	var base string
	buffertest.WaitFor(t, 20*time.Second, "dev printing its REST address", func() bool {
		if m := restURL.FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
		}
		return base != ""
	})
	resp, err := http.Post(base+"/v1/functions/echo/jobs", "application/json", strings.NewReader(`{"hello":"world"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit to dev: %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	buffertest.WaitForNoError(t, 10*time.Second, "dev's echo result", func() error {
		res, err := http.Get(base + loc + "/result")
		if err != nil {
			return err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		switch {
		case err != nil:
			return err
		case res.StatusCode == http.StatusAccepted:
			return fmt.Errorf("%d %s", res.StatusCode, body)
		case res.StatusCode != http.StatusOK || string(body) != `{"hello":"world"}`:
			t.Fatalf("dev result: %d %q; want 200 and the echo", res.StatusCode, body)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("dev exited with %v; stderr %s", err, stderr.String())
	}
}

func TestReadHeaderTimeoutFlag(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--config", "sluice.yaml", "--read-header-timeout", "0s"},
		{"dev", "--read-header-timeout", "-1s"},
	} {
		err := run(t.Context(), args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--read-header-timeout: must be positive") {
			t.Errorf("%q: %v; want an error naming --read-header-timeout", args, err)
		}
	}
}

// TestTLSFlagErrors runs sluice serve and dev with TLS flags that cannot
// work: each fails at once with an error naming the flag and the file.
func TestTLSFlagErrors(t *testing.T) {
	pki := servertest.NewPKI(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(config, []byte("functions:\n  - name: a\n    url: http://127.0.0.1:9/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM at all\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badBlock := filepath.Join(dir, "bad-block.pem")
	if err := os.WriteFile(badBlock, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")}), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name string
		args []string
		want []string // each in the error
	}{
		{"cert without key", []string{"--tls-cert", pki.ServerCert}, []string{"--tls-cert", "needs --tls-key"}},
		{"key without cert", []string{"--tls-key", pki.ServerKey}, []string{"--tls-key", "needs --tls-cert"}},
		{"client CA without cert", []string{"--tls-client-ca", pki.CAFile}, []string{"--tls-client-ca", "needs --tls-cert and --tls-key"}},
		{"unreadable cert", []string{"--tls-cert", missing, "--tls-key", pki.ServerKey}, []string{"--tls-cert", missing, "no such file"}},
		{"unreadable key", []string{"--tls-cert", pki.ServerCert, "--tls-key", dir}, []string{"--tls-key", dir, "is a directory"}},
		{"unreadable client CA", []string{"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", missing}, []string{"--tls-client-ca", missing, "no such file"}},
		{"garbage cert", []string{"--tls-cert", garbage, "--tls-key", pki.ServerKey}, []string{"--tls-cert " + garbage, "no PEM CERTIFICATE"}},
		{"garbage key", []string{"--tls-cert", pki.ServerCert, "--tls-key", garbage}, []string{"--tls-key " + garbage, "no PEM PRIVATE KEY"}},
		{"key given as cert", []string{"--tls-cert", pki.ServerKey, "--tls-key", pki.ServerKey}, []string{"--tls-cert " + pki.ServerKey, "no PEM CERTIFICATE"}},
		{"malformed cert", []string{"--tls-cert", badBlock, "--tls-key", pki.ServerKey}, []string{"--tls-cert " + badBlock, "--tls-key " + pki.ServerKey}},
		{"key of another cert", []string{"--tls-cert", pki.ServerCert, "--tls-key", pki.ClientKey}, []string{"--tls-cert " + pki.ServerCert, "--tls-key " + pki.ClientKey, "does not match"}},
		{"garbage client CA", []string{"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", garbage}, []string{"--tls-client-ca " + garbage, "no PEM CERTIFICATE"}},
		{"malformed client CA", []string{"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", badBlock}, []string{"--tls-client-ca " + badBlock, "certificate 1"}},
		{"key in client CA bundle", []string{"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", pki.ServerKey}, []string{"--tls-client-ca " + pki.ServerKey, "no PEM CERTIFICATE"}},
	} {
		for _, cmd := range []string{"serve", "dev"} {
			t.Run(cmd+"/"+tc.name, func(t *testing.T) {
				args := []string{cmd, "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--data-dir", t.TempDir()}
				if cmd == "serve" {
					args = append(args, "--config", config)
				}
				// Should the flags be accepted, the gateway serves until
				// the timeout and run returns nil: the test fails, not hangs.
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				var out buffertest.LockedBuffer
				err := run(ctx, append(args, tc.args...), &out, &out)
				if err == nil {
					t.Fatalf("run %q succeeded, want an error", tc.args)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
			})
		}
	}
}

func TestUsageListsEveryCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, c := range commands() {
		if !strings.Contains(out.String(), "sluice "+c.name) {
			t.Errorf("usage does not list %s:\n%s", c.name, out.String())
		}
	}
}

// TestDevListensOnLoopbackByDefault: sluice dev, whose API is open and
// whose function is a demo, listens on loopback unless told otherwise;
// sluice serve on every interface, as a server does.
func TestDevListensOnLoopbackByDefault(t *testing.T) {
	for cmd, want := range map[string][]string{
		"dev":   {`(default "127.0.0.1:8080")`, `(default "127.0.0.1:9090")`},
		"serve": {`(default ":8080")`, `(default ":9090")`},
	} {
		var out bytes.Buffer
		run(t.Context(), []string{cmd, "--help"}, &out, &out) //nolint:errcheck // --help's error is flag.ErrHelp
		for _, w := range want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("sluice %s --help does not say %s:\n%s", cmd, w, out.String())
			}
		}
	}
}
