package target

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"

	"github.com/sluicehq/sluice/dispatch/lambdatest"
)

// testLambdaClient is a Lambda API client for endpoint, with static
// credentials so requests are signed as against AWS.
func testLambdaClient(endpoint string) *lambda.Client {
	return lambda.New(lambda.Options{
		Region:       "eu-west-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
	})
}

func logTail(lines ...string) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Join(lines, "\n") + "\n"))
}

// TestLambdaInvokerAnswers runs the invoker against a narrow fake of the
// Lambda Invoke REST API, answering as AWS documents it, and checks how
// each answer maps onto a Response, and that each Invoke is exactly one
// API call (the SDK's retries off).
func TestLambdaInvokerAnswers(t *testing.T) {
	const warmReport = "REPORT RequestId: 6f1c\tDuration: 2.05 ms\tBilled Duration: 3 ms\tMemory Size: 128 MB\tMax Memory Used: 40 MB"
	const coldReport = "REPORT RequestId: 6f1c\tDuration: 2.05 ms\tBilled Duration: 3 ms\tMemory Size: 128 MB\tMax Memory Used: 40 MB\tInit Duration: 153.20 ms"
	for _, tc := range []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		want       Response
		wantCold   *bool
		wantInBody string
	}{
		{name: "warm success", status: 200, header: map[string]string{"X-Amz-Log-Result": logTail("START RequestId: 6f1c", "END RequestId: 6f1c", warmReport), "X-Amz-Executed-Version": "7"},
			body: `{"ok":true}`, want: Response{Status: 200, ContentType: "application/json"}, wantCold: new(false), wantInBody: `{"ok":true}`},
		{name: "cold start", status: 200, header: map[string]string{"X-Amz-Log-Result": logTail("START RequestId: 6f1c", "END RequestId: 6f1c", coldReport)},
			body: `"hi"`, want: Response{Status: 200, ContentType: "application/json"}, wantCold: new(true)},
		{name: "snapstart restore", status: 200, header: map[string]string{"X-Amz-Log-Result": logTail(warmReport + "\tRestore Duration: 300.11 ms")},
			body: `{}`, want: Response{Status: 200, ContentType: "application/json"}, wantCold: new(true)},
		{name: "no log tail", status: 200, body: `{}`, want: Response{Status: 200, ContentType: "application/json"}},
		{name: "function error", status: 200, header: map[string]string{"X-Amz-Function-Error": "Unhandled", "X-Amz-Log-Result": logTail(warmReport)},
			body: `{"errorMessage":"boom","errorType":"errorString"}`,
			want: Response{Status: 502, ContentType: "application/json", Error: "Lambda function error (Unhandled: errorString)"}, wantCold: new(false), wantInBody: `"errorMessage":"boom"`},
		{name: "function timeout", status: 200, header: map[string]string{"X-Amz-Function-Error": "Unhandled"},
			body: `{"errorMessage":"2026-11-27T10:00:00.000Z 6f1c Task timed out after 3.00 seconds","errorType":"Sandbox.Timedout"}`,
			want: Response{Status: 502, ContentType: "application/json", Error: "Lambda function error (Unhandled: Sandbox.Timedout)"}},
		{name: "throttled", status: 429, header: map[string]string{"X-Amzn-ErrorType": "TooManyRequestsException", "Retry-After": "3"},
			body: `{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded","Type":"User","message":"Rate Exceeded."}`,
			want: Response{Status: 429, RetryAfter: "3", Error: "Lambda throttled the invocation (ReservedFunctionConcurrentInvocationLimitExceeded)"}},
		{name: "not found", status: 404, header: map[string]string{"X-Amzn-ErrorType": "ResourceNotFoundException"},
			body: `{"Type":"User","message":"Function not found: arn:aws:lambda:eu-west-1:123456789012:function:my-fn:live"}`,
			want: Response{Status: 404, Error: "Lambda refused the invocation: ResourceNotFoundException (HTTP 404)"}},
		{name: "not json", status: 400, header: map[string]string{"X-Amzn-ErrorType": "InvalidRequestContentException"},
			body: `{"Type":"User","message":"Could not parse request body into json"}`,
			want: Response{Status: 400, Error: "Lambda refused the invocation: InvalidRequestContentException (HTTP 400)"}},
		{name: "service exception", status: 500, header: map[string]string{"X-Amzn-ErrorType": "ServiceException"},
			body: `{"message":"internal"}`, want: Response{Status: 500, Error: "Lambda refused the invocation: ServiceException (HTTP 500)"}},
		{name: "ec2 throttled", status: 502, header: map[string]string{"X-Amzn-ErrorType": "EC2ThrottledException"},
			body: `{"message":"throttled by EC2"}`, want: Response{Status: 502, Error: "Lambda refused the invocation: EC2ThrottledException (HTTP 502)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			var got *http.Request
			var gotBody []byte
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) == 1 {
					got = r.Clone(context.Background())
					gotBody, _ = io.ReadAll(r.Body)
				}
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			inv := &Lambda{Client: testLambdaClient(srv.URL), Function: "my-fn", Qualifier: "live"}
			resp, err := inv.Invoke(t.Context(), &Invocation{JobID: "job-1", Function: "f", Attempt: 2, ContentType: "application/json", Payload: []byte(`{"n":1}`)})
			if err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("%d API calls for one Invoke, want 1: the SDK must not retry", n)
			}
			if resp.Status != tc.want.Status || resp.RetryAfter != tc.want.RetryAfter || resp.Error != tc.want.Error || resp.ContentType != tc.want.ContentType {
				t.Errorf("response = {Status:%d RetryAfter:%q Error:%q ContentType:%q}, want %+v", resp.Status, resp.RetryAfter, resp.Error, resp.ContentType, tc.want)
			}
			if (resp.ColdStart == nil) != (tc.wantCold == nil) || (resp.ColdStart != nil && *resp.ColdStart != *tc.wantCold) {
				t.Errorf("cold start = %v, want %v", fmtBoolPtr(resp.ColdStart), fmtBoolPtr(tc.wantCold))
			}
			if !strings.Contains(string(resp.Body), tc.wantInBody) {
				t.Errorf("body = %s, want it to contain %s", resp.Body, tc.wantInBody)
			}
			if strings.Contains(resp.Error, "123456789012") {
				t.Errorf("error %q leaks the account", resp.Error)
			}
			// The request, as the Lambda API takes it.
			if got.Method != http.MethodPost || got.URL.Path != "/2015-03-31/functions/my-fn/invocations" || got.URL.Query().Get("Qualifier") != "live" {
				t.Errorf("request = %s %s", got.Method, got.URL)
			}
			if got.Header.Get("X-Amz-Invocation-Type") != "RequestResponse" || got.Header.Get("X-Amz-Log-Type") != "Tail" || !strings.HasPrefix(got.Header.Get("Authorization"), "AWS4-HMAC-SHA256") {
				t.Errorf("headers = %v", got.Header)
			}
			if string(gotBody) != `{"n":1}` {
				t.Errorf("payload = %q", gotBody)
			}
			cc, _ := base64.StdEncoding.DecodeString(got.Header.Get("X-Amz-Client-Context"))
			var clientContext struct{ Custom map[string]string }
			if err := json.Unmarshal(cc, &clientContext); err != nil || clientContext.Custom[HeaderJobID] != "job-1" || clientContext.Custom[HeaderAttempt] != "2" {
				t.Errorf("client context = %s (%v)", cc, err)
			}
		})
	}
}

