package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/deadletter"
	"github.com/sluicehq/sluice/buffer/keyed"
	"github.com/sluicehq/sluice/buffer/shared"
	"github.com/sluicehq/sluice/buffer/store"
)

// Enqueuer stores jobs and reads their state.
type Enqueuer interface {
	// Submit stores a job; it returns buffer.ErrFull when there is no room.
	Submit(ctx context.Context, function string, payload []byte, contentType string, opts ...buffer.SubmitOption) (*sluicev1.Job, error)
	// Get returns a job; buffer.ErrInvalidID or buffer.ErrNotFound when it
	// cannot.
	Get(ctx context.Context, id string) (*sluicev1.Job, error)
	// GetRevision is Get with the revision of the job's state (0 before
	// it has one), to order it against watched changes.
	GetRevision(ctx context.Context, id string) (*sluicev1.Job, uint64, error)
	// SubmitOnce stores a job unless the idempotency key already made one,
	// which it then returns (created false).
	SubmitOnce(ctx context.Context, function, key string, payload []byte, contentType string, opts ...buffer.SubmitOption) (*sluicev1.Job, bool, error)
	// Cancel ends an unfinished job as CANCELLED; buffer.ErrFinished (with
	// the job) for one that already ended.
	Cancel(ctx context.Context, id string) (*sluicev1.Job, error)
}

var _ Enqueuer = (*buffer.Queue)(nil)

// Dispatch reads the dispatch state every gateway process shares.
type Dispatch interface {
	// Pacing returns a function's shared window.
	Pacing(ctx context.Context, function string) (shared.PacingState, error)
	// FunctionLoad returns its backlog and in-flight count;
	// buffer.ErrNotFound before dispatch has started for it.
	FunctionLoad(ctx context.Context, function string) (buffer.Load, error)
	// Pool returns a concurrency pool's shared state.
	Pool(ctx context.Context, pool string) (shared.Pool, error)
}

var _ Dispatch = (*buffer.Queue)(nil)

// DeadLetters reads and works a function's dead letters.
type DeadLetters interface {
	// DeadLetters returns a page of the tenant's, oldest first, from
	// position from (0 for the first).
	DeadLetters(ctx context.Context, function, tenant string, from uint64, limit int, withPayload bool) (deadletter.Page, error)
	// DeadLetterCount is how many the function has, of all tenants.
	DeadLetterCount(ctx context.Context, function string) (int64, error)
	// Redrive queues the tenant's named ones again; it returns those
	// queued and the IDs not found.
	Redrive(ctx context.Context, function, tenant string, ids []string) ([]*sluicev1.Job, []string, error)
	// RedriveAll queues up to limit of the tenant's again, oldest first,
	// of those from position from up to until (both 0 to start).
	RedriveAll(ctx context.Context, function, tenant string, from, until uint64, limit int) (deadletter.RedrivePage, error)
	// DeleteDeadLetter discards one of the tenant's; buffer.ErrNotFound if
	// there is none.
	DeleteDeadLetter(ctx context.Context, function, tenant, id string) error
}

var _ DeadLetters = (*buffer.Queue)(nil)

// CallbackPolicy decides which callback URLs a submit may give.
type CallbackPolicy interface {
	// CheckURL returns an error, fit to show the caller, for a URL that
	// callbacks may not go to.
	CheckURL(url string) error
}

// Function is a configured function as the gateway sees it.
type Function struct {
	// Name is the function's name. Required.
	Name string
	// Concurrency is its concurrency limit, for display.
	Concurrency int
	// Timeout is its invocation timeout, for display.
	Timeout time.Duration
	// MaxPayload is the largest payload a job for it may carry, in bytes.
	// Zero means [DefaultMaxPayload].
	MaxPayload int64
	// JSONPayload refuses payloads that are not JSON (an empty one
	// passes), for targets that take only JSON, such as AWS Lambda.
	JSONPayload bool
	// KeyConcurrency, if positive, lets its jobs carry a concurrency key,
	// at most this many of one key's in flight at once; zero refuses
	// keyed jobs.
	KeyConcurrency int
	// InitialWindow, ScalingPerMinute and Adaptive describe its pacing,
	// for display.
	InitialWindow    int
	ScalingPerMinute int
	Adaptive         bool
	// MaxAge is how long a job may wait and run; a submit that could not
	// start within it, at the rate the function drains, is refused. Zero
	// means no limit.
	MaxAge time.Duration
	// Ingress limits the submits to it.
	Ingress Ingress
	// Pool names the concurrency pool it shares with other functions, and
	// PoolConcurrency is that pool's configured limit; for display.
	Pool            string
	PoolConcurrency int
	// RatePerSecond is its configured cap on invocation starts per
	// second, for display: GetFunction reports it, or the rate learned
	// from throttles when that is lower. Zero means no cap.
	RatePerSecond float64
}

