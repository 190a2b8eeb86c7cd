//go:build unix

package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/sluicehq/sluice/buffer/buffertest"
	"github.com/sluicehq/sluice/cmd/sluice/internal/config"
	"github.com/sluicehq/sluice/cmd/sluice/internal/server/servertest"
	"github.com/sluicehq/sluice/dispatch/fnsim"
	"github.com/sluicehq/sluice/gateway"
)

// The dashboard tests load the page the gateway serves at / in Debian's
// headless Chromium, let its script poll the API for a few seconds of
// virtual time, and compare what the page shows (the DOM, dumped) with
// what the API says at the same moment.

// chromium returns the path of Debian's chromium. Without it the test is
// skipped, but not under CI, which installs it (.ci/run) and must run it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed; CI must run the dashboard tests (.ci/run installs Debian's chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium); skipping the dashboard test")
	return ""
}

// dumpDOM loads pageURL in headless Chromium, lets budget of virtual time
// pass (timers run as fast as the page's requests allow, so a budget of 3s
// is three polls, taking a fraction of that), and returns the DOM as the
// page's script left it.
func dumpDOM(t *testing.T, chromiumPath, pageURL string, budget time.Duration) *html.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(),
		fmt.Sprintf("--virtual-time-budget=%d", budget.Milliseconds()),
		"--dump-dom", pageURL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Chromium runs as a tree of processes: give it a group of its own, so
	// that a timeout, or anything left behind, is ended whole.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // usually already gone
	}
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v\nstderr:\n%s", pageURL, err, stderr.String())
	}
	doc, err := html.Parse(&stdout)
	if err != nil {
		t.Fatalf("parse the DOM of %s: %v", pageURL, err)
	}
	return doc
}

// walk calls f on every element under n, n included.
func walk(n *html.Node, f func(*html.Node)) {
	if n.Type == html.ElementNode {
		f(n)
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, f)
	}
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

