package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
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
	if c, err := server.ServerTLSConfig("", "", ""); c != nil || err != nil {
		t.Errorf("no TLS flags: %v, %v; want nil, nil", c, err)
	}
	c, err := server.ServerTLSConfig(pki.ServerCert, pki.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS12 || len(c.Certificates) != 1 || c.ClientAuth != tls.NoClientCert {
		t.Errorf("TLS: min version %x, %d certificates, client auth %v; want TLS 1.2, 1, none", c.MinVersion, len(c.Certificates), c.ClientAuth)
	}
	c, err = server.ServerTLSConfig(pki.ServerCert, pki.ServerKey, pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS12 || c.ClientAuth != tls.RequireAndVerifyClientCert || c.ClientCAs == nil {
		t.Errorf("mutual TLS: min version %x, client auth %v, CAs %v; want TLS 1.2, required and verified", c.MinVersion, c.ClientAuth, c.ClientCAs)
	}
}