// DefaultMaxPayload is a function's payload limit when none is configured.
const DefaultMaxPayload = 1 << 20

// Config describes the gateway's services.
type Config struct {
	// Jobs stores and reads jobs. Required.
	Jobs Enqueuer
	// Dispatch reads functions' dispatch state. Nil leaves it out of
	// GetFunction.
	Dispatch Dispatch
	// Watcher reports job state changes, for requests that wait for a job
	// to finish. Nil makes every wait answer at once.
	Watcher Watcher
	// DeadLetters serves DeadLetterService. Nil leaves it unimplemented.
	DeadLetters DeadLetters
	// Callbacks checks callback URLs. Nil refuses every submit that asks
	// for a callback: the gateway has no way to deliver it.
	Callbacks CallbackPolicy
	// Functions are the functions jobs may be submitted to.
	Functions []Function
	// Tenants are the clients, by API key. Without any, the gateway runs
	// open: no key is asked for, and every job belongs to tenant "".
	Tenants []Tenant
	// TracerProvider makes the span of each submit; the job's message
	// carries its context to dispatch. Nil means the global one.
	TracerProvider trace.TracerProvider
	// MeterProvider takes the gateway's metrics. Nil means the global one.
	MeterProvider metric.MeterProvider
	// Logger receives the gateway's logs. Nil means slog.Default().
	Logger *slog.Logger
	// PollInterval is what a pending job's result tells callers to wait
	// before asking again (Retry-After). Zero means 1s.
	PollInterval time.Duration
	// Streams bounds the long-lived calls: job watches, and the streams
	// of methods that need no API key.
	Streams StreamLimits
}

// Service implements sluice.v1's JobService, FunctionService and
// DeadLetterService. It is safe for concurrent use.
type Service struct {
	sluicev1.UnimplementedJobServiceServer
	sluicev1.UnimplementedFunctionServiceServer
	sluicev1.UnimplementedDeadLetterServiceServer

	jobs      Enqueuer
	dispatch  Dispatch
	dead      DeadLetters
	callbacks CallbackPolicy
	watcher   Watcher
	waiters   waiters
	watching  atomic.Bool
	functions map[string]Function
	largest   int64 // the largest payload limit of any function
	// tenantsByKey finds a tenant by its API key's digest; empty without
	// tenants.
	tenantsByKey map[[32]byte]*Tenant
	admission    *admission
	tracer       trace.Tracer
	submitted    metric.Int64Counter
	// submitAttrs are the submit counter's attribute sets by function and
	// outcome, built once: a set built per call costs a hash and
	// allocations on every submit.
	submitAttrs map[string]map[string]metric.AddOption
	log         *slog.Logger
	poll        time.Duration
	streams     StreamLimits
	watches     streamCounts // job watches open
	anonymous   streamCounts // streams without an API key open
	// bridgeToken marks the streams REST opens, which name the HTTP
	// connection they came on (see connectionOf).
	bridgeToken string
}

var (
	_ sluicev1.JobServiceServer        = (*Service)(nil)
	_ sluicev1.FunctionServiceServer   = (*Service)(nil)
	_ sluicev1.DeadLetterServiceServer = (*Service)(nil)
)