// text is an element's text, with runs of white space made one space.
func text(n *html.Node) string {
	var b strings.Builder
	var collect func(*html.Node)
	collect = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			collect(c)
		}
	}
	collect(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

// page is what the dumped dashboard shows.
type page struct {
	// figures holds, by function, the text of each element marked
	// data-fn="…" data-field="…".
	figures map[string]map[string]string
	// elements holds those elements themselves.
	elements map[string]map[string]*html.Node
	// samples holds, by function and chart, how many polls its chart holds.
	samples map[string]map[string]int
	doc     *html.Node
}

func readPage(t *testing.T, doc *html.Node) page {
	t.Helper()
	p := page{
		figures:  map[string]map[string]string{},
		elements: map[string]map[string]*html.Node{},
		samples:  map[string]map[string]int{},
		doc:      doc,
	}
	walk(doc, func(n *html.Node) {
		fn, ok := attr(n, "data-fn")
		if !ok {
			return
		}
		if field, ok := attr(n, "data-field"); ok {
			if p.figures[fn] == nil {
				p.figures[fn], p.elements[fn] = map[string]string{}, map[string]*html.Node{}
			}
			p.figures[fn][field], p.elements[fn][field] = text(n), n
		}
		if chart, ok := attr(n, "data-chart"); ok {
			s, _ := attr(n, "data-samples")
			k, err := strconv.Atoi(s)
			if err != nil {
				t.Errorf("chart %s of %s: data-samples %q", chart, fn, s)
			}
			if p.samples[fn] == nil {
				p.samples[fn] = map[string]int{}
			}
			p.samples[fn][chart] = k
		}
	})
	return p
}

// find returns the first element with attribute key="val" under n, or nil.
func find(n *html.Node, key, val string) *html.Node {
	var found *html.Node
	walk(n, func(e *html.Node) {
		if v, ok := attr(e, key); ok && v == val && found == nil {
			found = e
		}
	})
	return found
}

// grouped formats n as the page does: en-US digit grouping.
func grouped(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// shownRate is a rate as the page shows it: whole and grouped from 10 up,
// to a tenth below, rounding halves up as Intl.NumberFormat does.
func shownRate(r float64) string {
	if r >= 10 {
		return grouped(int64(math.Round(r))) + "/s"
	}
	return strconv.FormatFloat(math.Round(r*10)/10, 'f', 1, 64) + "/s"
}

// ungroup parses a figure the page grouped, failing the test if it is not
// a whole number.
func ungroup(t *testing.T, what, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.ReplaceAll(s, ",", ""), 10, 64)
	if err != nil {
		t.Fatalf("%s shows %q, not a number", what, s)
	}
	return n
}

// fnState is the part of GET /v1/functions/{name} the page shows.
type fnState struct {
	Concurrency int `json:"concurrency"`
	Status      struct {
		Window       int     `json:"window"`
		InFlight     int     `json:"inFlight"`
		Backlog      int64   `json:"backlog,string"`
		Reason       string  `json:"reason"`
		LearnedLimit int     `json:"learnedLimit"`
		LearnedRate  float64 `json:"learnedRatePerSecond"`
		ColdStarts   int64   `json:"coldStarts,string"`
		DeadLetters  int64   `json:"deadLetters,string"`
		Succeeded    int64   `json:"succeeded,string"`
		Retries      int64   `json:"retries,string"`
		Throttles    int64   `json:"throttles,string"`
		Circuit      struct {
			State     string `json:"state"`
			OpenUntil string `json:"openUntil"`
		} `json:"circuit"`
		Pool struct {
			Name         string `json:"name"`
			Limit        int    `json:"limit"`
			PoolInFlight int    `json:"poolInFlight"`
			Reserved     int    `json:"reserved"`
			Granted      int    `json:"granted"`
			Borrowed     int    `json:"borrowed"`
			Lent         int    `json:"lent"`
		} `json:"pool"`
	} `json:"status"`
}

// span is the least and greatest of a figure's readings.
type span struct {
	lo, hi int64
	read   bool // lo and hi hold a reading
}

func (s *span) add(v int64) {
	if !s.read {
		s.lo, s.hi, s.read = v, v, true
	}
	s.lo, s.hi = min(s.lo, v), max(s.hi, v)
}

// functionSpans are the spans of a function's figures over a while.
type functionSpans struct{ window, succeeded, coldStarts, backlog span }

func (s *functionSpans) add(f fnState) {
	s.window.add(int64(f.Status.Window))
	s.succeeded.add(f.Status.Succeeded)
	s.coldStarts.add(f.Status.ColdStarts)
	s.backlog.add(f.Status.Backlog)
}

// functionWatch reads a function's status over the API until stopped.
type functionWatch struct {
	base, name string
	cancel     context.CancelFunc
	done       chan functionSpans
}

// watchFunction reads the function's status every 20ms, from one reading
// before it returns until stop.
func watchFunction(t *testing.T, base, name string) *functionWatch {
	t.Helper()
	var spans functionSpans
	spans.add(fnStateOf(t, base, name))
	ctx, cancel := context.WithCancel(t.Context())
	w := &functionWatch{base: base, name: name, cancel: cancel, done: make(chan functionSpans, 1)}
	go func() {
		defer func() { w.done <- spans }()
		for ctx.Err() == nil {
			if f, err := readFnState(ctx, base, name); err == nil {
				spans.add(f)
			}
			time.Sleep(20 * time.Millisecond) // between readings
		}
	}()
	return w
}

// stop ends the watch with one more reading, and returns the spans.
func (w *functionWatch) stop(t *testing.T) functionSpans {
	t.Helper()
	w.cancel()
	spans := <-w.done
	spans.add(fnStateOf(t, w.base, w.name))
	return spans
}

// readFnState reads a function's status over the API; fnStateOf is it for the
// test's own goroutine.
func readFnState(ctx context.Context, base, name string) (fnState, error) {
	var f fnState
	resp, body, err := fetch(ctx, base+"/v1/functions/"+name)
	switch {
	case err != nil:
		return f, err
	case resp.StatusCode != http.StatusOK:
		return f, fmt.Errorf("GET function %s: %d %s", name, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &f); err != nil {
		return f, fmt.Errorf("decode function %s: %v: %s", name, err, body)
	}
	return f, nil
}

func fnStateOf(t *testing.T, base, name string) fnState {
	t.Helper()
	f, err := readFnState(t.Context(), base, name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// load submits a job every interval until stopped, from its own goroutine.
type load struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	ids     []string
	refused int
}

func startLoad(t *testing.T, submitURL string, every time.Duration, most int) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for range most {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			resp, err := http.Post(submitURL, "application/json", strings.NewReader(`{"n":1}`))
			if err != nil {
				t.Errorf("submit: %v", err)
				return
			}
			resp.Body.Close()
			l.mu.Lock()
			if resp.StatusCode == http.StatusAccepted {
				l.ids = append(l.ids, strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/"))
			} else {
				l.refused++
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { l.end() })
	return l
}

// end stops the load and returns the IDs of the jobs it submitted.
func (l *load) end() []string {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ids
}

// delayList serves base through a proxy that holds each GET /v1/functions
// for delay. Headless Chromium's virtual time only waits for requests in
// flight, so without it the page's one-second polls come a few
// milliseconds apart in real time and see no job finish in between; with
// it, throughput under load is measurably above zero.
func delayList(t *testing.T, base string, delay time.Duration) string {
	t.Helper()
	target, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/functions" {
			time.Sleep(delay) // a slow server's answer
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestDashboard(t *testing.T) {
	browser := chromium(t)
	_, echoURL := servertest.StartFunction(t, fnsim.Config{Duration: 100 * time.Millisecond})
	_, brokenURL := servertest.StartFunction(t, fnsim.Config{ErrorRate: 1})
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{Functions: []config.FunctionConfig{
		// A window that starts at 2 and grows by one every 2s: under a
		// steady 50 jobs/s it stays full, with a backlog, and below its
		// limit of 6.
		{Name: "echo", URL: echoURL, Concurrency: 6, Scaling: &config.ScalingConfig{Initial: 2, PerMinute: 30}, Pool: "shared", Reserved: 3},
		// Fails every job at once; its circuit opens after two failures
		// and stays open well past the test.
		{Name: "broken", URL: brokenURL, Concurrency: 2, Retry: config.RetryConfig{MaxAttempts: 1}, Pool: "shared", Reserved: 1,
			CircuitBreaker: config.CircuitBreakerConfig{MinAttempts: 2, Cooldown: config.Duration(3 * time.Minute), MaxCooldown: config.Duration(5 * time.Minute)}},
	}, Pools: []config.PoolConfig{{Name: "shared", Concurrency: 10}}})
	site := delayList(t, g.Base, 300*time.Millisecond)

	// broken: two jobs fail and are dead-lettered, opening the circuit; a
	// third is held by it.
	var failedID string
	for i := range 2 {
		resp := post(t, g.Base+"/v1/functions/broken/jobs", "text/plain", []byte("x"))
		id := strings.TrimPrefix(resp.Header.Get("Location"), "/v1/jobs/")
		if j := waitREST(t, g, id, 10*time.Second); j.State != "FAILED" {
			t.Fatalf("broken job %d ended %s, want FAILED", i, j.State)
		}
		failedID = id
	}
	buffertest.WaitFor(t, 10*time.Second, "broken's circuit to open", func() bool {
		return fnStateOf(t, g.Base, "broken").Status.Circuit.State == "OPEN"
	})
	post(t, g.Base+"/v1/functions/broken/jobs", "text/plain", []byte("x"))

	// echo: a steady stream, faster than its window drains.
	l := startLoad(t, g.Base+"/v1/functions/echo/jobs", 20*time.Millisecond, 1000)
	buffertest.WaitFor(t, 20*time.Second, "a backlog with jobs in flight", func() bool {
		f := fnStateOf(t, g.Base, "echo")
		return f.Status.Backlog >= 10 && f.Status.InFlight > 0
	})

	t.Run("under load", func(t *testing.T) {
		// The API is read all the while the page loads: each figure the
		// page shows must be one the API gave in that time (the load is
		// not steady on a busy machine, so the readings before and after
		// the page do not bound it).
		api := watchFunction(t, g.Base, "echo")
		p := readPage(t, dumpDOM(t, browser, site+"/", 3*time.Second))
		seen := api.stop(t)
		fig := p.figures["echo"]
		if fig == nil {
			t.Fatalf("the page shows no function echo; figures %v", p.figures)
		}
		if fig["name"] != "echo" || fig["limit"] != "6" {
			t.Errorf("echo shows name %q, limit %q; want echo, 6 (its concurrency)", fig["name"], fig["limit"])
		}
		within := func(field string, got int64, r span, slack int64) {
			t.Helper()
			if got < r.lo-slack || got > r.hi+slack {
				t.Errorf("%s = %d on the page; the API said %d to %d while it loaded (±%d)", field, got, r.lo, r.hi, slack)
			}
		}
		window := ungroup(t, "window", fig["window"])
		within("window", window, seen.window, 0)
		within("succeeded", ungroup(t, "succeeded", fig["succeeded"]), seen.succeeded, 0)
		within("cold starts", ungroup(t, "cold starts", fig["coldStarts"]), seen.coldStarts, 0)
		// The page's backlog and the API's differ by the jobs in flight at
		// most: the page reads the two at other moments.
		within("backlog", ungroup(t, "backlog", fig["backlog"]), seen.backlog, 6)
		if inFlight := ungroup(t, "in flight", fig["inFlight"]); inFlight < 1 || inFlight > window {
			t.Errorf("in flight = %d on the page, want 1 to the window, %d", inFlight, window)
		}
		if tp, err := strconv.ParseFloat(fig["throughput"], 64); err != nil || tp <= 0 {
			t.Errorf("throughput = %q under load, want a rate above 0", fig["throughput"])
		}
		if fig["circuit"] != "CLOSED" || fig["throttles"] != "0" || fig["deadLetters"] != "0" || fig["reason"] == "" {
			t.Errorf("echo shows circuit %q, throttles %q, dead letters %q, reason %q",
				fig["circuit"], fig["throttles"], fig["deadLetters"], fig["reason"])
		}
		for _, chart := range []string{"backlog", "capacity", "throughput"} {
			if n := p.samples["echo"][chart]; n < 3 {
				t.Errorf("the %s chart holds %d polls after 3s; the page should poll every second", chart, n)
			}
		}
	})

	ids := l.end()
	if len(ids) < 20 {
		t.Fatalf("the load submitted only %d jobs", len(ids))
	}
	buffertest.WaitFor(t, 60*time.Second, "echo to finish every job", func() bool {
		f := fnStateOf(t, g.Base, "echo")
		return f.Status.Backlog == 0 && f.Status.InFlight == 0 && f.Status.Succeeded == int64(len(ids))
	})

	t.Run("settled", func(t *testing.T) {
		// Nothing moves now: the page must show exactly what the API says.
		// A figure could still change on its own (the reason, say), so the
		// API is read before and after, and the page read again if they
		// differ.
		var p page
		var want map[string]fnState
		for try := 0; ; try++ {
			before := map[string]fnState{"echo": fnStateOf(t, g.Base, "echo"), "broken": fnStateOf(t, g.Base, "broken")}
			p = readPage(t, dumpDOM(t, browser, site+"/", 2500*time.Millisecond))
			after := map[string]fnState{"echo": fnStateOf(t, g.Base, "echo"), "broken": fnStateOf(t, g.Base, "broken")}
			if before["echo"] == after["echo"] && before["broken"] == after["broken"] {
				want = after
				break
			}
			if try == 2 {
				t.Fatalf("the API's figures kept changing: %+v, then %+v", before, after)
			}
		}
		for _, name := range []string{"echo", "broken"} {
			f, st := want[name], want[name].Status
			circuit := strings.ReplaceAll(st.Circuit.State, "_", "-")
			learned := "—"
			if st.LearnedLimit > 0 {
				learned = grouped(int64(st.LearnedLimit))
			}
			learnedRate := "—"
			if st.LearnedRate > 0 {
				learnedRate = shownRate(st.LearnedRate)
			}
			reason := st.Reason
			if reason == "" {
				reason = "—"
			}
			paused := ""
			if st.Circuit.State == "OPEN" {
				until, err := time.Parse(time.RFC3339Nano, st.Circuit.OpenUntil)
				if err != nil {
					t.Fatalf("%s: openUntil %q: %v", name, st.Circuit.OpenUntil, err)
				}
				paused = "Probe at " + until.UTC().Format("15:04:05") + " UTC."
			}
			for field, want := range map[string]string{
				"name":         name,
				"limit":        grouped(int64(f.Concurrency)),
				"window":       grouped(int64(st.Window)),
				"inFlight":     grouped(int64(st.InFlight)),
				"backlog":      grouped(st.Backlog),
				"succeeded":    grouped(st.Succeeded),
				"throughput":   "0.0",
				"throttles":    grouped(st.Throttles),
				"retries":      grouped(st.Retries),
				"coldStarts":   grouped(st.ColdStarts),
				"deadLetters":  grouped(st.DeadLetters),
				"learnedLimit": learned,
				"learnedRate":  learnedRate,
				"circuit":      circuit,
				"reason":       reason,
				"paused":       paused,
				"poolName":     st.Pool.Name,
				"poolLimit":    grouped(int64(st.Pool.Limit)),
				"poolInFlight": grouped(int64(st.Pool.PoolInFlight)),
				"poolGranted":  grouped(int64(st.Pool.Granted)),
				"poolReserved": grouped(int64(st.Pool.Reserved)),
				"poolBorrowed": grouped(int64(st.Pool.Borrowed)),
				"poolLent":     grouped(int64(st.Pool.Lent)),
			} {
				if got, ok := p.figures[name][field]; !ok || got != want {
					t.Errorf("%s %s = %q on the page, want %q as the API says", name, field, got, want)
				}
			}
			if badge := p.elements[name]["circuitBadge"]; badge == nil {
				t.Errorf("%s has no circuit badge", name)
			} else if s, _ := attr(badge, "data-state"); s != st.Circuit.State {
				t.Errorf("%s circuit badge data-state = %q, want %q", name, s, st.Circuit.State)
			}
		}
		for _, name := range []string{"echo", "broken"} {
			if p.elements[name]["pool"] == nil || want[name].Status.Pool.Name != "shared" || want[name].Status.Pool.Limit != 10 {
				t.Errorf("%s: pool %+v, want shown, shared, limit 10", name, want[name].Status.Pool)
			}
		}
		// What the setup made sure of, lest the comparison above pass on zeros.
		if echo := want["echo"].Status; echo.Succeeded != int64(len(ids)) || echo.Window < 2 || echo.ColdStarts == 0 {
			t.Errorf("echo's status %+v; want %d succeeded, a window of 2 or more, cold starts", echo, len(ids))
		}
		if broken := want["broken"].Status; broken.Circuit.State != "OPEN" || broken.Backlog+int64(broken.InFlight) != 1 || broken.DeadLetters != 2 {
			t.Errorf("broken's status %+v; want the circuit open, 1 job held, 2 dead letters", broken)
		}
	})

	t.Run("job lookup", func(t *testing.T) {
		for _, tc := range []struct {
			name, id string
		}{
			{"succeeded", ids[0]},
			{"failed", failedID},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, body := get(t, g.Base+"/v1/jobs/"+tc.id)
				var job struct {
					jobJSON
					Throttles int `json:"throttles"`
					History   []struct {
						Number     int    `json:"number"`
						Outcome    string `json:"outcome"`
						HTTPStatus int    `json:"httpStatus"`
						StartTime  string `json:"startTime"`
						Error      string `json:"error"`
					} `json:"history"`
				}
				if err := json.Unmarshal(body, &job); err != nil {
					t.Fatal(err)
				}
				doc := dumpDOM(t, browser, site+"/#job="+tc.id, 1500*time.Millisecond)
				panel := find(doc, "data-job", tc.id)
				if panel == nil {
					t.Fatalf("the page shows no job %s", tc.id)
				}
				field := func(n *html.Node, name string) (string, *html.Node) {
					e := find(n, "data-field", name)
					if e == nil {
						return "", nil
					}
					return text(e), e
				}
				for name, want := range map[string]string{
					"id": job.ID, "state": job.State, "function": job.Function,
					"attempts": strconv.Itoa(job.Attempts), "throttles": strconv.Itoa(job.Throttles), "error": job.Error,
				} {
					if got, e := field(panel, name); (e == nil && want != "") || got != want {
						t.Errorf("job %s = %q, want %q", name, got, want)
					}
				}
				for name, want := range map[string]string{
					"createTime": job.CreateTime, "startTime": job.StartTime, "finishTime": job.FinishTime,
				} {
					_, e := field(panel, name)
					if e == nil {
						t.Errorf("job %s not shown", name)
						continue
					}
					if got, _ := attr(e, "datetime"); got != want {
						t.Errorf("job %s datetime = %q, want %q", name, got, want)
					}
				}
				var rows []*html.Node
				walk(panel, func(n *html.Node) {
					if _, ok := attr(n, "data-attempt"); ok {
						rows = append(rows, n)
					}
				})
				if len(rows) != len(job.History) || len(rows) == 0 {
					t.Fatalf("history has %d rows on the page, %d in the API", len(rows), len(job.History))
				}
				for i, h := range job.History {
					row := rows[i]
					number, _ := field(row, "number")
					outcome, _ := field(row, "outcome")
					status, _ := field(row, "httpStatus")
					errText, _ := field(row, "error")
					_, started := field(row, "startTime")
					startAttr := ""
					if started != nil {
						startAttr, _ = attr(started, "datetime")
					}
					if number != strconv.Itoa(h.Number) || outcome != h.Outcome || status != strconv.Itoa(h.HTTPStatus) ||
						errText != h.Error || startAttr != h.StartTime {
						t.Errorf("history row %d = #%s %s %s %q at %s; the API says %+v", i, number, outcome, status, errText, startAttr, h)
					}
				}
			})
		}
		t.Run("unknown", func(t *testing.T) {
			const id = "AAAAAAAAAAAAAAAAAAAAAAAAAA"
			doc := dumpDOM(t, browser, site+"/#job="+id, 1500*time.Millisecond)
			e := find(doc, "data-job", id)
			if e == nil || !strings.Contains(text(e), "No job "+id) {
				t.Errorf("an unknown job shows %v; want it said there is no such job", e)
			}
		})
	})
}

func TestDashboardAsksForAPIKey(t *testing.T) {
	browser := chromium(t)
	_, fnURL := servertest.StartFunction(t, fnsim.Config{})
	g := servertest.StartConfig(t, t.TempDir(), &config.Config{
		Functions: []config.FunctionConfig{{Name: "f", URL: fnURL}},
		Tenants:   []config.TenantConfig{{Name: "acme", APIKeys: []string{gateway.HashKey(keyA)}}},
	})
	p := readPage(t, dumpDOM(t, browser, g.Base+"/", 1500*time.Millisecond))
	auth := find(p.doc, "data-field", "auth")
	if auth == nil {
		t.Fatal("the page has no API key form")
	}
	if _, hidden := attr(auth, "hidden"); hidden {
		t.Error("the API answered 401, but the API key form is hidden")
	}
	if find(auth, "id", "api-key") == nil || find(auth, "for", "api-key") == nil {
		t.Error("the API key form has no labelled input")
	}
	if status := find(p.doc, "data-field", "status"); status == nil || text(status) != "API key needed" {
		t.Errorf("status line %v; want it to say an API key is needed", status)
	}
	if len(p.figures) != 0 {
		t.Errorf("the page shows functions without a key: %v", p.figures)
	}
}
