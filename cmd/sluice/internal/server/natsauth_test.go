package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// natsServerBinary builds the nats-server of this module's go.mod once
// per test run: the tests below run it as a process, as production does.
var natsServerBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "sluice-nats-server-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build nats-server: %v: %s", err, out)
	}
	return bin, nil
})

// startNATSProcess runs a nats-server process with JetStream and the
// given configuration (auth, TLS) until the test ends, and returns its
// client port's address.
func startNATSProcess(t *testing.T, conf string) string {
	t.Helper()
	bin, err := natsServerBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "nats.conf")
	conf = fmt.Sprintf("listen: \"127.0.0.1:-1\"\nports_file_dir: %q\njetstream: {store_dir: %q%s}\n%s",
		dir, filepath.Join(dir, "js"), jsExtra(conf), stripJSExtra(conf))
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", file)
	var logs buffertest.LockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) //nolint:errcheck // killed
	var addr string
	buffertest.WaitFor(t, 20*time.Second, "nats-server writing its ports file", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("nats-server_%d.ports", cmd.Process.Pid)))
		var ports struct{ Nats []string }
		if err != nil || json.Unmarshal(b, &ports) != nil || len(ports.Nats) == 0 {
			return false
		}
		_, addr, _ = strings.Cut(ports.Nats[0], "://")
		return true
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nats-server's log:\n%s", logs.String())
		}
	})
	return addr
}

// A test's configuration may add to the jetstream block with a line
// "#js: …" (a domain, say).
func jsExtra(conf string) string {
	for line := range strings.Lines(conf) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "#js:"); ok {
			return ", " + strings.TrimSpace(rest)
		}
	}
	return ""
}

func stripJSExtra(conf string) string {
	var b strings.Builder
	for line := range strings.Lines(conf) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#js:") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// runsAJob starts a gateway on the NATS at url with auth, and runs a job
// through it.
func runsAJob(t *testing.T, url string, auth server.NATSAuth) {
	t.Helper()
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: fnURL}}}
	g := servertest.Start(t, "", cfg, server.Options{NATSURL: url, NATSAuth: auth})
	code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/jobs", "", `{}`)
	if code != http.StatusAccepted {
		t.Fatalf("submit: %d %s", code, body)
	}
	if j := waitRESTKey(t, g, "", decodeJob(t, body).ID, 15*time.Second); j.State != "SUCCEEDED" {
		t.Fatalf("the job ended %s", j.State)
	}
}

// refused says the gateway cannot start on the NATS at url with auth, and
// that the error says what.
func refused(t *testing.T, url string, auth server.NATSAuth, want string) {
	t.Helper()
	cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: "http://127.0.0.1:9/"}}}
	_, err := servertest.New(t, "", cfg, server.Options{NATSURL: url, NATSAuth: auth}, nil)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("start-up: %v; want an error saying %q", err, want)
	}
}

