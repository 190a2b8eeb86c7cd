package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer/callbacks"
	"github.com/sluicehq/sluice/buffer/deadletter"
	"github.com/sluicehq/sluice/buffer/groupcommit"
	"github.com/sluicehq/sluice/buffer/idempotency"
	"github.com/sluicehq/sluice/buffer/jobid"
	"github.com/sluicehq/sluice/buffer/jobstate"
	"github.com/sluicehq/sluice/buffer/jsapi"
	"github.com/sluicehq/sluice/buffer/keyed"
	"github.com/sluicehq/sluice/buffer/parked"
	"github.com/sluicehq/sluice/buffer/provision"
	"github.com/sluicehq/sluice/buffer/store"
)

// Names of the JetStream resources Sluice owns.
const (
	// StreamName is the stream that holds queued jobs' payloads.
	StreamName = "SLUICE_JOBS"
	// SubjectPrefix starts every job message's subject; the function's name
	// follows it.
	SubjectPrefix = "sluice.jobs."
	// StateBucket is the key-value bucket holding each job's state.
	StateBucket = jobstate.Bucket
	// IdempotencyBucket maps a function's idempotency keys to job IDs.
	IdempotencyBucket = idempotency.Bucket
)

// Headers on a job message.
const (
	headerJobID       = "Sluice-Job-Id"
	headerCreateTime  = "Sluice-Create-Time"
	headerContentTyp  = "Content-Type"
	headerCallbackURL = callbacks.URLHeader
	headerTenant      = store.TenantHeader
	// headerRedrives is on a redriven job's message: which redrive it is.
	headerRedrives = "Sluice-Redrives"
)

// Sentinel errors.
var (
	// ErrCommitUnknown: a write's group commit was not answered in time, or
	// answered for its last write only: whether it was stored is unknown.
	ErrCommitUnknown = groupcommit.ErrCommitUnknown
	// ErrTooLarge: a write is larger than the NATS server's max_payload,
	// so it was not sent.
	ErrTooLarge = groupcommit.ErrTooLarge
	// ErrNotFound: no job has that ID (or its retention has passed).
	ErrNotFound = jobid.ErrNotFound
	// ErrFull: the job stream is at its configured limit and refuses new
	// jobs rather than evict accepted ones.
	ErrFull = store.ErrFull
	// ErrInvalidID: the string cannot be a job ID.
	ErrInvalidID = jobid.ErrInvalid
	// ErrFinished: the job already reached a terminal state.
	ErrFinished = errors.New("buffer: job already finished")
)

// Config sizes the job stream and the state bucket. The zero value is usable.
type Config struct {
	// Logger receives the queue's warnings. Nil means slog.Default().
	Logger *slog.Logger
	// MaxJobs is the most jobs the stream holds at once, across all
	// functions; past it, submits fail with [ErrFull]. Default 1,000,000.
	MaxJobs int64
	// MaxBytes is the most payload bytes the stream holds at once; past
	// it, submits fail with [ErrFull]. Default 1 GiB.
	MaxBytes int64
	// MaxMessageBytes is the largest job message (payload plus headers)
	// the stream accepts. Default: the server's maximum payload.
	MaxMessageBytes int32
	// Replicas is the stream's and bucket's replica count. Default 1.
	Replicas int
	// MaxConsumers is the most consumers the job stream may have: one per
	// function, one per lane of a fair function, one for parked finishes,
	// one for keyed jobs.
	// It is set on the stream because JetStream's own default (a server's
	// default_max_consumers, 1,000 unless configured) would stop a gateway
	// with a thousand functions; an account limit below it makes the
	// stream's creation fail. Default 10,000.
	MaxConsumers int
	// KeyConcurrency is each function's key_concurrency: at most that
	// many of one concurrency key's jobs in flight at once (see
	// [WithConcurrencyKey]). A function not in it takes no keyed jobs;
	// those it has waiting are released a thousand at a time.
	KeyConcurrency map[string]int
	// JetStreamDomain, if set, is the JetStream domain the streams and
	// buckets live in (a leaf node's hub, say); "" for the one NATS
	// serves locally.
	JetStreamDomain string
	// Retention is how long a job's state is kept after its last change.
	// Default 24h.
	Retention time.Duration
	// IdempotencyWindow is how long an idempotency key keeps returning the
	// job it first created. Default 24h.
	IdempotencyWindow time.Duration
	// DeadLetterRetention is how long a dead letter is kept unless it is
	// redriven or discarded first. Default 7 days.
	DeadLetterRetention time.Duration
	// Stores bounds the other streams and buckets: every one has a size
	// limit, so that JetStream's storage never fills past what was
	// reserved for them when they were made.
	Stores store.Limits
	// Batch tunes group commit of submits and state writes.
	Batch groupcommit.Config
}