// NewService checks cfg and returns the service.
func NewService(cfg Config) (*Service, error) {
	if cfg.Jobs == nil {
		return nil, errors.New("gateway: no job store")
	}
	s := &Service{
		jobs:      cfg.Jobs,
		dispatch:  cfg.Dispatch,
		dead:      cfg.DeadLetters,
		callbacks: cfg.Callbacks,
		watcher:   cfg.Watcher,
		functions: make(map[string]Function, len(cfg.Functions)),
		log:       cfg.Logger,
		poll:      cfg.PollInterval,
		streams:   cfg.Streams,
		watches:   streamCounts{what: "job watches"},
		anonymous: streamCounts{what: "streams without an API key"},

		bridgeToken: newBridgeToken(),
	}
	s.streams.setDefaults()
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "gateway")
	if s.poll == 0 {
		s.poll = time.Second
	}
	s.admission = &admission{fnLimiters: map[string]*rate.Limiter{}, tenantLimiters: map[string]*rate.Limiter{}}
	tp, mp := cfg.TracerProvider, cfg.MeterProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	s.tracer = tp.Tracer(instrumentation)
	var err error
	if s.submitted, err = mp.Meter(instrumentation).Int64Counter("sluice.jobs.submitted", metric.WithUnit("{job}"),
		metric.WithDescription("Submits, by function and outcome: accepted, replayed (idempotency key), refused (limits, full buffer), invalid, error.")); err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	s.submitAttrs = make(map[string]map[string]metric.AddOption, len(cfg.Functions))
	for _, f := range cfg.Functions {
		if f.Name == "" {
			return nil, errors.New("gateway: a function has no name")
		}
		if f.MaxPayload == 0 {
			f.MaxPayload = DefaultMaxPayload
		}
		s.functions[f.Name] = f
		s.submitAttrs[f.Name] = submitAttributeSets(f.Name)
		for _, attrs := range s.submitAttrs[f.Name] {
			// Every series from the start, at 0: the first refused
			// submit is then an increase an alert sees.
			s.submitted.Add(context.Background(), 0, attrs)
		}
		s.largest = max(s.largest, f.MaxPayload)
		if l := f.Ingress.limiter(); l != nil {
			s.admission.fnLimiters[f.Name] = l
		}
	}
	s.tenantsByKey = make(map[[32]byte]*Tenant)
	for i := range cfg.Tenants {
		t := &cfg.Tenants[i]
		if t.Name == "" || len(t.KeyHashes) == 0 {
			return nil, fmt.Errorf("gateway: tenant %q needs a name and an API key", t.Name)
		}
		for _, fn := range t.Functions {
			if _, ok := s.functions[fn]; !ok {
				return nil, fmt.Errorf("gateway: tenant %q may use function %q, which is not configured", t.Name, fn)
			}
		}
		for _, h := range t.KeyHashes {
			if other, dup := s.tenantsByKey[h]; dup {
				return nil, fmt.Errorf("gateway: tenants %q and %q share an API key", other.Name, t.Name)
			}
			s.tenantsByKey[h] = t
		}
		if l := t.Ingress.limiter(); l != nil {
			s.admission.tenantLimiters[t.Name] = l
		}
	}
	return s, nil
}

// MaxPayload is the payload limit of the named function, or the largest
// of any function's when the name is not configured.
func (s *Service) MaxPayload(function string) int64 {
	if f, ok := s.functions[function]; ok {
		return f.MaxPayload
	}
	return max(s.largest, DefaultMaxPayload)
}

// SubmitJob stores a job and returns it QUEUED.
func (s *Service) SubmitJob(ctx context.Context, req *sluicev1.SubmitJobRequest) (*sluicev1.SubmitJobResponse, error) {
	job, replayed, err := s.submit(ctx, submission{
		function: req.GetFunction(), payload: req.GetPayload(), idempotencyKey: req.GetIdempotencyKey(),
		callbackURL: req.GetCallbackUrl(), priority: req.GetPriority(), concurrencyKey: req.GetConcurrencyKey(),
	})
	if err != nil {
		return nil, err
	}
	return &sluicev1.SubmitJobResponse{Job: job, Replayed: replayed}, nil
}

// DefaultInvokeWait is how long InvokeFunction waits when not told.
const DefaultInvokeWait = 10 * time.Second

