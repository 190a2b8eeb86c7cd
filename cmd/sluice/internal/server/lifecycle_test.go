package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/callback"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
)

type deadLettersJSON struct {
	DeadLetters []struct {
		Job struct {
			ID             string `json:"id"`
			State          string `json:"state"`
			Attempts       int    `json:"attempts"`
			DeadLetterTime string `json:"deadLetterTime"`
			History        []struct {
				Outcome    string `json:"outcome"`
				HTTPStatus int    `json:"httpStatus"`
			} `json:"history"`
		} `json:"job"`
		Reason  string `json:"reason"`
		Payload []byte `json:"payload"`
	} `json:"deadLetters"`
	NextPageToken string `json:"nextPageToken"`
	Total         string `json:"total"` // int64 is a JSON string
}

func TestDeadLettersOverREST(t *testing.T) {
	fn := &buffertest.StatusFunction{}
	fn.Status.Store(500)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{
		Name: "f", URL: srv.URL, Concurrency: 4, Timeout: config.Duration(time.Second),
		Retry:          config.RetryConfig{MaxAttempts: 3, InitialBackoff: config.Duration(10 * time.Millisecond), MaxBackoff: config.Duration(20 * time.Millisecond)},
		CircuitBreaker: config.CircuitBreakerConfig{Enabled: new(false)},
	})
	var ids []string
	for i := range 3 {
		resp := post(t, g.Base+"/v1/functions/f/jobs", "text/plain", []byte{'a' + byte(i)})
		var job jobJSON
		if err := json.NewDecoder(resp.Body).Decode(&job); err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("submit: %d, %v", resp.StatusCode, err)
		}
		ids = append(ids, job.ID)
	}
	for _, id := range ids {
		if job := waitREST(t, g, id, 20*time.Second); job.State != "FAILED" || job.Attempts != 3 {
			t.Fatalf("job = %+v; want FAILED after 3 attempts", job)
		}
	}
	if _, body := get(t, g.Base+"/v1/jobs/"+ids[0]); !strings.Contains(string(body), `"deadLetterTime":"`) {
		t.Errorf("job %s does not say it is dead-lettered: %s", ids[0], body)
	}

	// Two pages: 2 with payloads, then 1. A job is written FAILED first,
	// then copied to the dead letters: the list may lag by a moment.
	var page deadLettersJSON
	var body []byte
	buffertest.WaitForNoError(t, 10*time.Second, "the list counting all 3 dead letters", func() error {
		var resp *http.Response
		resp, body = get(t, g.Base+"/v1/functions/f/deadletters?pageSize=2&includePayload=true")
		page = deadLettersJSON{}
		if err := json.Unmarshal(body, &page); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("list: %d %s", resp.StatusCode, body)
		}
		if page.Total != "3" {
			return fmt.Errorf("first page %s", body)
		}
		return nil
	})
	if len(page.DeadLetters) != 2 || page.NextPageToken == "" || page.Total != "3" || len(page.DeadLetters[0].Payload) != 1 {
		t.Fatalf("first page = %s; want 2 of 3 with payloads and a next page", body)
	}
	dl := page.DeadLetters[0]
	if dl.Reason != "function answered HTTP 500 (attempt 3 of 3)" || len(dl.Job.History) != 3 || dl.Job.History[2].HTTPStatus != 500 {
		t.Errorf("dead letter = %+v; want its reason and every attempt", dl)
	}
	_, body = get(t, g.Base+"/v1/functions/f/deadletters?pageSize=2&pageToken="+page.NextPageToken)
	var rest deadLettersJSON
	if err := json.Unmarshal(body, &rest); err != nil || len(rest.DeadLetters) != 1 || rest.NextPageToken != "" {
		t.Fatalf("second page = %s; want the last one", body)
	}
	if resp, _ := get(t, g.Base+"/v1/functions/f/deadletters?pageSize=501"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("page size 501: %d, want 400", resp.StatusCode)
	}
	if resp, _ := get(t, g.Base+"/v1/functions/f/deadletters?pageToken=bogus"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bogus page token: %d, want 400", resp.StatusCode)
	}

	// Discard one; discarding it again is 404.
	if code, _, body := call(t, http.MethodDelete, g.Base+"/v1/functions/f/deadletters/"+ids[2], "", ""); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, body)
	}
	if code, _, _ := call(t, http.MethodDelete, g.Base+"/v1/functions/f/deadletters/"+ids[2], "", ""); code != http.StatusNotFound {
		t.Errorf("second delete: %d, want 404", code)
	}

	// Fix the function and redrive all that are left.
	fn.Status.Store(200)
	calls := fn.Calls.Load()
	code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/deadletters:redrive", "", `{}`)
	var redriven struct {
		Jobs []jobJSON `json:"jobs"`
	}
	if err := json.Unmarshal(body, &redriven); err != nil || code != http.StatusOK || len(redriven.Jobs) != 2 {
		t.Fatalf("redrive: %d %s; want the 2 left", code, body)
	}
	for _, id := range ids[:2] {
		job := waitREST(t, g, id, 20*time.Second)
		if job.State != "SUCCEEDED" || job.Attempts != 1 {
			t.Errorf("redriven job = %+v; want SUCCEEDED on a fresh attempt", job)
		}
		if _, body := get(t, g.Base+"/v1/jobs/"+id); !strings.Contains(string(body), `"redrives":1`) || !strings.Contains(string(body), `"REDRIVEN"`) {
			t.Errorf("redriven job's history does not show the redrive: %s", body)
		}
	}
	if got := fn.Calls.Load() - calls; got != 2 {
		t.Errorf("the function ran %d times after the redrive; want once per redriven job", got)
	}
	if code, _, body := call(t, http.MethodPost, g.Base+"/v1/functions/f/deadletters:redrive", "", `{"ids":["`+ids[2]+`"]}`); code != http.StatusOK || !strings.Contains(string(body), ids[2]) {
		t.Errorf("redrive of a discarded one: %d %s; want it among notFoundIds", code, body)
	}
	if code, _, _ := call(t, http.MethodPost, g.Base+"/v1/functions/f/deadletters:redrive", "", `{"ids":["nope"]}`); code != http.StatusBadRequest {
		t.Errorf("redrive of a malformed ID: %d, want 400", code)
	}
	if st := fnStatusOf(t, g, "f"); st.DeadLetters != "" && st.DeadLetters != "0" {
		t.Errorf("function status shows %s dead letters; want none", st.DeadLetters)
	}
	// The running totals: 3 jobs dead-lettered after 2 retries each, then
	// 2 of them redriven and succeeded. They are shared every 100ms.
	buffertest.WaitForNoError(t, 5*time.Second, "totals of succeeded 2, dead-lettered 3, retries 6", func() error {
		if st := fnStatusOf(t, g, "f"); st.Succeeded != "2" || st.DeadLettered != "3" || st.Retries != "6" {
			return fmt.Errorf("succeeded %s, dead-lettered %s, retries %s", st.Succeeded, st.DeadLettered, st.Retries)
		}
		return nil
	})
}