// Defaults of Config.
const (
	DefaultMaxJobs             = 1_000_000
	DefaultMaxBytes            = 1 << 30
	DefaultMaxConsumers        = 10_000
	DefaultRetention           = 24 * time.Hour
	DefaultIdempotencyWindow   = 24 * time.Hour
	DefaultDeadLetterRetention = 7 * 24 * time.Hour
)

func (c *Config) setDefaults() {
	if c.MaxJobs == 0 {
		c.MaxJobs = DefaultMaxJobs
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxConsumers == 0 {
		c.MaxConsumers = DefaultMaxConsumers
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = DefaultIdempotencyWindow
	}
	if c.DeadLetterRetention == 0 {
		c.DeadLetterRetention = DefaultDeadLetterRetention
	}
	c.Stores.SetDefaults(c.MaxBytes)
}

// Queue is the durable job buffer. It is safe for concurrent use.
type Queue struct {
	js            jetstream.JetStream
	stream        jetstream.Stream
	dead          jetstream.Stream
	callbacks     jetstream.Stream
	state         jetstream.KeyValue
	stateLog      jetstream.Stream // the state bucket's stream, read directly
	pacingKV      jetstream.KeyValue
	idemKV        jetstream.KeyValue
	idemLog       jetstream.Stream // the idempotency bucket's stream, for its usage
	gauge         *store.Gauge
	deadStore     *deadletter.Store
	callbackStore *callbacks.Store
	batcher       *groupcommit.Batcher // job messages
	stateBat      *groupcommit.Batcher // job state entries
	keyBat        *groupcommit.Batcher // concurrency keys' sets
	keys          *keyed.Gate          // keyed jobs' release
	now           func() time.Time
}

// Open creates or updates the job stream and the state bucket on the
// JetStream behind nc, and returns a Queue over them. On a NATS server
// older than 2.12, which stores no atomic batches, writes are published one
// by one (group commit is off) and a warning is logged.
func Open(ctx context.Context, nc *nats.Conn, cfg Config) (*Queue, error) {
	cfg.setDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if v := nc.ConnectedServerVersion(); !groupcommit.AtomicBatches(v) {
		cfg.Batch.PerMessage = true
		cfg.Logger.Warn("the NATS server stores no atomic batches (it is older than 2.12): writes are published one by one; group commit is off",
			"nats_server", nc.ConnectedServerName(), "nats_version", v)
	}
	if err := cfg.Stores.Check(); err != nil {
		return nil, err
	}
	q, err := open(ctx, nc, cfg)
	return q, cfg.Stores.ExplainReservation(err, cfg.MaxBytes, cfg.Replicas)
}

// open creates or updates, in turn, the job stream, the buckets and the
// dead-letter and callback streams, and returns the queue over them.
func open(ctx context.Context, nc *nats.Conn, cfg Config) (*Queue, error) {
	js, err := jetstream.New(nc)
	if cfg.JetStreamDomain != "" {
		js, err = jetstream.NewWithDomain(nc, cfg.JetStreamDomain)
	}
	if err != nil {
		return nil, fmt.Errorf("buffer: jetstream: %w", err)
	}
	maxMsg := cfg.MaxMessageBytes
	if maxMsg == 0 {
		maxMsg = int32(nc.MaxPayload())
	}
	up := provision.Upgrade{JS: js, Stream: StreamName, Jobs: SubjectPrefix + ">", Replicas: cfg.Replicas, Step: testHookUpgrade}
	if err := up.Begin(ctx); err != nil {
		return nil, err
	}
	q := &Queue{js: js, now: time.Now}
	jobs := provision.JobStream{Name: StreamName, Subjects: []string{SubjectPrefix + ">", parked.Prefix + ">", keyed.Prefix + ">"},
		MaxJobs: cfg.MaxJobs, MaxBytes: cfg.MaxBytes, MaxMsgSize: maxMsg, Replicas: cfg.Replicas, MaxConsumers: cfg.MaxConsumers}
	// The stream of queued jobs, and any upgrade of it that an older
	// Sluice left undone.
	if q.stream, err = provision.Stream(ctx, js, jobs.Config()); err != nil {
		return nil, fmt.Errorf("buffer: create stream %s: %w", StreamName, err)
	}
	if err := up.Finish(ctx, q.stream); err != nil {
		return nil, err
	}
	// State writes are group-committed too.
	if q.state, q.stateLog, err = provision.Bucket(ctx, js, jobstate.BucketConfig(cfg.Retention, cfg.Stores.StateBytes, cfg.Replicas), true); err != nil {
		return nil, err
	}
	if q.pacingKV, err = provision.KeyValue(ctx, js, provision.PacingBucketConfig(PacingBucket, cfg.Replicas)); err != nil {
		return nil, fmt.Errorf("buffer: create bucket %s: %w", PacingBucket, err)
	}
	if q.idemKV, q.idemLog, err = provision.Bucket(ctx, js, idempotency.BucketConfig(cfg.IdempotencyWindow, cfg.Stores.IdempotencyBytes, cfg.Replicas), false); err != nil {
		return nil, err
	}
	// Keys' sets too.
	_, keySets, err := provision.Bucket(ctx, js, keyed.BucketConfig(cfg.Replicas), true)
	if err != nil {
		return nil, err
	}
	dl := provision.StreamLimits{MaxAge: cfg.DeadLetterRetention, MaxMsgs: cfg.MaxJobs, MaxBytes: cfg.Stores.DeadLetterBytes, MaxMsgSize: maxMsg, Replicas: cfg.Replicas}
	if q.dead, err = provision.Stream(ctx, js, deadletter.StreamConfig(dl)); err != nil {
		return nil, fmt.Errorf("buffer: create stream %s: %w", deadletter.Stream, err)
	}
	cl := provision.StreamLimits{MaxAge: cfg.Retention, MaxMsgs: cfg.MaxJobs, MaxBytes: cfg.Stores.CallbackBytes, Replicas: cfg.Replicas}
	if q.callbacks, err = provision.Stream(ctx, js, callbacks.StreamConfig(cl)); err != nil {
		return nil, fmt.Errorf("buffer: create stream %s: %w", callbacks.Stream, err)
	}
	q.gauge = store.NewGauge(cfg.Stores.HighWater, store.Stream{Name: store.Jobs, Stream: q.stream},
		store.Stream{Name: store.State, Stream: q.stateLog}, store.Stream{Name: store.Idempotency, Stream: q.idemLog},
		store.Stream{Name: store.DeadLetters, Stream: q.dead}, store.Stream{Name: store.Callbacks, Stream: q.callbacks})
	q.deadStore = deadletter.New(js, q.dead, q.gauge)
	q.callbackStore = callbacks.New(js, q.callbacks, q.gauge)
	q.batcher, q.stateBat = groupcommit.New(nc, cfg.Batch, cfg.Logger), groupcommit.New(nc, cfg.Batch, cfg.Logger)
	q.keyBat = groupcommit.New(nc, cfg.Batch, cfg.Logger)
	q.keys = q.keyGate(keySets, q.keyBat, cfg.KeyConcurrency)
	// Dead letters stored before their subjects named the tenant.
	if err := q.deadStore.MoveLegacy(ctx); err != nil {
		return nil, err
	}
	return q, nil
}

// testHookUpgrade, if set, is called at each step of an upgrade.
var testHookUpgrade func(step string)

// NewJobID returns a random job ID: see [jobid.New].
func NewJobID() string { return jobid.New() }

// ValidJobID reports whether s has the form of a job ID: see [jobid.Valid].
func ValidJobID(s string) bool { return jobid.Valid(s) }

// Subject is the subject a job's message is published on: one per job, so
// that a queued job can be read by its ID alone.
func Subject(function, id string) string { return SubjectPrefix + function + "." + id }

// functionSubjects matches every job message of function, in every lane.
func functionSubjects(function string) string { return SubjectPrefix + function + ".>" }

// jobSubjects match the message of the job with that (valid) ID, whatever
// its function: in the default lane, and in any other.
func jobSubjects(id string) []string {
	return []string{SubjectPrefix + "*." + id, SubjectPrefix + "*.*." + id, keyed.Prefix + "*.*." + id}
}

// queuedMsg reads the message of the job with that (valid) ID;
// jetstream.ErrMsgNotFound when there is none.
func (q *Queue) queuedMsg(ctx context.Context, id string) (*jetstream.RawStreamMsg, error) {
	var err error
	for _, subj := range jobSubjects(id) {
		var msg *jetstream.RawStreamMsg
		if msg, err = q.stream.GetLastMsgForSubject(ctx, subj); !errors.Is(err, jetstream.ErrMsgNotFound) {
			return msg, err
		}
	}
	return nil, err
}

// Submit stores a job for function and returns it in state QUEUED. It
// returns only after JetStream has acknowledged the job's message, flushed
// to disk. It returns [ErrFull] when the buffer is at its limit.
func (q *Queue) Submit(ctx context.Context, function string, payload []byte, contentType string, opts ...SubmitOption) (*sluicev1.Job, error) {
	return q.publish(ctx, function, NewJobID(), payload, contentType, applySubmitOptions(opts), false)
}

// SubmitOnce is Submit with an idempotency key: the first submit of key
// for function within the idempotency window creates the job; every other
// returns that job (created false), also when they arrive at once or
// through other gateway processes. If the first submit failed, a later one
// creates the job. See [idempotency.Submit].
func (q *Queue) SubmitOnce(ctx context.Context, function, key string, payload []byte, contentType string, opts ...SubmitOption) (job *sluicev1.Job, created bool, err error) {
	o := applySubmitOptions(opts)
	return idempotency.Submit(ctx, q.idemKV, function, key, func(id string) (*sluicev1.Job, error) {
		return q.publish(ctx, function, id, payload, contentType, o, true)
	}, q.Get)
}

// publish stores a new job's message and returns the job, QUEUED.
// With dedupe, the message carries the job ID as its Nats-Msg-Id, so that
// a second publish of the job within the stream's duplicate window stores
// nothing.
func (q *Queue) publish(ctx context.Context, function, id string, payload []byte, contentType string, o submitOptions, dedupe bool) (*sluicev1.Job, error) {
	pressure := q.gauge.Pressure
	if o.key != "" {
		pressure = q.gauge.KeyedPressure
	}
	if err := pressure(ctx); err != nil {
		return nil, err
	}
	job := &sluicev1.Job{
		Id:             id,
		Function:       function,
		State:          sluicev1.Job_QUEUED,
		CreateTime:     timestamppb.New(q.now().UTC()),
		ContentType:    contentType,
		PayloadSize:    int64(len(payload)),
		CallbackUrl:    o.callbackURL,
		Tenant:         o.tenant,
		Priority:       o.priority,
		ConcurrencyKey: o.key,
	}
	// The message is the whole of a queued job: its state entry is first
	// written when dispatch starts it, so a submit costs one fsync'd write.
	// Get reads a queued job from the message.
	// A plain submit has no Nats-Msg-Id: it is published once (the
	// batcher never sends a message again), so there is nothing to
	// deduplicate, and the server's duplicate window would keep every job
	// ID of the last ten minutes in memory. Idempotent submits, which may
	// publish one job twice (see SubmitOnce), carry one.
	msg := jobMsg(job, payload)
	if dedupe {
		msg.Header.Set(jetstream.MsgIDHeader, id)
	}
	// The submit's trace goes on in dispatch, from the message.
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(msg.Header))
	if job.ConcurrencyKey != "" {
		return job, q.publishKeyed(ctx, job, msg)
	}
	if _, err := q.batcher.Publish(ctx, msg); err != nil {
		return nil, store.PublishError(err)
	}
	return job, nil
}