// TestSecuredNATS (#22 item 1): against real nats-server processes that
// require each kind of credential, the gateway connects with what its
// flags give and runs a job; without it, it cannot.
func TestSecuredNATS(t *testing.T) {
	t.Run("user and password", func(t *testing.T) {
		addr := startNATSProcess(t, "authorization { user: sluice, password: s3cr3t-pw }\n")
		runsAJob(t, "nats://sluice:s3cr3t-pw@"+addr, server.NATSAuth{})
		refused(t, "nats://sluice:wrong@"+addr, server.NATSAuth{}, "Authorization Violation")
	})
	t.Run("token", func(t *testing.T) {
		addr := startNATSProcess(t, "authorization { token: \"t0ken-of-sluice\" }\n")
		runsAJob(t, "nats://t0ken-of-sluice@"+addr, server.NATSAuth{})
		refused(t, "nats://"+addr, server.NATSAuth{}, "Authorization Violation")
	})
	t.Run("nkey", func(t *testing.T) {
		user, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := user.PublicKey()
		seed, _ := user.Seed()
		seedFile := filepath.Join(t.TempDir(), "sluice.nk")
		if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		addr := startNATSProcess(t, fmt.Sprintf("authorization { users: [ {nkey: %q} ] }\n", pub))
		runsAJob(t, "nats://"+addr, server.NATSAuth{NKey: seedFile})
		refused(t, "nats://"+addr, server.NATSAuth{}, "Authorization Violation")
	})
	t.Run("JWT creds", func(t *testing.T) {
		conf, creds := operatorMode(t)
		addr := startNATSProcess(t, conf)
		runsAJob(t, "nats://"+addr, server.NATSAuth{Creds: creds})
		refused(t, "nats://"+addr, server.NATSAuth{}, "Authorization Violation")
	})
	t.Run("mutual TLS", func(t *testing.T) {
		pki := servertest.NewPKI(t)
		addr := startNATSProcess(t, fmt.Sprintf("tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true }\n", pki.ServerCert, pki.ServerKey, pki.CAFile))
		runsAJob(t, "tls://"+addr, server.NATSAuth{TLSCA: pki.CAFile, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey})
		refused(t, "tls://"+addr, server.NATSAuth{TLSCA: pki.CAFile}, "connect to NATS")
	})
	t.Run("JetStream domain", func(t *testing.T) {
		addr := startNATSProcess(t, "#js: domain: hub\n")
		runsAJob(t, "nats://"+addr, server.NATSAuth{JSDomain: "hub"})
		// Another domain has no JetStream to answer: start-up waits for
		// one (as for a cluster still forming), and finds none.
		cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: "http://127.0.0.1:9/"}}}
		if err := cfg.SetDefaultsAndCheck(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		opts := server.Options{HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", NATSURL: "nats://" + addr, NATSAuth: server.NATSAuth{JSDomain: "elsewhere"}}
		if _, err := server.New(ctx, cfg, opts, slog.New(slog.DiscardHandler)); err == nil {
			t.Fatal("start-up in a JetStream domain the server does not have succeeded")
		}
	})
}

// operatorMode makes an operator, an account with JetStream and a user
// of it, and returns a server configuration that trusts the operator and
// knows the account, and the user's .creds file: NATS's decentralized
// auth, as NGS/Synadia Cloud and most NATS accounts run it.
func operatorMode(t *testing.T) (conf, credsFile string) {
	t.Helper()
	must := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	operator, _ := nkeys.CreateOperator()
	operatorPub := must(operator.PublicKey())
	operatorJWT := must(jwt.NewOperatorClaims(operatorPub).Encode(operator))

	system, _ := nkeys.CreateAccount()
	systemPub := must(system.PublicKey())
	systemJWT := must(jwt.NewAccountClaims(systemPub).Encode(operator))

	account, _ := nkeys.CreateAccount()
	accountPub := must(account.PublicKey())
	ac := jwt.NewAccountClaims(accountPub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accountJWT := must(ac.Encode(operator))

	user, _ := nkeys.CreateUser()
	uc := jwt.NewUserClaims(must(user.PublicKey()))
	userJWT := must(uc.Encode(account))
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile = filepath.Join(t.TempDir(), "sluice.creds")
	if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	conf = fmt.Sprintf("operator: %q\nsystem_account: %q\nresolver: MEMORY\nresolver_preload: { %s: %q, %s: %q }\n",
		operatorJWT, systemPub, systemPub, systemJWT, accountPub, accountJWT)
	return conf, credsFile
}

// TestNATSAuthFlagErrors: NATS credentials that cannot work are refused
// before any connection, naming the flag.
func TestNATSAuthFlagErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "exists")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		url  string
		auth server.NATSAuth
		want string
	}{
		{"", server.NATSAuth{Creds: file}, "need --nats-url"},
		{"nats://127.0.0.1:4222", server.NATSAuth{Creds: file, NKey: file}, "--nats-creds and --nats-nkey: give one"},
		{"nats://127.0.0.1:4222", server.NATSAuth{TLSCert: file}, "--nats-tls-cert and --nats-tls-key go together"},
		{"nats://127.0.0.1:4222", server.NATSAuth{TLSCA: file + ".missing"}, "--nats-tls-ca " + file + ".missing"},
		{"nats://127.0.0.1:4222", server.NATSAuth{Creds: file}, ""},
	} {
		o := server.Options{NATSURL: c.url, NATSAuth: c.auth, Replicas: 1, ReadHeaderTimeout: time.Second}
		err := o.Check()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%+v: %v; want %q", c.auth, err, c.want)
		}
	}
}
