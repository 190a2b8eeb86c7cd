// Package client is the client side of the sluice command: submit, get,
// wait, cancel, dlq and functions, over gRPC.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/cmd/sluice/internal/cli"
)

// clientFlags are the flags of the client commands: where the gateway is,
// how to authenticate, and how to print.
type clientFlags struct {
	server  string
	apiKey  string
	tls     bool
	caFile  string
	cert    string
	key     string
	json    bool
	timeout time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", envOr("SLUICE_SERVER", "localhost:9090"), "the gateway's gRPC address (env SLUICE_SERVER)")
	fs.StringVar(&c.apiKey, "api-key", "", "API key, sent as Authorization: Bearer (env SLUICE_API_KEY; prefer it, flags show in ps)")
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS (implied by --tls-ca, --tls-cert)")
	fs.StringVar(&c.caFile, "tls-ca", "", "PEM `file` of CA certificates to trust for the server")
	fs.StringVar(&c.cert, "tls-cert", "", "PEM `file` with a client certificate, for mutual TLS")
	fs.StringVar(&c.key, "tls-key", "", "PEM `file` with the client certificate's key")
	fs.BoolVar(&c.json, "json", false, "print JSON (one object per line) instead of text")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long one call may take")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// dial connects to the gateway as the flags say.
func (c *clientFlags) dial() (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.tls || c.caFile != "" || c.cert != "" {
		cfg, err := cli.ClientTLS(c.caFile, c.cert, c.key, "--tls-ca", "--tls-cert/--tls-key")
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(cfg)
	}
	return grpc.NewClient(c.server, grpc.WithTransportCredentials(creds))
}

// context is ctx with the API key and the per-call timeout.
func (c *clientFlags) context(ctx context.Context) (context.Context, context.CancelFunc) {
	key := c.apiKey
	if key == "" {
		key = os.Getenv("SLUICE_API_KEY")
	}
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}
	return context.WithTimeout(ctx, c.timeout)
}