// jobMsg is the message that holds a queued job: its payload, and in
// headers what its state is seeded from.
func jobMsg(job *sluicev1.Job, payload []byte) *nats.Msg {
	msg := nats.NewMsg(msgSubject(job))
	msg.Data = payload
	msg.Header.Set(headerJobID, job.Id)
	msg.Header.Set(headerCreateTime, job.GetCreateTime().AsTime().Format(time.RFC3339Nano))
	if job.ContentType != "" {
		msg.Header.Set(headerContentTyp, job.ContentType)
	}
	if job.CallbackUrl != "" {
		msg.Header.Set(headerCallbackURL, job.CallbackUrl)
	}
	if job.Tenant != "" {
		msg.Header.Set(headerTenant, job.Tenant)
	}
	if p := normal(job.Priority); p != sluicev1.Priority_NORMAL {
		msg.Header.Set(headerPriority, PriorityName(p))
	}
	if job.Redrives > 0 {
		msg.Header.Set(headerRedrives, strconv.Itoa(int(job.Redrives)))
	}
	if job.ConcurrencyKey != "" {
		msg.Header.Set(keyed.Header, job.ConcurrencyKey)
	}
	return msg
}

// msgSubject is the subject of a job's message as it is stored: its
// key's waiting subject for a keyed job (released to its lane's later),
// its lane's otherwise.
func msgSubject(job *sluicev1.Job) string {
	if job.ConcurrencyKey != "" {
		return keyed.Subject(job.Function, keyed.Hash(job.Tenant, job.ConcurrencyKey), job.Id)
	}
	return jobSubject(job.Function, LaneOf(job), job.Id)
}