func fmtBoolPtr(b *bool) string {
	if b == nil {
		return "nil"
	}
	if *b {
		return "true"
	}
	return "false"
}

// TestLambdaInvokerNoAnswer: a timeout is an error (no answer), the
// context's; so is an endpoint that is not there, the dial's. Dispatch's
// TestTargetsNoAnswer checks how the dispatcher words them.
func TestLambdaInvokerNoAnswer(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	inv := &Lambda{Client: testLambdaClient(srv.URL), Function: "my-fn"}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	resp, err := inv.Invoke(ctx, &Invocation{JobID: "j", Attempt: 1, Payload: []byte(`{}`)})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Invoke past the deadline = %+v, %v; want a deadline error", resp, err)
	}

	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	inv = &Lambda{Client: testLambdaClient(gone.URL), Function: "my-fn"}
	var opErr *net.OpError
	if resp, err := inv.Invoke(t.Context(), &Invocation{JobID: "j", Attempt: 1}); err == nil || errors.Is(err, ErrResponseTooLarge) {
		t.Errorf("Invoke on a closed endpoint = %+v, %v; want an error", resp, err)
	} else if !errors.As(err, &opErr) || opErr.Op != "dial" {
		t.Errorf("Invoke on a closed endpoint = %v; want a failed dial (*net.OpError)", err)
	}
}