// InvokeFunction submits a job and waits for it to finish, for callers that
// want an answer now when there is capacity and a job handle when not.
func (s *Service) InvokeFunction(ctx context.Context, req *sluicev1.InvokeFunctionRequest) (*sluicev1.InvokeFunctionResponse, error) {
	job, _, err := s.submit(ctx, submission{
		function: req.GetFunction(), payload: req.GetPayload(), idempotencyKey: req.GetIdempotencyKey(),
		callbackURL: req.GetCallbackUrl(), priority: req.GetPriority(), concurrencyKey: req.GetConcurrencyKey(),
	})
	if err != nil {
		return nil, err
	}
	wait := DefaultInvokeWait
	if req.GetWait() != nil {
		wait = req.GetWait().AsDuration()
	}
	if job, err = s.waitFinished(ctx, job.Id, wait); err != nil {
		return nil, err
	}
	switch r := job.GetResult(); {
	case r != nil && buffer.Terminal(job.State):
		return &sluicev1.InvokeFunctionResponse{Job: job, Body: newHTTPBody(r.GetContentType(), r.GetBody())}, nil
	case buffer.Terminal(job.State):
		return nil, s.notSucceeded(job)
	}
	// Pending: REST callers get the job in the body, as from a submit.
	b, err := JobJSON(job)
	if err != nil {
		return nil, s.internal(ctx, "encode job", err)
	}
	return &sluicev1.InvokeFunctionResponse{
		Job:               job,
		Body:              newHTTPBody("application/json", b),
		RetryAfterSeconds: s.pollSeconds(),
	}, nil
}

// submission is what a submit asks for, as SubmitJob and InvokeFunction
// carry it.
type submission struct {
	function                                    string
	payload                                     *httpbody.HttpBody
	idempotencyKey, callbackURL, concurrencyKey string
	priority                                    sluicev1.Priority
}

// submit stores a job, once per idempotency key when one is given (in the
// request, or for REST callers the Idempotency-Key header), with its
// callback URL if one is given (likewise, or Sluice-Callback-Url), its
// priority (likewise, or Sluice-Priority) and its concurrency key
// (likewise, or Sluice-Concurrency-Key).
func (s *Service) submit(ctx context.Context, req submission) (job *sluicev1.Job, replayed bool, err error) {
	function := req.function
	ctx, span := s.tracer.Start(ctx, "submit "+function, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("sluice.function", function)))
	defer func() { s.endSubmit(ctx, span, function, job, replayed, err) }()
	f, err := s.functionFor(ctx, function)
	if err != nil {
		return nil, false, err
	}
	if err := checkPayload(f, req.payload); err != nil {
		return nil, false, err
	}
	key, err := idempotencyKey(ctx, req.idempotencyKey)
	if err != nil {
		return nil, false, err
	}
	tenant := tenantName(ctx)
	opts, err := s.submitOptions(ctx, tenant, req.callbackURL, req.priority)
	if err != nil {
		return nil, false, err
	}
	if opts, err = withConcurrencyKey(ctx, f, req.concurrencyKey, opts); err != nil {
		return nil, false, err
	}
	payload := req.payload
	start, slot, err := s.admit(ctx, f)
	if err != nil {
		return nil, false, err
	}
	if slot != nil {
		// The job's place in its tenant's max_queued, taken before it is
		// stored: kept for a new job, given back otherwise.
		defer func() {
			if err == nil && !replayed {
				s.admission.tenantQueued.accepted(*slot, job.Id)
			} else {
				s.admission.tenantQueued.cancel(*slot)
			}
		}()
	}
	job, replayed, err = s.store(ctx, f, tenant, key, payload, opts)
	if err != nil {
		return nil, false, err
	}
	if !replayed && !start.IsZero() {
		job.EstimatedStartTime = timestamppb.New(start)
	}
	return job, replayed, nil
}

// endSubmit ends a submit's span, with its outcome and job, and counts
// the submit by function and outcome.
func (s *Service) endSubmit(ctx context.Context, span trace.Span, function string, job *sluicev1.Job, replayed bool, err error) {
	outcome := submitOutcome(err, replayed)
	if span.IsRecording() {
		span.SetAttributes(attribute.String("sluice.outcome", outcome))
		if job != nil {
			span.SetAttributes(attribute.String("sluice.job.id", job.Id))
		}
		if err != nil {
			span.SetStatus(otelcodes.Error, status.Convert(err).Message())
		}
	}
	span.End()
	if attrs, known := s.submitAttrs[function]; known { // no attribute values from unknown names
		s.submitted.Add(ctx, 1, attrs[outcome])
	}
}