// receiver is a callback endpoint that checks signatures as a receiver
// must, and keeps what it got.
type receiver struct {
	secret string
	mu     sync.Mutex
	got    []map[string]any
	bad    []error
	ids    []string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := callback.Verify(r.secret, req.Header, body, 5*time.Minute, time.Now()); err != nil {
		r.bad = append(r.bad, err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var event map[string]any
	if err := json.Unmarshal(body, &event); err != nil {
		r.bad = append(r.bad, err)
	}
	r.got = append(r.got, event)
	r.ids = append(r.ids, req.Header.Get("webhook-id"))
}

func (r *receiver) events() ([]map[string]any, []string, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.got...), append([]string(nil), r.ids...), append([]error(nil), r.bad...)
}

func TestCallbacks(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	oldKey := bytes.Repeat([]byte{9}, 32)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	oldSecret := "whsec_" + base64.StdEncoding.EncodeToString(oldKey)
	recv := &receiver{secret: oldSecret} // a receiver that has not rotated yet
	rsrv := httptest.NewServer(recv)
	defer rsrv.Close()
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{{Name: "f", URL: fnURL}},
		// Signed with both during a rotation; loopback allowed for the test.
		Callbacks: config.CallbacksConfig{Secrets: []string{secret, oldSecret}, AllowCIDRs: []string{"127.0.0.0/8"}},
	})
	req, _ := http.NewRequest(http.MethodPost, g.Base+"/v1/functions/f/jobs", strings.NewReader(`{"n":1}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Sluice-Callback-Url", rsrv.URL+"/hook")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var job jobJSON
	json.NewDecoder(resp.Body).Decode(&job) //nolint:errcheck // checked below
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit with callback: %d", resp.StatusCode)
	}
	var got []map[string]any
	var ids []string
	buffertest.WaitFor(t, 15*time.Second, "a callback", func() bool {
		var bad []error
		got, ids, bad = recv.events()
		if len(bad) > 0 {
			t.Fatalf("receiver refused callbacks: %v", bad)
		}
		return len(got) > 0
	})
	data, _ := got[0]["data"].(map[string]any)
	if got[0]["type"] != "job.succeeded" || data["id"] != job.ID || data["state"] != "SUCCEEDED" || ids[0] != "msg_"+job.ID+"_0" {
		t.Errorf("callback = %v (webhook-id %s); want job %s succeeded", got[0], ids[0], job.ID)
	}

	// Callback URLs the guard refuses, at submit time.
	for _, u := range []string{"http://169.254.169.254/latest/meta-data/", "ftp://example.com/", "http://[::1/"} {
		req, _ := http.NewRequest(http.MethodPost, g.Base+"/v1/functions/f/jobs", strings.NewReader(`{}`))
		req.Header.Set("Sluice-Callback-Url", u)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("callback %q: %d, want 400", u, resp.StatusCode)
		}
	}
}

func TestCallbacksRefusedWithoutSecretOrToLoopback(t *testing.T) {
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	plain := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{Name: "f", URL: fnURL})
	guarded := servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{{Name: "f", URL: fnURL}},
		Callbacks: config.CallbacksConfig{Secrets: []string{"whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))}},
	})
	for _, c := range []struct {
		g   *servertest.Gateway
		url string
	}{
		{plain, "https://example.com/hook"},
		{guarded, "http://127.0.0.1:9/hook"},
		{guarded, "http://[::1]:9/hook"},
		{guarded, "http://10.0.0.1/hook"},
		{guarded, "http://169.254.169.254/"},
	} {
		req, _ := http.NewRequest(http.MethodPost, c.g.Base+"/v1/functions/f/jobs", strings.NewReader(`{}`))
		req.Header.Set("Sluice-Callback-Url", c.url)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("callback %q: %d %s, want 400", c.url, resp.StatusCode, body)
		}
	}
}

func TestCircuitStateInFunctionStatus(t *testing.T) {
	fn := &buffertest.StatusFunction{}
	fn.Status.Store(502)
	srv := httptest.NewServer(fn)
	defer srv.Close()
	g := servertest.StartFunctions(t, t.TempDir(), config.FunctionConfig{
		Name: "f", URL: srv.URL, Concurrency: 2, Timeout: config.Duration(time.Second),
		Retry:          config.RetryConfig{MaxAttempts: 5, InitialBackoff: config.Duration(10 * time.Millisecond), MaxBackoff: config.Duration(20 * time.Millisecond)},
		CircuitBreaker: config.CircuitBreakerConfig{MinAttempts: 4, Cooldown: config.Duration(time.Minute)},
	})
	for range 6 {
		post(t, g.Base+"/v1/functions/f/jobs", "text/plain", []byte("x"))
	}
	var st liveStatus
	buffertest.WaitForNoError(t, 10*time.Second, "the circuit open", func() error {
		if st = fnStatusOf(t, g, "f"); st.Circuit.State != "OPEN" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if !strings.HasPrefix(st.Reason, "paused: circuit open") || !strings.Contains(st.Circuit.Reason, "of the last") {
		t.Errorf("status = %+v; want it to say dispatch is paused, and why", st)
	}
	calls := fn.Calls.Load()
	time.Sleep(300 * time.Millisecond) // time enough for calls the open circuit must hold back
	if extra := fn.Calls.Load() - calls; extra > 2 {
		t.Errorf("%d calls while the circuit was open; at most the 2 already in flight may finish", extra)
	}
	if st := fnStatusOf(t, g, "f"); st.DeadLetters != "0" {
		t.Errorf("dead letters = %s while the circuit held the jobs; want 0", st.DeadLetters)
	}
}
