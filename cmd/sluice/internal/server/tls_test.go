package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// httpsClient is an HTTP client, HTTP/2 when the server offers it, with
// the TLS configuration c.
func httpsClient(t *testing.T, c *tls.Config) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: c, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// jobClient is a connection to addr with the given transport credentials.
func jobClient(t *testing.T, addr net.Addr, creds credentials.TransportCredentials) sluicev1.JobServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return sluicev1.NewJobServiceClient(conn)
}

// handshakeError connects to addr over TLS with c and returns the error the
// handshake ends with: under TLS 1.3 the server judges the client's
// certificate after the client has finished its side, so its verdict, an
// alert, is read after the handshake.
func handshakeError(addr net.Addr, c *tls.Config) error {
	c = c.Clone()
	c.NextProtos = []string{"h2"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr.String(), c)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	return err
}

// submitKeyedREST posts a job with an Idempotency-Key; it returns the response
// (its body read into body) or the error of the request.
func submitKeyedREST(client *http.Client, base, key string) (resp *http.Response, body []byte, err error) {
	req, err := http.NewRequest("POST", base+"/v1/functions/echo/jobs", strings.NewReader("over TLS"))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Idempotency-Key", key)
	resp, err = client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp, body, err
}

// submitKeyedGRPC submits a job with an idempotency key, giving up after 5s.
func submitKeyedGRPC(t *testing.T, jobs sluicev1.JobServiceClient, key string) (*sluicev1.SubmitJobResponse, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return jobs.SubmitJob(ctx, &sluicev1.SubmitJobRequest{
		Function: "echo", IdempotencyKey: key,
		Payload: &httpbody.HttpBody{ContentType: "text/plain", Data: []byte("over TLS")},
	})
}

// checkFreshRESTJob submits over REST with key, expects a new job (so no
// earlier request with key made one), and waits for it to succeed.
func checkFreshRESTJob(t *testing.T, client *http.Client, base, key string) {
	t.Helper()
	resp, body, err := submitKeyedREST(client, base, key)
	if err != nil {
		t.Fatalf("REST submit over TLS: %v", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("REST submit over TLS: %d %s, want 202", resp.StatusCode, body)
	}
	if resp.Header.Get("Idempotent-Replayed") == "true" {
		t.Errorf("REST submit with key %q was replayed: the refused request before it made a job", key)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("REST over TLS spoke %s, want HTTP/2", resp.Proto)
	}
	id := decodeJob(t, body).ID
	var job jobJSON
	buffertest.WaitForNoError(t, 10*time.Second, "job "+id+" SUCCEEDED over TLS", func() error {
		resp, err := client.Get(base + "/v1/jobs/" + id + "?wait=10s")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET job over TLS: %d %s, %v", resp.StatusCode, body, err)
		}
		if job = decodeJob(t, body); job.State != "SUCCEEDED" {
			return fmt.Errorf("job is %s", job.State)
		}
		return nil
	})
	if job.Result == nil || !bytes.Equal(job.Result.Body, []byte("over TLS")) {
		t.Errorf("job result = %+v, want the payload echoed", job.Result)
	}
}

// checkFreshGRPCJob is checkFreshRESTJob over gRPC.
func checkFreshGRPCJob(t *testing.T, jobs sluicev1.JobServiceClient, key string) {
	t.Helper()
	sub, err := submitKeyedGRPC(t, jobs, key)
	if err != nil {
		t.Fatalf("gRPC submit over TLS: %v", err)
	}
	if sub.GetReplayed() {
		t.Errorf("gRPC submit with key %q was replayed: the refused call before it made a job", key)
	}
	buffertest.WaitForNoError(t, 10*time.Second, "job "+sub.GetJob().GetId()+" SUCCEEDED over gRPC with TLS", func() error {
		r, err := jobs.GetJob(t.Context(), &sluicev1.GetJobRequest{Id: sub.GetJob().GetId(), Wait: durationpb.New(10 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if st := r.GetJob().GetState(); st != sluicev1.Job_SUCCEEDED {
			return fmt.Errorf("job is %v", st)
		}
		return nil
	})
}

// TestTLS serves both listeners over TLS: clients that trust the CA submit
// jobs that run, over REST (HTTP/2) and gRPC; plaintext clients get
// nowhere and create no job.
func TestTLS(t *testing.T) {
	pki := servertest.NewPKI(t)
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.Start(t, t.TempDir(), &config.Config{Functions: []config.FunctionConfig{{Name: "echo", URL: fnURL}}},
		server.Options{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey})
	if !strings.HasPrefix(g.Base, "https://") {
		t.Fatalf("REST base %s, want https", g.Base)
	}

	t.Run("rest", func(t *testing.T) {
		plain := "http://" + g.HTTPAddr.String()
		resp, body, err := submitKeyedREST(http.DefaultClient, plain, "rest-plain")
		if err == nil && resp.StatusCode/100 == 2 {
			t.Errorf("plain HTTP submit to the TLS listener: %d %s, want a failure", resp.StatusCode, body)
		}
		checkFreshRESTJob(t, httpsClient(t, pki.ClientTLS(nil)), g.Base, "rest-plain")
	})
	t.Run("grpc", func(t *testing.T) {
		if _, err := submitKeyedGRPC(t, jobClient(t, g.GRPCAddr, insecure.NewCredentials()), "grpc-plain"); status.Code(err) != codes.Unavailable {
			t.Errorf("plaintext gRPC submit to the TLS listener: %v, want UNAVAILABLE", err)
		}
		checkFreshGRPCJob(t, jobClient(t, g.GRPCAddr, credentials.NewTLS(pki.ClientTLS(nil))), "grpc-plain")
	})
}

// TestMutualTLS requires client certificates on both listeners: a client
// with one the CA signed gets its jobs run, over REST and gRPC; a client
// with none, or with one from another CA, fails the handshake and creates
// no job.
func TestMutualTLS(t *testing.T) {
	pki := servertest.NewPKI(t)
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.Start(t, t.TempDir(), &config.Config{Functions: []config.FunctionConfig{{Name: "echo", URL: fnURL}}},
		server.Options{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey, TLSClientCA: pki.CAFile})
	good := pki.ClientTLS(&pki.Client)

	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"no client certificate", nil},
		{"certificate from another CA", &pki.OtherClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := strings.ReplaceAll(tc.name, " ", "-")
			bad := pki.ClientTLS(tc.cert)

			for _, l := range []struct {
				name string
				addr net.Addr
			}{{"REST", g.HTTPAddr}, {"gRPC", g.GRPCAddr}} {
				if err := handshakeError(l.addr, bad); err == nil || !strings.Contains(err.Error(), "certificate") {
					t.Errorf("TLS handshake with the %s listener: %v, want the server to refuse the client certificate", l.name, err)
				}
			}

			if resp, body, err := submitKeyedREST(httpsClient(t, bad), g.Base, key); err == nil {
				t.Errorf("REST submit: %d %s, want the TLS handshake to fail", resp.StatusCode, body)
			}
			checkFreshRESTJob(t, httpsClient(t, good), g.Base, key)

			key += "-grpc"
			if _, err := submitKeyedGRPC(t, jobClient(t, g.GRPCAddr, credentials.NewTLS(bad)), key); status.Code(err) != codes.Unavailable {
				t.Errorf("gRPC submit: %v, want UNAVAILABLE", err)
			}
			checkFreshGRPCJob(t, jobClient(t, g.GRPCAddr, credentials.NewTLS(good)), key)
		})
	}
}

