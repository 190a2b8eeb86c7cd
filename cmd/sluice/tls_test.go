package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
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
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

// testPKI is a throwaway PKI in a test's temporary directory: a CA, a
// server certificate for 127.0.0.1 and a client certificate it signed, and
// a client certificate signed by another CA.
type testPKI struct {
	// Files, PEM.
	caFile, serverCert, serverKey, clientCert, clientKey string

	roots       *x509.CertPool  // trusts the CA
	client      tls.Certificate // signed by the CA
	otherClient tls.Certificate // signed by another CA
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := newTestCert(t, nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "sluice test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	})
	server, serverKey := newTestCert(t, ca, caKey, &x509.Certificate{
		Subject: pkix.Name{CommonName: "sluice test server"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	clientTemplate := &x509.Certificate{
		Subject:  pkix.Name{CommonName: "sluice test client"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	client, clientKey := newTestCert(t, ca, caKey, clientTemplate)
	otherCA, otherCAKey := newTestCert(t, nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "another CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	})
	other, otherKey := newTestCert(t, otherCA, otherCAKey, clientTemplate)

	p := &testPKI{
		caFile:     writeTestPEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw),
		serverCert: writeTestPEM(t, dir, "server.pem", "CERTIFICATE", server.Raw),
		serverKey:  writeTestPEM(t, dir, "server-key.pem", "PRIVATE KEY", marshalTestKey(t, serverKey)),
		clientCert: writeTestPEM(t, dir, "client.pem", "CERTIFICATE", client.Raw),
		clientKey:  writeTestPEM(t, dir, "client-key.pem", "PRIVATE KEY", marshalTestKey(t, clientKey)),
		roots:      x509.NewCertPool(),
		client:     tls.Certificate{Certificate: [][]byte{client.Raw}, PrivateKey: clientKey},
		otherClient: tls.Certificate{
			Certificate: [][]byte{other.Raw}, PrivateKey: otherKey,
		},
	}
	p.roots.AddCert(ca)
	return p
}

// newTestCert makes a certificate from template with a new P-256 key,
// signed by parent (self-signed when parent is nil).
func newTestCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, template *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	template.SerialNumber = serial
	template.NotBefore, template.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = template, key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func marshalTestKey(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// writeTestPEM writes one PEM block to dir/name and returns the path.
func writeTestPEM(t *testing.T, dir, name, blockType string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// clientTLS is a client's TLS configuration trusting the test CA and
// presenting cert, if any.
func (p *testPKI) clientTLS(cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: p.roots}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

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
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(base + "/v1/jobs/" + id + "?wait=10s")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET job over TLS: %d %s, %v", resp.StatusCode, body, err)
		}
		job := decodeJob(t, body)
		if job.State == "SUCCEEDED" {
			if job.Result == nil || !bytes.Equal(job.Result.Body, []byte("over TLS")) {
				t.Errorf("job result = %+v, want the payload echoed", job.Result)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %s, want SUCCEEDED", id, job.State)
		}
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
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := jobs.GetJob(t.Context(), &sluicev1.GetJobRequest{Id: sub.GetJob().GetId(), Wait: durationpb.New(10 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if job := r.GetJob(); job.GetState() == sluicev1.Job_SUCCEEDED {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("job %s is %v, want SUCCEEDED", job.GetId(), job.GetState())
		}
	}
}

// TestTLS serves both listeners over TLS: clients that trust the CA submit
// jobs that run, over REST (HTTP/2) and gRPC; plaintext clients get
// nowhere and create no job.
func TestTLS(t *testing.T) {
	pki := newTestPKI(t)
	_, fnURL := startFunction(t, fnsim.Config{})
	g := startTestGatewayOptions(t, t.TempDir(), &config.Config{Functions: []config.FunctionConfig{{Name: "echo", URL: fnURL}}},
		gatewayOptions{TLSCert: pki.serverCert, TLSKey: pki.serverKey})
	if !strings.HasPrefix(g.base, "https://") {
		t.Fatalf("REST base %s, want https", g.base)
	}

	t.Run("rest", func(t *testing.T) {
		plain := "http://" + g.HTTPAddr.String()
		resp, body, err := submitKeyedREST(http.DefaultClient, plain, "rest-plain")
		if err == nil && resp.StatusCode/100 == 2 {
			t.Errorf("plain HTTP submit to the TLS listener: %d %s, want a failure", resp.StatusCode, body)
		}
		checkFreshRESTJob(t, httpsClient(t, pki.clientTLS(nil)), g.base, "rest-plain")
	})
	t.Run("grpc", func(t *testing.T) {
		if _, err := submitKeyedGRPC(t, jobClient(t, g.GRPCAddr, insecure.NewCredentials()), "grpc-plain"); status.Code(err) != codes.Unavailable {
			t.Errorf("plaintext gRPC submit to the TLS listener: %v, want UNAVAILABLE", err)
		}
		checkFreshGRPCJob(t, jobClient(t, g.GRPCAddr, credentials.NewTLS(pki.clientTLS(nil))), "grpc-plain")
	})
}

// TestMutualTLS requires client certificates on both listeners: a client
// with one the CA signed gets its jobs run, over REST and gRPC; a client
// with none, or with one from another CA, fails the handshake and creates
// no job.
func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	_, fnURL := startFunction(t, fnsim.Config{})
	g := startTestGatewayOptions(t, t.TempDir(), &config.Config{Functions: []config.FunctionConfig{{Name: "echo", URL: fnURL}}},
		gatewayOptions{TLSCert: pki.serverCert, TLSKey: pki.serverKey, TLSClientCA: pki.caFile})
	good := pki.clientTLS(&pki.client)

	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"no client certificate", nil},
		{"certificate from another CA", &pki.otherClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := strings.ReplaceAll(tc.name, " ", "-")
			bad := pki.clientTLS(tc.cert)

			for _, l := range []struct {
				name string
				addr net.Addr
			}{{"REST", g.HTTPAddr}, {"gRPC", g.GRPCAddr}} {
				if err := handshakeError(l.addr, bad); err == nil || !strings.Contains(err.Error(), "certificate") {
					t.Errorf("TLS handshake with the %s listener: %v, want the server to refuse the client certificate", l.name, err)
				}
			}

			if resp, body, err := submitKeyedREST(httpsClient(t, bad), g.base, key); err == nil {
				t.Errorf("REST submit: %d %s, want the TLS handshake to fail", resp.StatusCode, body)
			}
			checkFreshRESTJob(t, httpsClient(t, good), g.base, key)

			key += "-grpc"
			if _, err := submitKeyedGRPC(t, jobClient(t, g.GRPCAddr, credentials.NewTLS(bad)), key); status.Code(err) != codes.Unavailable {
				t.Errorf("gRPC submit: %v, want UNAVAILABLE", err)
			}
			checkFreshGRPCJob(t, jobClient(t, g.GRPCAddr, credentials.NewTLS(good)), key)
		})
	}
}

// TestTLSFlagErrors runs sluice serve and dev with TLS flags that cannot
// work: each fails at once with an error naming the flag and the file.
func TestTLSFlagErrors(t *testing.T) {
	pki := newTestPKI(t)
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
		{"cert without key", []string{"--tls-cert", pki.serverCert}, []string{"--tls-cert", "needs --tls-key"}},
		{"key without cert", []string{"--tls-key", pki.serverKey}, []string{"--tls-key", "needs --tls-cert"}},
		{"client CA without cert", []string{"--tls-client-ca", pki.caFile}, []string{"--tls-client-ca", "needs --tls-cert and --tls-key"}},
		{"unreadable cert", []string{"--tls-cert", missing, "--tls-key", pki.serverKey}, []string{"--tls-cert", missing, "no such file"}},
		{"unreadable key", []string{"--tls-cert", pki.serverCert, "--tls-key", dir}, []string{"--tls-key", dir, "is a directory"}},
		{"unreadable client CA", []string{"--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-client-ca", missing}, []string{"--tls-client-ca", missing, "no such file"}},
		{"garbage cert", []string{"--tls-cert", garbage, "--tls-key", pki.serverKey}, []string{"--tls-cert " + garbage, "no PEM CERTIFICATE"}},
		{"garbage key", []string{"--tls-cert", pki.serverCert, "--tls-key", garbage}, []string{"--tls-key " + garbage, "no PEM PRIVATE KEY"}},
		{"key given as cert", []string{"--tls-cert", pki.serverKey, "--tls-key", pki.serverKey}, []string{"--tls-cert " + pki.serverKey, "no PEM CERTIFICATE"}},
		{"malformed cert", []string{"--tls-cert", badBlock, "--tls-key", pki.serverKey}, []string{"--tls-cert " + badBlock, "--tls-key " + pki.serverKey}},
		{"key of another cert", []string{"--tls-cert", pki.serverCert, "--tls-key", pki.clientKey}, []string{"--tls-cert " + pki.serverCert, "--tls-key " + pki.clientKey, "does not match"}},
		{"garbage client CA", []string{"--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-client-ca", garbage}, []string{"--tls-client-ca " + garbage, "no PEM CERTIFICATE"}},
		{"malformed client CA", []string{"--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-client-ca", badBlock}, []string{"--tls-client-ca " + badBlock, "certificate 1"}},
		{"key in client CA bundle", []string{"--tls-cert", pki.serverCert, "--tls-key", pki.serverKey, "--tls-client-ca", pki.serverKey}, []string{"--tls-client-ca " + pki.serverKey, "no PEM CERTIFICATE"}},
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
				var out syncBuffer
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

// TestServerTLSConfig checks the settings serverTLSConfig chooses.
func TestServerTLSConfig(t *testing.T) {
	pki := newTestPKI(t)
	if c, err := serverTLSConfig("", "", ""); c != nil || err != nil {
		t.Errorf("no TLS flags: %v, %v; want nil, nil", c, err)
	}
	c, err := serverTLSConfig(pki.serverCert, pki.serverKey, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS12 || len(c.Certificates) != 1 || c.ClientAuth != tls.NoClientCert {
		t.Errorf("TLS: min version %x, %d certificates, client auth %v; want TLS 1.2, 1, none", c.MinVersion, len(c.Certificates), c.ClientAuth)
	}
	c, err = serverTLSConfig(pki.serverCert, pki.serverKey, pki.caFile)
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS12 || c.ClientAuth != tls.RequireAndVerifyClientCert || c.ClientCAs == nil {
		t.Errorf("mutual TLS: min version %x, client auth %v, CAs %v; want TLS 1.2, required and verified", c.MinVersion, c.ClientAuth, c.ClientCAs)
	}
}