// TestLambdaInvokerTooLarge: a response over MaxResponseBytes is
// ErrResponseTooLarge.
func TestLambdaInvokerTooLarge(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `"`+strings.Repeat("x", 2000)+`"`)
	}))
	defer srv.Close()
	inv := &Lambda{Client: testLambdaClient(srv.URL), Function: "my-fn", MaxResponseBytes: 1000}
	if _, err := inv.Invoke(t.Context(), &Invocation{JobID: "j", Attempt: 1}); !errors.Is(err, ErrResponseTooLarge) {
		t.Errorf("err = %v, want ErrResponseTooLarge", err)
	}
}

// TestLambdaEmulator invokes a Go function built with aws-lambda-go under
// the AWS Lambda Runtime Interface Emulator: the payload arrives as the
// event, the job's ID and attempt in the client context, and a keep-warm
// ping says so.
func TestLambdaEmulator(t *testing.T) {
	emu := lambdatest.Start(t)
	inv := &Lambda{Client: testLambdaClient(emu.URL), Function: lambdatest.FunctionName}
	type answer struct {
		Echo        json.RawMessage `json:"echo"`
		JobID       string          `json:"job_id"`
		Attempt     string          `json:"attempt"`
		Warmup      string          `json:"warmup"`
		Invocations int             `json:"invocations"`
	}
	call := func(in *Invocation) (*Response, answer) {
		t.Helper()
		resp, err := inv.Invoke(t.Context(), in)
		if err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		var a answer
		if resp.Status == 200 {
			if err := json.Unmarshal(resp.Body, &a); err != nil {
				t.Fatalf("answer %s: %v", resp.Body, err)
			}
		}
		return resp, a
	}
	resp, a := call(&Invocation{JobID: "job-7", Attempt: 3, Payload: []byte(`{"resize":[64,64]}`)})
	if resp.Status != 200 || resp.Error != "" || string(a.Echo) != `{"resize":[64,64]}` || a.JobID != "job-7" || a.Attempt != "3" || a.Warmup != "" {
		t.Errorf("invocation = %d %q %s", resp.Status, resp.Error, resp.Body)
	}
	resp, a = call(&Invocation{Warmup: true})
	if resp.Status != 200 || a.Warmup != "1" || a.JobID != "" || string(a.Echo) != string(LambdaWarmupEvent) {
		t.Errorf("keep-warm ping = %d %s", resp.Status, resp.Body)
	}
	if st := emu.Stats(); st.Invocations != 2 || st.Failures != 0 || st.MaxInFlight != 1 || !emu.Alive() {
		t.Errorf("emulator stats = %+v, alive %v", st, emu.Alive())
	}
	// The emulator drops X-Amz-Function-Error (its response writer keeps
	// no headers), so a handler's error comes back as a 200 with the error
	// payload: TestLambdaInvokerAnswers checks the header against the
	// API's documented answer instead.
}