// printJSON writes m as one line of JSON.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// printJob writes a job for people: its state, attempts and what it
// waits for or how it ended.
func printJob(w io.Writer, job *sluicev1.Job) {
	fmt.Fprintf(w, "%s  %s  %s  attempts %d", job.GetId(), job.GetFunction(), job.GetState(), job.GetAttempts())
	if job.GetThrottles() > 0 {
		fmt.Fprintf(w, "  throttles %d", job.GetThrottles())
	}
	fmt.Fprintln(w)
	if k := job.GetConcurrencyKey(); k != "" {
		fmt.Fprintf(w, "  concurrency key: %s\n", k)
	}
	if r := job.GetWaitingReason(); r != "" {
		fmt.Fprintf(w, "  waiting: %s\n", r)
	}
	if t := job.GetEstimatedStartTime(); t != nil {
		fmt.Fprintf(w, "  estimated start: %s\n", t.AsTime().Local().Format(time.RFC3339))
	}
	if e := job.GetError(); e != "" {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	if r := job.GetResult(); r != nil && job.GetState() == sluicev1.Job_SUCCEEDED {
		fmt.Fprintf(w, "  result: HTTP %d, %d bytes %s\n", r.GetHttpStatus(), len(r.GetBody()), r.GetContentType())
	}
	if job.GetDeadLetterTime() != nil {
		fmt.Fprintf(w, "  in the dead letters since %s\n", job.GetDeadLetterTime().AsTime().Local().Format(time.RFC3339))
	}
}

// Run runs one client command: submit, get, wait, cancel, dlq or
// functions.
func Run(ctx context.Context, cmd string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c clientFlags
	c.register(fs)
	var (
		data, priority string
		wait           time.Duration
		s              submitFlags
	)
	if cmd == "submit" {
		fs.StringVar(&data, "data", "", "the payload: text, @FILE, or - for stdin (empty: no payload)")
		fs.StringVar(&s.idemKey, "idempotency-key", "", "submit at most once per key (with --count, KEY-1, KEY-2, …)")
		fs.StringVar(&s.concurrencyKey, "concurrency-key", "", "the jobs' concurrency key, for a function with key_concurrency")
		fs.StringVar(&priority, "priority", "", "the jobs' priority: high, normal or low")
		fs.DurationVar(&s.wait, "wait", 0, "wait up to this long (at most 60s) for the job to finish")
		fs.IntVar(&s.count, "count", 1, "submit this many jobs with the same payload")
	}
	if cmd == "wait" {
		fs.DurationVar(&wait, "for", 60*time.Second, "how long to wait (at most 60s a call; repeated until then)")
	}
	// Flags may come after the positional arguments, as people type them.
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	jobs := sluicev1.NewJobServiceClient(conn)
	need := func(n int, usage string) error {
		if len(pos) != n {
			return fmt.Errorf("usage: sluice %s %s", cmd, usage)
		}
		return nil
	}
	switch cmd {
	case "submit":
		if err := need(1, "FUNCTION [--data TEXT|@FILE|-] [--wait 10s] [--idempotency-key K] [--concurrency-key K] [--priority P] [--count N]"); err != nil {
			return err
		}
		if s.count < 1 {
			return errors.New("--count: at least 1")
		}
		var ok bool
		if s.priority, ok = buffer.ParsePriority(priority); !ok {
			return fmt.Errorf("--priority %q: give high, normal or low", priority)
		}
		s.function = pos[0]
		if s.payload, s.contentType, err = readPayload(data, stdin); err != nil {
			return err
		}
		return submitJobs(ctx, &c, jobs, s, stdout, stderr)
	case "get", "cancel", "wait":
		if err := need(1, "JOB_ID"); err != nil {
			return err
		}
		var job *sluicev1.Job
		switch cmd {
		case "get":
			job, err = rpc(ctx, &c, func(ctx context.Context) (*sluicev1.Job, error) {
				r, err := jobs.GetJob(ctx, &sluicev1.GetJobRequest{Id: pos[0]})
				return r.GetJob(), err
			})
		case "cancel":
			job, err = rpc(ctx, &c, func(ctx context.Context) (*sluicev1.Job, error) {
				r, err := jobs.CancelJob(ctx, &sluicev1.CancelJobRequest{Id: pos[0]})
				return r.GetJob(), err
			})
		case "wait":
			job, err = waitJob(ctx, &c, jobs, pos[0], wait)
		}
		if err != nil {
			return err
		}
		if c.json {
			return printJSON(stdout, job)
		}
		printJob(stdout, job)
		return nil
	case "dlq":
		if len(pos) < 2 || (pos[0] != "list" && pos[0] != "redrive") {
			return errors.New("usage: sluice dlq list FUNCTION | sluice dlq redrive FUNCTION [JOB_ID ...]")
		}
		return deadLetters(ctx, &c, sluicev1.NewDeadLetterServiceClient(conn), pos[0], pos[1], pos[2:], stdout)
	case "functions":
		return functions(ctx, &c, sluicev1.NewFunctionServiceClient(conn), stdout)
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// rpc makes one call with the flags' key and timeout.
func rpc[T any](ctx context.Context, c *clientFlags, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := c.context(ctx)
	defer cancel()
	return f(ctx)
}

func readPayload(data string, stdin io.Reader) ([]byte, string, error) {
	switch {
	case data == "":
		return nil, "", nil
	case data == "-":
		b, err := io.ReadAll(stdin)
		return b, contentTypeOf(b), err
	case strings.HasPrefix(data, "@"):
		b, err := os.ReadFile(data[1:])
		if err != nil {
			return nil, "", fmt.Errorf("--data: %w", err)
		}
		return b, contentTypeOf(b), nil
	}
	return []byte(data), contentTypeOf([]byte(data)), nil
}

// contentTypeOf is application/json for a payload that is JSON, else
// application/octet-stream.
func contentTypeOf(b []byte) string {
	if json.Valid(b) {
		return "application/json"
	}
	return "application/octet-stream"
}

// submitFlags are what `sluice submit` submits.
type submitFlags struct {
	function, contentType, idemKey, concurrencyKey string
	payload                                        []byte
	priority                                       sluicev1.Priority
	wait                                           time.Duration
	count                                          int
}

func submitJobs(ctx context.Context, c *clientFlags, jobs sluicev1.JobServiceClient, s submitFlags, stdout, stderr io.Writer) error {
	body := &httpbody.HttpBody{ContentType: s.contentType, Data: s.payload}
	count := s.count
	submitOne := func(i int) (*sluicev1.Job, error) {
		key := s.idemKey
		if key != "" && count > 1 {
			key = fmt.Sprintf("%s-%d", s.idemKey, i+1)
		}
		return rpc(ctx, c, func(ctx context.Context) (*sluicev1.Job, error) {
			if s.wait > 0 {
				r, err := jobs.InvokeFunction(ctx, &sluicev1.InvokeFunctionRequest{
					Function: s.function, Payload: body, IdempotencyKey: key, Wait: durationpb.New(s.wait),
					ConcurrencyKey: s.concurrencyKey, Priority: s.priority,
				})
				return r.GetJob(), err
			}
			r, err := jobs.SubmitJob(ctx, &sluicev1.SubmitJobRequest{
				Function: s.function, Payload: body, IdempotencyKey: key, ConcurrencyKey: s.concurrencyKey, Priority: s.priority,
			})
			return r.GetJob(), err
		})
	}
	if count == 1 {
		job, err := submitOne(0)
		if err != nil {
			return err
		}
		if c.json {
			return printJSON(stdout, job)
		}
		printJob(stdout, job)
		return nil
	}
	// Many: a few at once, each ID printed, and progress on stderr when it
	// is a terminal.
	var (
		next, done, failed atomic.Int64
		mu                 sync.Mutex
		firstErr           error
		wg                 sync.WaitGroup
	)
	progress := newProgress(stderr, count)
	for range min(count, 16) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < count && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				job, err := submitOne(i)
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if firstErr == nil {
						firstErr = err
					}
				} else if c.json {
					printJSON(stdout, job) //nolint:errcheck // a closed stdout ends the run anyway
				} else {
					fmt.Fprintln(stdout, job.GetId())
				}
				mu.Unlock()
				progress.set(int(done.Add(1)))
			}
		})
	}
	wg.Wait()
	progress.finish()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d of %d submits failed; the first: %w", n, count, firstErr)
	}
	return nil
}