// checkPayload refuses a payload function f does not take: too large, with
// too long a content type, or not JSON when f takes only JSON.
func checkPayload(f Function, payload *httpbody.HttpBody) error {
	if size := int64(len(payload.GetData())); size > f.MaxPayload {
		return withDetails(codes.InvalidArgument,
			fmt.Sprintf("payload is %d bytes; function %q accepts at most %d", size, f.Name, f.MaxPayload),
			&errdetails.ErrorInfo{Domain: errorDomain, Reason: ReasonPayloadTooLarge})
	}
	if ct := payload.GetContentType(); len(ct) > buffer.MaxContentTypeBytes {
		return status.Errorf(codes.InvalidArgument, "content type is %d bytes; at most %d are accepted", len(ct), buffer.MaxContentTypeBytes)
	}
	if data := payload.GetData(); f.JSONPayload && len(data) > 0 && !json.Valid(data) {
		return withDetails(codes.InvalidArgument,
			fmt.Sprintf("function %q takes only JSON payloads, and this one is not valid JSON", f.Name),
			&errdetails.ErrorInfo{Domain: errorDomain, Reason: ReasonPayloadNotJSON})
	}
	return nil
}

// submitOptions are the buffer's options for a job of tenant: its
// priority (the request's, or else the Sluice-Priority header's) and its
// callback URL (likewise, or Sluice-Callback-Url), checked.
func (s *Service) submitOptions(ctx context.Context, tenant, callbackURL string, priority sluicev1.Priority) ([]buffer.SubmitOption, error) {
	opts := []buffer.SubmitOption{buffer.WithTenant(tenant)}
	if _, known := sluicev1.Priority_name[int32(priority)]; !known {
		return nil, status.Errorf(codes.InvalidArgument, "priority %d is none of HIGH, NORMAL or LOW", priority)
	}
	if priority == sluicev1.Priority_PRIORITY_UNSPECIFIED {
		p, ok := buffer.ParsePriority(fromMetadata(ctx, "", MetadataPriority))
		if !ok {
			return nil, status.Error(codes.InvalidArgument, "Sluice-Priority must be high, normal or low")
		}
		priority = p
	}
	opts = append(opts, buffer.WithPriority(priority))
	if callbackURL = fromMetadata(ctx, callbackURL, MetadataCallbackURL); callbackURL != "" {
		if s.callbacks == nil {
			return nil, status.Error(codes.InvalidArgument, "this gateway delivers no callbacks: it has no callback signing secret configured")
		}
		if err := s.callbacks.CheckURL(callbackURL); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "callback URL refused: %v", err)
		}
		opts = append(opts, buffer.WithCallback(callbackURL))
	}
	return opts, nil
}

// store stores the job in the buffer, once per idempotency key when key
// is not empty, and turns the buffer's errors into the API's: replayed
// says the key's job was stored before.
func (s *Service) store(ctx context.Context, f Function, tenant, key string, payload *httpbody.HttpBody, opts []buffer.SubmitOption) (job *sluicev1.Job, replayed bool, err error) {
	if key == "" {
		job, err = s.jobs.Submit(ctx, f.Name, payload.GetData(), payload.GetContentType(), opts...)
	} else {
		// Keys are the tenant's own: another tenant's same key is another
		// job.
		var created bool
		job, created, err = s.jobs.SubmitOnce(ctx, f.Name, tenant+"\x00"+key, payload.GetData(), payload.GetContentType(), opts...)
		replayed = !created
	}
	switch {
	case errors.Is(err, buffer.ErrFull):
		msg := "the job buffer is full; retry later"
		if errors.Is(err, store.ErrHighWater) {
			msg = "the job stores are full; retry later"
		}
		retry := s.admission.retryAfterFor(f.Name, 1, time.Now())
		return nil, false, withDetails(codes.Unavailable, msg,
			&errdetails.RetryInfo{RetryDelay: durationpb.New(min(max(retry, minRetryAfter), maxRetryAfter))})
	case err != nil && ctx.Err() == nil && buffer.Unavailable(err):
		// A leader election or a lost connection: say so, and when to try
		// again. The job may or may not have been stored; a retry with the
		// same idempotency key gives the same job either way.
		s.log.WarnContext(ctx, "submit refused: JetStream unavailable", "err", err)
		return nil, false, unavailable()
	case err != nil:
		return nil, false, s.internal(ctx, "submit job", err)
	}
	if job.Tenant != tenant {
		// An idempotency key cannot reach another tenant's job (it is part
		// of the key), so this is not expected; answer as for a new key.
		return nil, false, s.internal(ctx, "submit job", fmt.Errorf("idempotent submit returned a job of tenant %q", job.Tenant))
	}
	return job, replayed, nil
}