// subjectFunction is the function a job message's subject names, waiting
// for its key or not.
func subjectFunction(subject string) string {
	rest, ok := strings.CutPrefix(subject, keyed.Prefix)
	if !ok {
		rest = strings.TrimPrefix(subject, SubjectPrefix)
	}
	function, _, _ := strings.Cut(rest, ".")
	return function
}

// SubmitOption sets something optional about a submitted job.
type SubmitOption func(*submitOptions)

type submitOptions struct {
	callbackURL string
	tenant      string
	priority    sluicev1.Priority
	key         string
}

// WithConcurrencyKey gives the job a concurrency key: it waits until fewer
// than its function's key_concurrency (Config.KeyConcurrency) of the
// tenant's jobs with that key are in flight, first in first out within
// the key. The key must pass [keyed.CheckKey]; checking it is the
// caller's business.
func WithConcurrencyKey(key string) SubmitOption {
	return func(o *submitOptions) { o.key = key }
}

// WithPriority gives the job a priority within its tenant's share of a
// fair function (one with lanes); others run their jobs in the order
// they came whatever their priority.
func WithPriority(p sluicev1.Priority) SubmitOption {
	return func(o *submitOptions) {
		if p != sluicev1.Priority_NORMAL {
			o.priority = p
		}
	}
}

