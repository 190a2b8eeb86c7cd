package server_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/api/restclient"
	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/gateway"
)

// TestGeneratedRESTClient drives a gateway that requires API keys through
// nothing but the client generated from the OpenAPI document
// (api/restclient): what a user generating a client from /openapi.json
// gets must work, key, raw payload, typed answers and all.
func TestGeneratedRESTClient(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{{Name: "echo", URL: fnURL, MaxPayload: 1024}},
		Tenants:   []config.TenantConfig{{Name: "acme", APIKeys: []string{gateway.HashKey(keyA)}}},
	})
	client, err := restclient.NewClientWithResponses(g.Base, restclient.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("Authorization", "Bearer "+keyA)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	payload := []byte(`{"order": 42, "lines": ["a", "b"]}`)

	sub, err := client.SubmitJobWithBodyWithResponse(ctx, "echo", &restclient.SubmitJobParams{IdempotencyKey: new("order-42")},
		"application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	if sub.StatusCode() != http.StatusAccepted || sub.JSON202 == nil || sub.Headers202 == nil {
		t.Fatalf("submit: %d %s, want 202 with the job", sub.StatusCode(), sub.Body)
	}
	id := sub.JSON202.Id
	if sub.Headers202.Location != "/v1/jobs/"+id || sub.JSON202.Function != "echo" || sub.JSON202.Tenant != "acme" ||
		sub.JSON202.PayloadSize != fmt.Sprint(len(payload)) || sub.Headers202.IdempotentReplayed != nil {
		t.Errorf("submit: Location %q, job %+v, replayed %v; want /v1/jobs/%s, acme's echo job of %d bytes, not replayed",
			sub.Headers202.Location, *sub.JSON202, sub.Headers202.IdempotentReplayed, id, len(payload))
	}
	again, err := client.SubmitJobWithBodyWithResponse(ctx, "echo", &restclient.SubmitJobParams{IdempotencyKey: new("order-42")},
		"application/json", bytes.NewReader(payload))
	if err != nil || again.JSON202 == nil || again.JSON202.Id != id || again.Headers202.IdempotentReplayed == nil {
		t.Errorf("repeated submit: %v, %v; want job %s, replayed", again, err, id)
	}

	// The long poll: each GET waits up to 10s for the job to finish.
	var job *restclient.Job
	buffertest.WaitForNoError(t, 30*time.Second, "job "+id+" finished", func() error {
		got, err := client.GetJobWithResponse(ctx, id, &restclient.GetJobParams{Wait: new("10s")})
		if err != nil {
			t.Fatal(err)
		}
		if got.JSON200 == nil {
			t.Fatalf("GET job: %d %s", got.StatusCode(), got.Body)
		}
		if job = got.JSON200; job.State == restclient.JobStateQUEUED || job.State == restclient.JobStateRUNNING {
			return fmt.Errorf("still %s", job.State)
		}
		return nil
	})
	if job.State != restclient.JobStateSUCCEEDED || job.Attempts != 1 || job.Result == nil ||
		job.Result.HttpStatus != http.StatusOK || !bytes.Equal(job.Result.Body, payload) || job.FinishTime == nil {
		t.Errorf("finished job = %+v, want SUCCEEDED after one attempt, its result the payload", *job)
	}
	result, err := client.GetJobResultWithResponse(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if result.StatusCode() != http.StatusOK || !bytes.Equal(result.Body, payload) || result.ContentType() != "application/json" {
		t.Errorf("result: %d %q (%s), want 200 with the payload echoed as application/json", result.StatusCode(), result.Body, result.ContentType())
	}

	anonymous, err := restclient.NewClientWithResponses(g.Base)
	if err != nil {
		t.Fatal(err)
	}
	noKey, err := anonymous.GetJobWithResponse(ctx, id, nil)
	if err != nil || noKey.JSON401 == nil || !strings.HasPrefix(noKey.Headers401.WWWAuthenticate, "Bearer") {
		t.Errorf("GET job without a key: %v, %v; want a typed 401 with a Bearer challenge", noKey, err)
	}
	unknown, err := client.GetJobWithResponse(ctx, "AAAAAAAAAAAAAAAAAAAAAAAAAA", nil)
	if err != nil || unknown.JSON404 == nil || !strings.Contains(unknown.JSON404.Message, "not found") {
		t.Errorf("GET unknown job: %v, %v; want a typed 404", unknown, err)
	}
	malformed, err := client.GetJobWithResponse(ctx, "not-a-job-id", nil)
	if err != nil || malformed.JSON400 == nil || !strings.Contains(malformed.JSON400.Message, "malformed") {
		t.Errorf("GET a malformed job ID: %v, %v; want a typed 400", malformed, err)
	}
	tooLarge, err := client.SubmitJobWithBodyWithResponse(ctx, "echo", nil, "text/plain", bytes.NewReader(make([]byte, 1025)))
	if err != nil || tooLarge.JSON413 == nil {
		t.Errorf("submit over max_payload: %v, %v; want a typed 413", tooLarge, err)
	}
	badKey, err := client.SubmitJobWithBodyWithResponse(ctx, "echo", &restclient.SubmitJobParams{SluiceConcurrencyKey: new("account-7")},
		"text/plain", strings.NewReader("x"))
	if err != nil || badKey.JSON400 == nil || !strings.Contains(badKey.JSON400.Message, "key_concurrency") {
		t.Errorf("submit with a concurrency key to a function without key_concurrency: %v, %v; want a typed 400", badKey, err)
	}
}