// instrumentation is the name the gateway's tracer and meter go by.
const instrumentation = "github.com/sluicehq/sluice/gateway"

// submitOutcomes are the values submitOutcome returns.
var submitOutcomes = []string{"accepted", "replayed", "refused", "invalid", "error"}

// submitAttributeSets builds the submit counter's attributes for function,
// one set per outcome.
func submitAttributeSets(function string) map[string]metric.AddOption {
	sets := make(map[string]metric.AddOption, len(submitOutcomes))
	for _, o := range submitOutcomes {
		sets[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("sluice.function", function), attribute.String("sluice.outcome", o)))
	}
	return sets
}

// submitOutcome names how a submit ended, for its span and metric.
func submitOutcome(err error, replayed bool) string {
	switch status.Code(err) {
	case codes.OK:
		if replayed {
			return "replayed"
		}
		return "accepted"
	case codes.ResourceExhausted, codes.Unavailable:
		return "refused"
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition:
		return "invalid"
	}
	return "error"
}

// Metadata keys that carry REST callers' headers.
const (
	// MetadataIdempotencyKey carries the Idempotency-Key header.
	MetadataIdempotencyKey = "idempotency-key"
	// MetadataCallbackURL carries the Sluice-Callback-Url header.
	MetadataCallbackURL = "sluice-callback-url"
	// MetadataPriority carries the Sluice-Priority header.
	MetadataPriority = "sluice-priority"
	// MetadataConcurrencyKey carries the Sluice-Concurrency-Key header.
	MetadataConcurrencyKey = "sluice-concurrency-key"
)

// fromMetadata is value, or when it is empty the request metadata's first
// value under key.
func fromMetadata(ctx context.Context, value, key string) string {
	if value != "" {
		return value
	}
	// Not FromIncomingContext: that copies all the metadata on each call.
	if v := metadata.ValueFromIncomingContext(ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// withConcurrencyKey adds the request's concurrency key to opts: key, or
// for REST callers the Sluice-Concurrency-Key header. A function without
// key_concurrency refuses one, rather than run the job as if it had none.
func withConcurrencyKey(ctx context.Context, f Function, key string, opts []buffer.SubmitOption) ([]buffer.SubmitOption, error) {
	if key = fromMetadata(ctx, key, MetadataConcurrencyKey); key == "" {
		return opts, nil
	}
	if f.KeyConcurrency == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "function %q takes no concurrency key: it has no key_concurrency", f.Name)
	}
	if err := keyed.CheckKey(key); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return append(opts, buffer.WithConcurrencyKey(key)), nil
}

// idempotencyKey is the request's idempotency key: key, or for REST
// callers the Idempotency-Key header; "" when there is none.
func idempotencyKey(ctx context.Context, key string) (string, error) {
	key = fromMetadata(ctx, key, MetadataIdempotencyKey)
	if len(key) > 255 || strings.IndexFunc(key, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return "", status.Error(codes.InvalidArgument, "idempotency key must be at most 255 printable characters")
	}
	return key, nil
}

// GetJob returns a job's state, once it finished if asked to wait.
func (s *Service) GetJob(ctx context.Context, req *sluicev1.GetJobRequest) (*sluicev1.GetJobResponse, error) {
	job, err := s.waitFinished(ctx, req.GetId(), req.GetWait().AsDuration())
	if err != nil {
		return nil, err
	}
	s.explainWait(ctx, job)
	return &sluicev1.GetJobResponse{Job: job}, nil
}