// WithTenant makes the job the tenant's.
func WithTenant(tenant string) SubmitOption {
	return func(o *submitOptions) { o.tenant = tenant }
}

// WithCallback has the finished job POSTed to url. The URL is taken as it
// is: checking it is the caller's business.
func WithCallback(url string) SubmitOption {
	return func(o *submitOptions) { o.callbackURL = url }
}

func applySubmitOptions(opts []SubmitOption) submitOptions {
	var o submitOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// errCodeStoreFull: a write refused for its stream being at its limits.
const errCodeStoreFull = store.ErrCodeFull

// Get returns the job's current state. It returns [ErrInvalidID] for a
// string that cannot be a job ID and [ErrNotFound] for an unknown job.
//
// A job has a state entry once dispatch has started it; before that it is
// QUEUED and only its message exists. Dispatch writes the entry before it
// removes the message, so one of the two is always there: if neither is
// seen, the entry is read once more, as the message may have gone between
// the two reads.
func (q *Queue) Get(ctx context.Context, id string) (*sluicev1.Job, error) {
	job, _, err := q.GetRevision(ctx, id)
	return job, err
}

// GetRevision is Get, with the revision of the job's state entry: 0 for a
// job that has none yet. A later change of the job has a higher revision
// (see [Queue.WatchJobs]).
func (q *Queue) GetRevision(ctx context.Context, id string) (*sluicev1.Job, uint64, error) {
	job, rev, err := q.get(ctx, id)
	if !errors.Is(err, ErrNotFound) {
		return job, rev, err
	}
	msg, err := q.queuedMsg(ctx, id)
	switch {
	case err == nil:
		return queuedJob(msg), 0, nil
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, 0, fmt.Errorf("buffer: read job %s: %w", id, err)
	}
	job, rev, err = q.get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		// A dead letter outlives its job's state entry.
		job, err = q.deadStore.Job(ctx, id)
	}
	return job, rev, err
}

// What a cancel says of the job, in its error field.
const (
	cancelledBeforeRun = "cancelled before it ran"
	cancelledRunning   = "cancelled while running: the attempt in flight was not stopped, its outcome is discarded and no other is made"
	// cancelledTakenUp: dispatch had the job, and may have been sending an
	// attempt that its state did not show yet (a first attempt is marked
	// RUNNING only after it has run a while). Dispatch, knowing, makes it
	// cancelledRunning if it had.
	cancelledTakenUp = "cancelled after dispatch took it up: an attempt it had sent, if any, was not stopped, its outcome is discarded and no other is made"
)