// TestServerTLSConfig checks the settings serverTLSConfig chooses.
func TestServerTLSConfig(t *testing.T) {
	pki := servertest.NewPKI(t)
	if c, err := server.ServerTLSConfig("", "", "", slog.New(slog.DiscardHandler)); c != nil || err != nil {
		t.Errorf("no TLS flags: %v, %v; want nil, nil", c, err)
	}
	c, err := server.ServerTLSConfig(pki.ServerCert, pki.ServerKey, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS12 || c.GetCertificate == nil || c.ClientAuth != tls.NoClientCert {
		t.Errorf("TLS: min version %x, certificate from a reloader %v, client auth %v; want TLS 1.2, yes, none", c.MinVersion, c.GetCertificate != nil, c.ClientAuth)
	}
	c, err = server.ServerTLSConfig(pki.ServerCert, pki.ServerKey, pki.CAFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS12 || c.ClientAuth != tls.RequireAndVerifyClientCert || c.ClientCAs == nil {
		t.Errorf("mutual TLS: min version %x, client auth %v, CAs %v; want TLS 1.2, required and verified", c.MinVersion, c.ClientAuth, c.ClientCAs)
	}
}

// TestCertificateReloadedWithoutRestart (#22 item 5): a certificate
// replaced on disk, as cert-manager rotates one, is what the next handshake
// on either listener gets, without a restart; a pair caught halfway (the
// new certificate beside the old key) leaves the last good one in service.
func TestCertificateReloadedWithoutRestart(t *testing.T) {
	first, second := servertest.NewPKI(t), servertest.NewPKI(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	install := func(certSrc, keySrc string) {
		t.Helper()
		for dst, src := range map[string]string{certFile: certSrc, keyFile: keySrc} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			// Written aside and renamed in, as a Secret's volume is updated.
			if err := os.WriteFile(dst+".new", b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(dst+".new", dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(first.ServerCert, first.ServerKey)
	var logs buffertest.LockedBuffer
	cfg := &config.Config{Functions: []config.FunctionConfig{{Name: "f", URL: "http://127.0.0.1:9/"}}}
	p, err := servertest.New(t, t.TempDir(), cfg, server.Options{TLSCert: certFile, TLSKey: keyFile}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	g := servertest.Run(t, p)
	roots := first.Roots.Clone()
	roots.AppendCertsFromPEM(mustRead(t, second.CAFile))
	served := func(addr string, alpn string) string {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{alpn}})
		if err != nil {
			t.Fatalf("handshake with %s: %v", addr, err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Issuer.CommonName + " " + conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	rest, grpcAddr := g.HTTPAddr.String(), g.GRPCAddr.String()
	before := served(rest, "http/1.1")
	if got := served(grpcAddr, "h2"); got != before {
		t.Fatalf("the listeners serve different certificates: %s and %s", before, got)
	}
	// Halfway: the new certificate beside the old key does not load.
	b, err := os.ReadFile(second.ServerCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := served(rest, "http/1.1"); got != before {
		t.Errorf("with a certificate and key that do not match, served %s; want the previous %s", got, before)
	}
	if !strings.Contains(logs.String(), "does not load") {
		t.Errorf("no warning of the pair that does not load:\n%s", logs.String())
	}
	install(second.ServerCert, second.ServerKey)
	after := served(rest, "http/1.1")
	if after == before {
		t.Fatalf("after the rotation REST still serves %s", before)
	}
	if got := served(grpcAddr, "h2"); got != after {
		t.Errorf("after the rotation gRPC serves %s; want %s", got, after)
	}
	// And the API answers over the new certificate.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := client.Get(g.Base + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz after the rotation: %v", err)
	}
	resp.Body.Close()
}

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