// GetJobResult returns the result of a job that succeeded, says how long to
// wait for one that is pending, and fails with FAILED_PRECONDITION for one
// that ended without success.
func (s *Service) GetJobResult(ctx context.Context, req *sluicev1.GetJobResultRequest) (*sluicev1.GetJobResultResponse, error) {
	job, err := s.getJob(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	switch {
	case job.State == sluicev1.Job_SUCCEEDED:
		r := job.GetResult()
		return &sluicev1.GetJobResultResponse{
			Job:  job,
			Body: newHTTPBody(r.GetContentType(), r.GetBody()),
		}, nil
	case buffer.Terminal(job.State):
		return nil, s.notSucceeded(job)
	default:
		return &sluicev1.GetJobResultResponse{Job: job, RetryAfterSeconds: s.pollSeconds()}, nil
	}
}

// pollSeconds is the Retry-After for a pending job, in whole seconds.
func (s *Service) pollSeconds() int32 { return int32((s.poll + time.Second - 1) / time.Second) }

// CancelJob ends an unfinished job as CANCELLED.
func (s *Service) CancelJob(ctx context.Context, req *sluicev1.CancelJobRequest) (*sluicev1.CancelJobResponse, error) {
	if _, err := s.getJob(ctx, req.GetId()); err != nil {
		return nil, err // not found, or another tenant's
	}
	job, err := s.jobs.Cancel(ctx, req.GetId())
	switch {
	case errors.Is(err, buffer.ErrFinished):
		return nil, withDetails(codes.FailedPrecondition,
			fmt.Sprintf("job %s already ended %s; only an unfinished job can be cancelled", req.GetId(), job.GetState()),
			&errdetails.ErrorInfo{Domain: errorDomain, Reason: ReasonJobFinished})
	case err != nil:
		return nil, s.jobError(ctx, req.GetId(), err)
	}
	return &sluicev1.CancelJobResponse{Job: job}, nil
}

// ListFunctions returns every configured function, sorted by name.
func (s *Service) ListFunctions(ctx context.Context, _ *sluicev1.ListFunctionsRequest) (*sluicev1.ListFunctionsResponse, error) {
	out := make([]*sluicev1.Function, 0, len(s.functions))
	for _, f := range s.functions {
		if mayUse(ctx, f.Name) {
			out = append(out, describe(f))
		}
	}
	slices.SortFunc(out, func(a, b *sluicev1.Function) int { return strings.Compare(a.Name, b.Name) })
	return &sluicev1.ListFunctionsResponse{Functions: out}, nil
}

// GetFunction returns one configured function with its live dispatch
// state: window, in flight, backlog and why the window is where it is.
func (s *Service) GetFunction(ctx context.Context, req *sluicev1.GetFunctionRequest) (*sluicev1.GetFunctionResponse, error) {
	f, err := s.functionFor(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	out := describe(f)
	if s.dispatch != nil {
		if out.Status, err = s.status(ctx, f); err != nil {
			return nil, s.internal(ctx, "read function status", err)
		}
	}
	return &sluicev1.GetFunctionResponse{Function: out}, nil
}

func (s *Service) status(ctx context.Context, f Function) (*sluicev1.FunctionStatus, error) {
	p, err := s.dispatch.Pacing(ctx, f.Name)
	if err != nil {
		return nil, err
	}
	load, err := s.dispatch.FunctionLoad(ctx, f.Name)
	if err != nil && !errors.Is(err, buffer.ErrNotFound) {
		return nil, err
	}
	st := &sluicev1.FunctionStatus{
		Window:               int32(p.Window),
		InFlight:             int32(load.InFlight),
		Backlog:              int64(load.Backlog),
		Reason:               p.Reason,
		LearnedLimit:         int32(p.Ceiling),
		ColdStarts:           p.ColdStarts,
		WarmStarts:           p.WarmStarts,
		Throttles:            p.Counts.Throttles,
		LearnedRatePerSecond: p.LearnedRate,
		RatePerSecond:        p.StartRate(f.RatePerSecond),
	}
	if tenantOf(ctx) == nil {
		// Counts of every tenant's jobs: a tenant sees none of them. The
		// window, backlog and throttles, which decide when its own jobs
		// run, it does see.
		st.Succeeded, st.DeadLettered, st.Retries = p.Counts.Succeeded, p.Counts.DeadLettered, p.Counts.Retries
	}
	if st.Window == 0 {
		st.Window = int32(load.MaxInFlight)
	}
	if p.PausedUntil.After(time.Now()) {
		st.PausedUntil = timestamppb.New(p.PausedUntil)
	}
	if st.Reason == "" {
		st.Reason = "not dispatching yet"
	}
	st.Circuit = describeCircuit(p.Circuit)
	switch p.Circuit.State {
	case shared.CircuitOpen:
		st.Reason = "paused: circuit open (" + p.Circuit.Reason + ")"
	case shared.CircuitHalfOpen:
		st.Reason = "paused: circuit half-open, one probe job let through"
	}
	if f.Pool != "" {
		pool, err := s.dispatch.Pool(ctx, f.Pool)
		if err != nil {
			return nil, err
		}
		st.Pool = describePool(ctx, f, pool)
	}
	if s.dead != nil && tenantOf(ctx) == nil { // a count of all tenants' dead letters
		if st.DeadLetters, err = s.dead.DeadLetterCount(ctx, f.Name); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// describePool is f's share of its pool and the pool's state: its total
// in flight, and the members the request's tenant may use.
func describePool(ctx context.Context, f Function, p shared.Pool) *sluicev1.PoolShare {
	me := p.Members[f.Name]
	out := &sluicev1.PoolShare{
		Name: f.Pool, Limit: int32(p.Limit), Concurrency: int32(f.PoolConcurrency),
		Reserved: int32(me.Reserved), Granted: int32(me.Granted), Cap: int32(me.Cap),
		Borrowed: int32(me.Borrowed()), Lent: int32(me.Lent()),
	}
	if out.Limit == 0 {
		out.Limit = out.Concurrency // no leader has written it yet
	}
	names := slices.Sorted(maps.Keys(p.Members))
	for _, name := range names {
		m := p.Members[name]
		out.PoolInFlight += int32(m.InFlight)
		if !mayUse(ctx, name) {
			continue // to this tenant, not configured
		}
		out.Members = append(out.Members, &sluicev1.PoolMember{
			Function: name, Reserved: int32(m.Reserved), Granted: int32(m.Granted), InFlight: int32(m.InFlight), Backlog: int64(m.Backlog),
		})
	}
	return out
}

func describeCircuit(c shared.Circuit) *sluicev1.Circuit {
	out := &sluicev1.Circuit{State: sluicev1.Circuit_CLOSED, Reason: c.Reason}
	switch c.State {
	case shared.CircuitOpen:
		out.State = sluicev1.Circuit_OPEN
		out.OpenUntil = timestamppb.New(c.Until)
	case shared.CircuitHalfOpen:
		out.State = sluicev1.Circuit_HALF_OPEN
	}
	if c.Cooldown > 0 {
		out.Cooldown = durationpb.New(c.Cooldown)
	}
	if !c.Changed.IsZero() {
		out.ChangeTime = timestamppb.New(c.Changed)
	}
	return out
}

func describe(f Function) *sluicev1.Function {
	return &sluicev1.Function{
		Name:             f.Name,
		Concurrency:      int32(f.Concurrency),
		Timeout:          durationpb.New(f.Timeout),
		MaxPayloadBytes:  f.MaxPayload,
		InitialWindow:    int32(f.InitialWindow),
		ScalingPerMinute: int32(f.ScalingPerMinute),
		Adaptive:         f.Adaptive,
	}
}

// functionFor is the named function, if the request's tenant may use it: a
// function it may not use is, to it, not configured.
func (s *Service) functionFor(ctx context.Context, name string) (Function, error) {
	if name == "" {
		return Function{}, status.Error(codes.InvalidArgument, "no function named: give the function's name")
	}
	f, ok := s.functions[name]
	if !ok || !mayUse(ctx, name) {
		return Function{}, status.Errorf(codes.NotFound, "function %q is not configured; GET /v1/functions lists the functions", name)
	}
	return f, nil
}

// getJob returns the job, if it is the request's tenant's: another
// tenant's job is, to it, not found.
func (s *Service) getJob(ctx context.Context, id string) (*sluicev1.Job, error) {
	job, err := s.jobs.Get(ctx, id)
	if err == nil && job.GetTenant() != tenantName(ctx) {
		err = buffer.ErrNotFound
	}
	if err != nil {
		return nil, s.jobError(ctx, id, err)
	}
	return job, nil
}

func newHTTPBody(contentType string, data []byte) *httpbody.HttpBody {
	return &httpbody.HttpBody{ContentType: contentType, Data: data}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