// waitJob waits, in calls of at most 60s, until the job finishes or d
// has passed, and returns it as it stands then.
func waitJob(ctx context.Context, c *clientFlags, jobs sluicev1.JobServiceClient, id string, d time.Duration) (*sluicev1.Job, error) {
	deadline := time.Now().Add(d)
	for {
		w := min(time.Until(deadline), 60*time.Second)
		cc := *c
		cc.timeout = w + 10*time.Second
		job, err := rpc(ctx, &cc, func(ctx context.Context) (*sluicev1.Job, error) {
			r, err := jobs.GetJob(ctx, &sluicev1.GetJobRequest{Id: id, Wait: durationpb.New(max(w, 0))})
			return r.GetJob(), err
		})
		if err != nil || job.GetFinishTime() != nil || time.Now().After(deadline) {
			return job, err
		}
	}
}

func deadLetters(ctx context.Context, c *clientFlags, dlq sluicev1.DeadLetterServiceClient, verb, function string, ids []string, stdout io.Writer) error {
	if verb == "redrive" {
		// A redrive of all goes a page at a time.
		redriven := 0
		for token := ""; ; {
			r, err := rpc(ctx, c, func(ctx context.Context) (*sluicev1.RedriveDeadLettersResponse, error) {
				return dlq.RedriveDeadLetters(ctx, &sluicev1.RedriveDeadLettersRequest{Function: function, Ids: ids, PageToken: token})
			})
			if err != nil {
				return err
			}
			if c.json {
				if err := printJSON(stdout, r); err != nil {
					return err
				}
			}
			redriven += len(r.GetJobs())
			if token = r.GetNextPageToken(); token != "" {
				continue
			}
			if c.json {
				return nil
			}
			fmt.Fprintf(stdout, "%d redriven", redriven)
			if n := len(r.GetNotFoundIds()); n > 0 {
				fmt.Fprintf(stdout, "; not among the dead letters: %s", strings.Join(r.GetNotFoundIds(), " "))
			}
			fmt.Fprintln(stdout)
			return nil
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if !c.json {
		fmt.Fprintln(tw, "JOB\tSTATE\tATTEMPTS\tDEAD SINCE\tREASON")
	}
	for token := ""; ; {
		page, err := rpc(ctx, c, func(ctx context.Context) (*sluicev1.ListDeadLettersResponse, error) {
			return dlq.ListDeadLetters(ctx, &sluicev1.ListDeadLettersRequest{Function: function, PageSize: 500, PageToken: token})
		})
		if err != nil {
			return err
		}
		for _, dl := range page.GetDeadLetters() {
			if c.json {
				if err := printJSON(stdout, dl); err != nil {
					return err
				}
				continue
			}
			j := dl.GetJob()
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", j.GetId(), j.GetState(), j.GetAttempts(), dl.GetDeadLetterTime().AsTime().Local().Format(time.RFC3339), dl.GetReason())
		}
		if token = page.GetNextPageToken(); token == "" {
			return tw.Flush()
		}
	}
}

func functions(ctx context.Context, c *clientFlags, fns sluicev1.FunctionServiceClient, stdout io.Writer) error {
	list, err := rpc(ctx, c, func(ctx context.Context) (*sluicev1.ListFunctionsResponse, error) {
		return fns.ListFunctions(ctx, &sluicev1.ListFunctionsRequest{})
	})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if !c.json {
		fmt.Fprintln(tw, "FUNCTION\tBACKLOG\tIN FLIGHT\tWINDOW\tLIMIT\tSUCCEEDED\tDEAD\tTHROTTLES\tCOLD\tCIRCUIT\tWHY")
	}
	for _, f := range list.GetFunctions() {
		r, err := rpc(ctx, c, func(ctx context.Context) (*sluicev1.GetFunctionResponse, error) {
			return fns.GetFunction(ctx, &sluicev1.GetFunctionRequest{Name: f.GetName()})
		})
		if err != nil {
			return err
		}
		fn := r.GetFunction()
		if c.json {
			if err := printJSON(stdout, fn); err != nil {
				return err
			}
			continue
		}
		st := fn.GetStatus()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", fn.GetName(), st.GetBacklog(), st.GetInFlight(), st.GetWindow(),
			fn.GetConcurrency(), st.GetSucceeded(), st.GetDeadLetters(), st.GetThrottles(), st.GetColdStarts(), st.GetCircuit().GetState(), st.GetReason())
	}
	return tw.Flush()
}

// progress draws a progress bar on a terminal, and nothing elsewhere.
type progress struct {
	w     io.Writer
	total int
	on    bool
	mu    sync.Mutex
	last  time.Time
}

func newProgress(w io.Writer, total int) *progress {
	f, ok := w.(*os.File)
	on := false
	if ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			on = true
		}
	}
	return &progress{w: w, total: total, on: on}
}

func (p *progress) set(done int) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if done < p.total && time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	const width = 40
	filled := width * done / p.total
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d", strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, p.total)
}

func (p *progress) finish() {
	if p.on {
		fmt.Fprintln(p.w)
	}
}
