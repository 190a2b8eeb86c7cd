package server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/gateway"
)

// notTriggered are the answers the OpenAPI document lists that no test
// brings about, each with why; any other documented (operation, status)
// that TestOpenAPIConformance does not see fails it.
var notTriggered = map[string]string{
	"submitJob 500":          internalError,
	"invokeFunction 500":     internalError,
	"getJob 500":             internalError,
	"getJobResult 500":       internalError,
	"cancelJob 500":          internalError,
	"watchJob 500":           internalError,
	"getFunction 500":        internalError,
	"listDeadLetters 500":    internalError,
	"redriveDeadLetters 500": internalError,
	"deleteDeadLetter 500":   internalError,
}

const internalError = "an internal error is what the gateway answers to a fault of its own or an error from JetStream it " +
	"does not know; every JetStream failure a test can cause from outside (JetStream off, NATS gone) is UNAVAILABLE, 503"

// TestOpenAPIConformance holds the OpenAPI document the gateway serves to
// what the gateway does. Every request of real flows through a gateway with
// API keys, and every answer, is validated against /openapi.json (a request
// the document does not allow is sent on purpose only, and must be found
// so); each flow brings about a documented status, and every status the
// document lists for an operation must have been seen. So the document
// claims nothing the server does not do, and the server answers nothing the
// document does not say.
func TestOpenAPIConformance(t *testing.T) {
	// A NATS server of the test's own, whose JetStream it can turn off.
	nc, err := natsserver.NewServer(&natsserver.Options{
		JetStream: true, StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	nc.Start()
	t.Cleanup(nc.Shutdown)
	if !nc.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	echo := httptest.NewServer(http.HandlerFunc(echoFunction))
	t.Cleanup(echo.Close)
	silent := httptest.NewServer(http.HandlerFunc(hangUp))
	t.Cleanup(silent.Close)
	g, err := startGatewayOn(t, nc.ClientURL(), &config.Config{
		Functions: []config.FunctionConfig{
			{Name: "echo", URL: echo.URL, MaxPayload: 1024, KeyConcurrency: 1},
			{Name: "limited", URL: echo.URL, Ingress: &config.IngressConfig{PerSecond: 0.001, Burst: 1}},
			{Name: "stuck", URL: startBlockedFunction(t), Concurrency: 1},
			{Name: "silent", URL: silent.URL, Retry: config.RetryConfig{MaxAttempts: 1}},
		},
		Tenants: []config.TenantConfig{{Name: "acme", APIKeys: []string{gateway.HashKey(keyA)}}},
		Streams: config.StreamsConfig{WatchesPerTenant: 1},
		Buffer:  config.BufferConfig{MaxJobs: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := newConformance(t, g.Base)
	ghost := "AAAAAAAAAAAAAAAAAAAAAAAAAA" // well-formed, never made

	// Submit, wait, read: the flow of most callers.
	payload := []byte(`{"order": 42}`)
	sub := c.expect(202, request{method: "POST", path: "/v1/functions/echo/jobs", key: keyA, contentType: "application/json", body: payload,
		header: []string{"Idempotency-Key", "order-42", "Sluice-Priority", "high", "Sluice-Concurrency-Key", "account-7"}})
	id := c.jobID(sub)
	c.expect(202, request{method: "POST", path: "/v1/functions/echo/jobs", key: keyA, contentType: "application/json", body: payload,
		header: []string{"Idempotency-Key", "order-42"}})
	c.waitFinished(id)
	c.expect(200, request{method: "GET", path: "/v1/jobs/" + id + "/result", key: keyA})
	c.expect(200, request{method: "GET", path: "/v1/jobs/" + id + ":watch", key: keyA})

	// Invoke: the function's own answers, one still pending, one without an answer.
	c.expect(200, request{method: "POST", path: "/v1/functions/echo:invoke?wait=10s", key: keyA, contentType: "text/plain", body: []byte("hello")})
	c.expect(201, request{method: "POST", path: "/v1/functions/echo:invoke", key: keyA, contentType: "text/plain", body: []byte("status:201")})
	c.expect(409, request{method: "POST", path: "/v1/functions/silent:invoke?wait=30s", key: keyA, contentType: "text/plain", body: []byte("x")})
	running := c.jobID(c.expect(202, request{method: "POST", path: "/v1/functions/stuck/jobs", key: keyA, contentType: "text/plain", body: []byte("1")}))
	c.expect(202, request{method: "POST", path: "/v1/functions/stuck:invoke?wait=200ms", key: keyA, contentType: "text/plain", body: []byte("2")})

	// A job that has not finished, watched while it is cancelled.
	c.expect(202, request{method: "GET", path: "/v1/jobs/" + running + "/result", key: keyA})
	queued := c.jobID(c.expect(202, request{method: "POST", path: "/v1/functions/stuck/jobs", key: keyA, contentType: "text/plain", body: []byte("3")}))
	watch := c.open(request{method: "GET", path: "/v1/jobs/" + queued + ":watch", key: keyA})
	c.expect(200, request{method: "POST", path: "/v1/jobs/" + queued + ":cancel", key: keyA, contentType: "application/json", body: []byte("{}")})
	if lines := watch.rest(); len(lines) == 0 || !strings.Contains(lines[len(lines)-1], `"CANCELLED"`) {
		t.Errorf("watch of a job cancelled while watched: %q, want its states through CANCELLED", lines)
	}
	c.expect(409, request{method: "POST", path: "/v1/jobs/" + queued + ":cancel", key: keyA})

	// A job that failed: no result, a dead letter, redriven, discarded.
	failed := c.jobID(c.expect(202, request{method: "POST", path: "/v1/functions/echo/jobs", key: keyA, contentType: "text/plain", body: []byte("status:400")}))
	c.waitFinished(failed)
	c.expect(409, request{method: "GET", path: "/v1/jobs/" + failed + "/result", key: keyA})
	c.expect(200, request{method: "GET", path: "/v1/functions/echo/deadletters?pageSize=10&includePayload=true", key: keyA})
	c.expect(200, request{method: "POST", path: "/v1/functions/echo/deadletters:redrive", key: keyA, contentType: "application/json",
		body: []byte(`{"ids": ["` + failed + `"]}`)})
	buffertest.WaitForNoError(t, 30*time.Second, "redriven job "+failed+" dead-lettered again", func() error {
		job := decodeJob(t, c.expect(200, request{method: "GET", path: "/v1/jobs/" + failed + "?wait=10s", key: keyA}))
		if job.State != "FAILED" || !strings.Contains(string(c.last), `"deadLetterTime"`) {
			return fmt.Errorf("%s", c.last)
		}
		return nil
	})
	c.expect(200, request{method: "DELETE", path: "/v1/functions/echo/deadletters/" + failed, key: keyA})
	c.expect(404, request{method: "DELETE", path: "/v1/functions/echo/deadletters/" + failed, key: keyA})

	// The functions.
	c.expect(200, request{method: "GET", path: "/v1/functions", key: keyA})
	c.expect(200, request{method: "GET", path: "/v1/functions/echo", key: keyA})

	// Without an API key, every call.
	for _, r := range []request{
		{method: "POST", path: "/v1/functions/echo/jobs", contentType: "text/plain", body: []byte("x")},
		{method: "POST", path: "/v1/functions/echo:invoke", contentType: "text/plain", body: []byte("x")},
		{method: "GET", path: "/v1/jobs/" + id},
		{method: "GET", path: "/v1/jobs/" + id + "/result"},
		{method: "POST", path: "/v1/jobs/" + id + ":cancel"},
		{method: "GET", path: "/v1/jobs/" + id + ":watch"},
		{method: "GET", path: "/v1/functions"},
		{method: "GET", path: "/v1/functions/echo"},
		{method: "GET", path: "/v1/functions/echo/deadletters"},
		{method: "POST", path: "/v1/functions/echo/deadletters:redrive", contentType: "application/json", body: []byte("{}")},
		{method: "DELETE", path: "/v1/functions/echo/deadletters/" + id},
	} {
		r.invalid = true // the document requires the key
		c.expect(401, r)
	}

	// What is not there.
	for _, r := range []request{
		{method: "POST", path: "/v1/functions/nope/jobs", contentType: "text/plain", body: []byte("x")},
		{method: "POST", path: "/v1/functions/nope:invoke", contentType: "text/plain", body: []byte("x")},
		{method: "GET", path: "/v1/jobs/" + ghost},
		{method: "GET", path: "/v1/jobs/" + ghost + "/result"},
		{method: "POST", path: "/v1/jobs/" + ghost + ":cancel"},
		{method: "GET", path: "/v1/jobs/" + ghost + ":watch"},
		{method: "GET", path: "/v1/functions/nope"},
		{method: "GET", path: "/v1/functions/nope/deadletters"},
		{method: "POST", path: "/v1/functions/nope/deadletters:redrive", contentType: "application/json", body: []byte("{}")},
	} {
		r.key = keyA
		c.expect(404, r)
	}

	// Bad requests: some the document already refuses, some only the server can.
	for _, r := range []request{
		{method: "POST", path: "/v1/functions/limited/jobs", contentType: "text/plain", body: []byte("x"), header: []string{"Sluice-Concurrency-Key", "account-7"}},
		{method: "POST", path: "/v1/functions/echo:invoke", contentType: "text/plain", body: []byte("x"), header: []string{"Sluice-Callback-Url", "https://example.com/done"}},
		{method: "GET", path: "/v1/jobs/not-a-job-id", invalid: true},
		{method: "GET", path: "/v1/jobs/" + id + "?wait=soon", invalid: true},
		{method: "GET", path: "/v1/jobs/not-a-job-id/result", invalid: true},
		{method: "POST", path: "/v1/jobs/not-a-job-id:cancel", invalid: true},
		{method: "GET", path: "/v1/jobs/not-a-job-id:watch", invalid: true},
		{method: "GET", path: "/v1/functions?filter=%ff"},
		{method: "GET", path: "/v1/functions/echo?filter=%ff"},
		{method: "GET", path: "/v1/functions/echo/deadletters?pageToken=not-a-token"},
		{method: "POST", path: "/v1/functions/echo/deadletters:redrive", contentType: "application/json", body: []byte(`{"ids": ["` + ghost + `"], "pageToken": "t"}`)},
		{method: "DELETE", path: "/v1/functions/echo/deadletters/not-a-job-id", invalid: true},
	} {
		r.key = keyA
		c.expect(400, r)
	}

	// Over the payload limit: the function's, or for a call that names no
	// function the largest of any (1 MiB by default), in JSON the document
	// allows.
	bigJSON := append(append([]byte("{"), bytes.Repeat([]byte(" "), 1<<20)...), '}')
	c.expect(413, request{method: "POST", path: "/v1/functions/echo/jobs", key: keyA, contentType: "application/octet-stream", body: make([]byte, 1025)})
	c.expect(413, request{method: "POST", path: "/v1/functions/echo:invoke", key: keyA, contentType: "application/octet-stream", body: make([]byte, 1025)})
	c.expect(413, request{method: "POST", path: "/v1/jobs/" + id + ":cancel", key: keyA, contentType: "application/json", body: bigJSON})
	c.expect(413, request{method: "POST", path: "/v1/functions/echo/deadletters:redrive", key: keyA, contentType: "application/json", body: bigJSON})

	// Limits: the function's submit rate (its one token taken), the tenant's watches (its one held).
	c.expect(202, request{method: "POST", path: "/v1/functions/limited/jobs", key: keyA, contentType: "text/plain", body: []byte("x")})
	c.expect(429, request{method: "POST", path: "/v1/functions/limited/jobs", key: keyA, contentType: "text/plain", body: []byte("x")})
	c.expect(429, request{method: "POST", path: "/v1/functions/limited:invoke", key: keyA, contentType: "text/plain", body: []byte("x")})
	held := c.open(request{method: "GET", path: "/v1/jobs/" + running + ":watch", key: keyA})
	c.expect(429, request{method: "GET", path: "/v1/jobs/" + id + ":watch", key: keyA})
	held.close()
	buffertest.WaitFor(t, 10*time.Second, "the held watch given back", func() bool {
		return c.do(request{method: "GET", path: "/v1/jobs/" + id + ":watch", key: keyA}) == http.StatusOK
	})

	// A full buffer refuses submits: fill it with jobs that never finish.
	buffertest.WaitFor(t, 10*time.Second, "the buffer full", func() bool {
		return c.do(request{method: "POST", path: "/v1/functions/stuck/jobs", key: keyA, contentType: "text/plain", body: []byte("x")}) ==
			http.StatusServiceUnavailable
	})
	c.expect(503, request{method: "POST", path: "/v1/functions/echo:invoke", key: keyA, contentType: "text/plain", body: []byte("x")})

	// JetStream gone: every other call that needs it is refused for a
	// moment. Some wait out a JetStream request's timeout first: all at once.
	if err := nc.ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	c.expectAll(503, []request{
		{method: "GET", path: "/v1/jobs/" + id},
		{method: "GET", path: "/v1/jobs/" + id + "/result"},
		{method: "POST", path: "/v1/jobs/" + id + ":cancel"},
		{method: "GET", path: "/v1/jobs/" + id + ":watch"},
		{method: "GET", path: "/v1/functions/echo"},
		{method: "GET", path: "/v1/functions/echo/deadletters"},
		{method: "POST", path: "/v1/functions/echo/deadletters:redrive", contentType: "application/json", body: []byte("{}")},
		{method: "DELETE", path: "/v1/functions/echo/deadletters/" + id},
	})

	c.checkEveryAnswerSeen()
}

// echoFunction answers with the payload and its content type, or for a
// payload "status:N" with status N.
func echoFunction(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if code, ok := strings.CutPrefix(string(body), "status:"); ok {
		n, _ := strconv.Atoi(code)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(n)
	} else if ct := r.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.Write(body) //nolint:errcheck // the gateway reads what arrived
}

// hangUp closes the connection without an answer.
func hangUp(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

// request is one REST call of the conformance test.
type request struct {
	method, path string
	key          string // the API key; none if empty
	contentType  string
	body         []byte
	header       []string // more headers: name, value, ...
	// invalid marks a request the document does not allow, sent on
	// purpose: its validation must fail, and the answer still match.
	invalid bool
}

type invalidRequestKey struct{}

// conformance sends requests through a transport that validates each
// exchange against the OpenAPI document the gateway serves, and records
// which (operation, status) pairs the gateway answered.
type conformance struct {
	t      *testing.T
	base   string
	doc    *openapi3.T
	router routers.Router
	client *http.Client
	next   http.RoundTripper
	last   []byte // the body of the last answer expect read

	mu   sync.Mutex
	seen map[string]bool // "operationId status"
}

func newConformance(t *testing.T, base string) *conformance {
	t.Helper()
	resp, body := get(t, base+"/openapi.json")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /openapi.json: %d", resp.StatusCode)
	}
	doc, err := openapi3.NewLoader().LoadFromData(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(t.Context(), openapi3.EnableSchemaPatternValidation()); err != nil {
		t.Fatalf("the served OpenAPI document is not valid: %v", err)
	}
	// The document's server is relative ("/"): here it is this gateway.
	doc.Servers = openapi3.Servers{{URL: base}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 10}
	t.Cleanup(tr.CloseIdleConnections)
	c := &conformance{t: t, base: base, doc: doc, router: router, next: tr, seen: map[string]bool{}}
	c.client = &http.Client{Transport: c}
	return c
}

// do sends r and returns the status the gateway answered.
func (c *conformance) do(r request) int {
	c.t.Helper()
	status, body, err := c.call(r)
	if err != nil {
		c.t.Fatal(err)
	}
	c.last = body
	return status
}

// expect sends r, fails the test unless the gateway answers status, and
// returns the answer's body.
func (c *conformance) expect(status int, r request) []byte {
	c.t.Helper()
	if got := c.do(r); got != status {
		c.t.Errorf("%s %s: %d %s, want %d", r.method, r.path, got, c.last, status)
	}
	return c.last
}

// expectAll sends each request, all at once, with the API key, and fails
// the test unless the gateway answers each with status.
func (c *conformance) expectAll(status int, rs []request) {
	c.t.Helper()
	var wg sync.WaitGroup
	for _, r := range rs {
		r.key = keyA
		wg.Go(func() {
			switch got, body, err := c.call(r); {
			case err != nil:
				c.t.Error(err)
			case got != status:
				c.t.Errorf("%s %s: %d %s, want %d", r.method, r.path, got, body, status)
			}
		})
	}
	wg.Wait()
}

// call sends r and reads the answer.
func (c *conformance) call(r request) (int, []byte, error) {
	resp, err := c.send(r)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	return resp.StatusCode, body, nil
}

func (c *conformance) send(r request) (*http.Response, error) {
	ctx := c.t.Context()
	if r.invalid {
		ctx = context.WithValue(ctx, invalidRequestKey{}, true)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.base+r.path, bytes.NewReader(r.body))
	if err != nil {
		return nil, err
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	if r.key != "" {
		req.Header.Set("Authorization", "Bearer "+r.key)
	}
	for i := 0; i+1 < len(r.header); i += 2 {
		req.Header.Set(r.header[i], r.header[i+1])
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	return resp, nil
}

// jobID is the ID of the job a submit answered with.
func (c *conformance) jobID(body []byte) string {
	c.t.Helper()
	id := decodeJob(c.t, body).ID
	if id == "" {
		c.t.Fatalf("no job in %s", body)
	}
	return id
}

// waitFinished long-polls GET /v1/jobs/{id}?wait= until the job finished.
func (c *conformance) waitFinished(id string) {
	c.t.Helper()
	buffertest.WaitForNoError(c.t, 30*time.Second, "job "+id+" finished", func() error {
		switch job := decodeJob(c.t, c.expect(200, request{method: "GET", path: "/v1/jobs/" + id + "?wait=10s", key: keyA})); job.State {
		case "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED":
			return nil
		default:
			return fmt.Errorf("still %s", job.State)
		}
	})
}

// openWatch is a watch left open, its first line read.
type openWatch struct {
	c    *conformance
	resp *http.Response
	rd   *bufio.Reader
}

// open starts a watch, which must be answered 200, and reads its first
// line.
func (c *conformance) open(r request) *openWatch {
	c.t.Helper()
	resp, err := c.send(r)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.t.Fatalf("%s %s: %d %s, want an open watch", r.method, r.path, resp.StatusCode, body)
	}
	w := &openWatch{c: c, resp: resp, rd: bufio.NewReader(resp.Body)}
	if _, err := w.rd.ReadString('\n'); err != nil {
		c.t.Fatalf("%s %s: no first line: %v", r.method, r.path, err)
	}
	return w
}

// rest reads the watch's lines to its end.
func (w *openWatch) rest() []string {
	w.c.t.Helper()
	defer w.resp.Body.Close()
	var lines []string
	for {
		line, err := w.rd.ReadString('\n')
		if line != "" {
			lines = append(lines, line)
		}
		if errors.Is(err, io.EOF) {
			return lines
		}
		if err != nil {
			w.c.t.Fatalf("watch: %v", err)
		}
	}
}

func (w *openWatch) close() { w.resp.Body.Close() }

// RoundTrip validates the request, sends it, records and validates the
// answer: whole, or a watch's line by line as they are read.
func (c *conformance) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	req.Body.Close()
	route, pathParams, err := c.router.FindRoute(req)
	if err != nil {
		c.t.Errorf("%s %s: no operation of the document: %v", req.Method, req.URL, err)
		req.Body = io.NopCloser(bytes.NewReader(body))
		return c.next.RoundTrip(req)
	}
	validated := req.Clone(req.Context())
	validated.Body = io.NopCloser(bytes.NewReader(body))
	in := &openapi3filter.RequestValidationInput{
		Request: validated, PathParams: pathParams, Route: route,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, AuthenticationFunc: bearerKeyPresent},
	}
	requestErr := openapi3filter.ValidateRequest(req.Context(), in)
	switch invalid := req.Context().Value(invalidRequestKey{}) != nil; {
	case invalid && requestErr == nil:
		c.t.Errorf("%s %s: the document allows this request, sent as one it does not", req.Method, req.URL)
	case !invalid && requestErr != nil:
		c.t.Errorf("%s %s: the request does not match the document: %v", req.Method, req.URL, requestErr)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	c.record(route.Operation, resp.StatusCode)
	if route.Operation.OperationID == "watchJob" && resp.StatusCode == http.StatusOK {
		resp.Body = &validatedLines{c: c, in: in, resp: resp, body: resp.Body}
		return resp, nil
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	c.validateResponse(in, resp, respBody)
	return resp, nil
}

// bearerKeyPresent is the document's security scheme as a validator sees
// it: an Authorization: Bearer header with a key. Whether the key is
// right is the gateway's to say.
func bearerKeyPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if s := in.SecurityScheme; s.Type != "http" || s.Scheme != "bearer" {
		return fmt.Errorf("security scheme %s %s, want http bearer", s.Type, s.Scheme)
	}
	scheme, key, _ := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || key == "" {
		return errors.New("no Authorization: Bearer <key>")
	}
	return nil
}

func (c *conformance) validateResponse(in *openapi3filter.RequestValidationInput, resp *http.Response, body []byte) {
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: in.Options,
	}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(in.Request.Context(), out); err != nil {
		c.t.Errorf("%s %s: the answer %d %s does not match the document: %v", in.Request.Method, in.Request.URL, resp.StatusCode, body, err)
	}
}

// record notes that the operation answered status: as its own, or as the
// operation's default answer.
func (c *conformance) record(op *openapi3.Operation, status int) {
	key := strconv.Itoa(status)
	if op.Responses.Status(status) == nil && op.Responses.Default() != nil {
		key = "default"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen[op.OperationID+" "+key] = true
}

// checkEveryAnswerSeen fails the test for each answer the document lists
// that was not seen, unless notTriggered says why it cannot be.
func (c *conformance) checkEveryAnswerSeen() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var unseen []string
	for _, item := range c.doc.Paths.Map() {
		for _, op := range item.Operations() {
			for status := range op.Responses.Map() {
				pair := op.OperationID + " " + status
				_, excused := notTriggered[pair]
				switch {
				case c.seen[pair] && excused:
					c.t.Errorf("%s was seen: take it off notTriggered", pair)
				case !c.seen[pair] && !excused:
					unseen = append(unseen, pair)
				}
			}
		}
	}
	for pair := range notTriggered {
		op, status, _ := strings.Cut(pair, " ")
		if o := c.operation(op); o == nil || o.Responses.Value(status) == nil {
			c.t.Errorf("notTriggered has %s, which the document does not list", pair)
		}
	}
	if len(unseen) > 0 {
		slices.Sort(unseen)
		c.t.Errorf("the document lists answers no flow brought about: %s", strings.Join(unseen, ", "))
	}
}

func (c *conformance) operation(id string) *openapi3.Operation {
	for _, item := range c.doc.Paths.Map() {
		for _, op := range item.Operations() {
			if op.OperationID == id {
				return op
			}
		}
	}
	return nil
}

// validatedLines is a watch's body that validates each line, as the
// caller reads it, as one answer of the document's 200.
type validatedLines struct {
	c       *conformance
	in      *openapi3filter.RequestValidationInput
	resp    *http.Response
	body    io.ReadCloser
	partial []byte
}

func (v *validatedLines) Read(p []byte) (int, error) {
	n, err := v.body.Read(p)
	v.partial = append(v.partial, p[:n]...)
	for {
		line, rest, ok := bytes.Cut(v.partial, []byte("\n"))
		if !ok {
			break
		}
		v.c.validateResponse(v.in, v.resp, line)
		v.partial = rest
	}
	if errors.Is(err, io.EOF) && len(v.partial) > 0 {
		v.c.t.Errorf("watch ended in the middle of a line: %q", v.partial)
	}
	return n, err
}

func (v *validatedLines) Close() error { return v.body.Close() }