// Cancel ends a job that has not finished as CANCELLED and returns it.
// Dispatch finds a cancelled job's message cancelled when it is delivered
// and removes it without invoking anything; for a job already running, the
// attempt in flight is not stopped, but its outcome is discarded and no
// other is made. A job whose message dispatch holds may have an attempt
// on its way that its state does not show yet: the cancel says so, and
// dispatch, once it knows it sent one, records the job as cancelled while
// running. It returns [ErrInvalidID], [ErrNotFound], or [ErrFinished] with
// the job as it ended.
func (q *Queue) Cancel(ctx context.Context, id string) (*sluicev1.Job, error) {
	if !ValidJobID(id) {
		return nil, ErrInvalidID
	}
	// A job without a state entry is only its message: the entry is
	// created from it, as dispatch would.
	var seed func() *sluicev1.Job
	var msg *jetstream.RawStreamMsg
	if job, _, err := q.get(ctx, id); errors.Is(err, ErrNotFound) || err == nil && job.State == sluicev1.Job_QUEUED {
		m, err := q.queuedMsg(ctx, id)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			// Gone between the two reads, or never there: the update
			// reads the entry again and reports ErrNotFound if it is
			// not there either.
		case err != nil:
			return nil, fmt.Errorf("buffer: read job %s: %w", id, err)
		default:
			msg = m
			if job == nil {
				seed = func() *sluicev1.Job { return queuedJob(m) }
			}
		}
	}
	takenUp := msg == nil || q.takenUp(ctx, msg)
	snap, err := q.update(ctx, id, nil, seed, func(j *sluicev1.Job) error {
		if Terminal(j.State) {
			return ErrFinished
		}
		switch {
		case j.State == sluicev1.Job_RUNNING:
			j.Error = cancelledRunning
		case takenUp:
			j.Error = cancelledTakenUp
		default:
			j.Error = cancelledBeforeRun
		}
		j.State = sluicev1.Job_CANCELLED
		j.FinishTime = timestamppb.New(q.now())
		return nil
	})
	if err == nil && snap.job.Error == cancelledBeforeRun && q.takenUp(ctx, msg) {
		// Delivered between the look and the write: dispatch may have
		// read the job as QUEUED and be invoking it.
		snap, err = q.update(ctx, id, snap, nil, func(j *sluicev1.Job) error {
			if j.State != sluicev1.Job_CANCELLED || j.Error != cancelledBeforeRun {
				return ErrFinished // dispatch said what it knew
			}
			j.Error = cancelledTakenUp
			return nil
		})
		err = ignore(err, ErrFinished)
	}
	if snap == nil {
		return nil, err
	}
	if err == nil {
		// Dispatch publishes it too when it finds the job cancelled; this
		// is for a running job, whose delivery may be long gone.
		// A full callback store is not the caller's failure: the job is
		// cancelled, and dispatch, finding it so, parks its callback.
		var full *store.FullError
		if err := q.afterFinish(ctx, snap.job, nil, true); err != nil && !errors.As(err, &full) {
			return nil, err
		}
	}
	return snap.job, err
}

// takenUp reports whether the job's message msg was delivered to dispatch
// and is not acknowledged: dispatch holds it, or handed it back to be
// delivered again, and an attempt of it may be on its way. It asks the
// consumers that may deliver msg: the function's, and its lane's for a
// fair function. Where it cannot tell, it says yes.
func (q *Queue) takenUp(ctx context.Context, msg *jetstream.RawStreamMsg) bool {
	if strings.HasPrefix(msg.Subject, keyed.Prefix) {
		return false // waiting for its key: dispatch has not seen it
	}
	function := subjectFunction(msg.Subject)
	names := []string{ConsumerName(function)}
	if lane := (Lane{Tenant: msg.Header.Get(headerTenant), Priority: headerPriorityOf(msg.Header)}); !lane.Default() {
		names = append(names, laneConsumerName(function, lane))
	}
	for _, name := range names {
		cons, err := q.stream.Consumer(ctx, name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return true
		}
		info := cons.CachedInfo()
		if jsapi.SubjectMatches(info.Config.FilterSubject, msg.Subject) &&
			info.Delivered.Stream >= msg.Sequence && info.AckFloor.Stream < msg.Sequence {
			return true
		}
	}
	return false
}

// ignore is err, or nil if it is target.
func ignore(err, target error) error {
	if errors.Is(err, target) {
		return nil
	}
	return err
}

// queuedJob is the state of a job that only has its message.
func queuedJob(msg *jetstream.RawStreamMsg) *sluicev1.Job {
	return &sluicev1.Job{
		Id:             msg.Header.Get(headerJobID),
		Function:       subjectFunction(msg.Subject),
		ConcurrencyKey: msg.Header.Get(keyed.Header),
		State:          sluicev1.Job_QUEUED,
		CreateTime:     timestamppb.New(timeHeader(msg.Header, headerCreateTime)),
		ContentType:    msg.Header.Get(headerContentTyp),
		PayloadSize:    int64(len(msg.Data)),
		CallbackUrl:    msg.Header.Get(headerCallbackURL),
		Tenant:         msg.Header.Get(headerTenant),
		Priority:       headerPriorityOf(msg.Header),
	}
}

// headerPriorityOf reads a job message's priority; unset for normal.
func headerPriorityOf(h nats.Header) sluicev1.Priority {
	if p, ok := ParsePriority(h.Get(headerPriority)); ok && p != sluicev1.Priority_NORMAL {
		return p
	}
	return sluicev1.Priority_PRIORITY_UNSPECIFIED
}

// get reads the job's state entry: see [jobstate.Get].
func (q *Queue) get(ctx context.Context, id string) (*sluicev1.Job, uint64, error) {
	return jobstate.Get(ctx, q.stateLog, id)
}

// snapshot is a job's state as last read or written, with its revision,
// so that the next change can be written without reading it again.
type snapshot struct {
	job *sluicev1.Job
	rev uint64 // 0: no entry yet
}

// update applies change to the job's stored state with compare-and-set,
// retrying when another writer got in between. It starts from the snapshot
// from if given (saving a read), else reads; seed builds the job when it has
// no entry yet. change may return ErrFinished to leave it alone.
func (q *Queue) update(ctx context.Context, id string, from *snapshot, seed func() *sluicev1.Job, change func(*sluicev1.Job) error) (*snapshot, error) {
	for {
		var (
			job *sluicev1.Job
			rev uint64
			err error
		)
		if from != nil {
			job, rev = proto.CloneOf(from.job), from.rev
			from = nil
		} else {
			job, rev, err = q.get(ctx, id)
		}
		switch {
		case errors.Is(err, ErrNotFound) && seed != nil:
			job = seed()
		case err != nil:
			return nil, err
		}
		if err := change(job); err != nil {
			return &snapshot{job: job, rev: rev}, err
		}
		b, err := proto.Marshal(job)
		if err != nil {
			return nil, fmt.Errorf("buffer: encode job: %w", err)
		}
		newRev, err := jobstate.Put(ctx, q.stateBat, id, b, rev)
		if err == nil {
			return &snapshot{job: job, rev: newRev}, nil
		}
		if !isConflict(err) {
			return nil, fmt.Errorf("buffer: write job %s: %w", id, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// isConflict reports whether a KV write lost a compare-and-set race.
func isConflict(err error) bool { return jsapi.Conflict(err) }

// Terminal reports whether a job in state s is finished for good.
func Terminal(s sluicev1.Job_State) bool {
	switch s {
	case sluicev1.Job_SUCCEEDED, sluicev1.Job_FAILED, sluicev1.Job_CANCELLED, sluicev1.Job_EXPIRED:
		return true
	}
	return false
}

func timeHeader(h nats.Header, key string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, h.Get(key))
	if err != nil {
		return time.Time{}
	}
	return t
}

// BatchStats reports what group commit has done by kind of write: jobs
// (submitted jobs' messages), states (job state entries) and keys
// (concurrency keys' sets of jobs in flight).
func (q *Queue) BatchStats() map[string]groupcommit.Stats {
	return map[string]groupcommit.Stats{"jobs": q.batcher.Stats(), "states": q.stateBat.Stats(), "keys": q.keyBat.Stats()}
}

// Ready reports whether JetStream answers and Sluice's streams are in
// place: nil when the queue can take and hand out jobs.
func (q *Queue) Ready(ctx context.Context) error {
	return provision.Ready(ctx, q.state, q.stream, q.dead, q.callbacks)
}
