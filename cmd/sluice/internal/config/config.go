// Package config is the YAML configuration file of `sluice serve`: its
// types, its decoding (strict: unknown and repeated keys are errors), the
// checks and defaults of every setting, and its conversion into the
// configurations of the libraries (buffer, dispatch, gateway, callback),
// whose defaults it takes rather than repeats.
package config

// Config is the YAML configuration file of `sluice serve`.
type Config struct {
	// Functions are the targets jobs may be submitted to.
	Functions []FunctionConfig `yaml:"functions"`
	// Buffer sizes the durable job buffer.
	Buffer BufferConfig `yaml:"buffer"`
	// Callbacks says how finished jobs are POSTed to callback URLs.
	Callbacks CallbacksConfig `yaml:"callbacks"`
	// Tenants are the clients, by API key. Without any, the gateway runs
	// open: anyone may submit and read any job.
	Tenants []TenantConfig `yaml:"tenants"`
	// Pools are concurrency limits shared by several functions: an
	// account's regional limit, a database's connections.
	Pools []PoolConfig `yaml:"pools"`
	// Streams bounds the long-lived calls each gateway process holds open.
	Streams StreamsConfig `yaml:"streams"`
}

// StreamsConfig bounds the long-lived calls each gateway process holds
// open; past a limit a call is refused with 429 (RESOURCE_EXHAUSTED) and
// Retry-After. A field left out takes gateway's default
// (gateway.StreamLimits).
type StreamsConfig struct {
	// Watches is the most job watches (WatchJob, REST :watch) open at
	// once, of all tenants.
	Watches Count `yaml:"watches"`
	// WatchesPerTenant is the most one tenant may have open.
	WatchesPerTenant Count `yaml:"watches_per_tenant"`
	// WatchesPerConnection is the most one client connection may have
	// open (a gRPC connection, or REST's HTTP connection).
	WatchesPerConnection Count `yaml:"watches_per_connection"`
	// Unauthenticated is the most streams open at once of the methods
	// that need no API key: health Watch and server reflection.
	Unauthenticated Count `yaml:"unauthenticated"`
	// UnauthenticatedPerConnection is the most of those on one gRPC
	// connection.
	UnauthenticatedPerConnection Count `yaml:"unauthenticated_per_connection"`
}

// PoolConfig is a concurrency limit that functions share by naming it.
type PoolConfig struct {
	// Name: lower-case letters, digits, '-' and '_', at most 64. Required.
	Name string `yaml:"name"`
	// Concurrency is the pool's total in flight, across all its functions
	// and all gateway processes. Required; at least the sum of its
	// functions' reserved shares and at least one slot per function.
	Concurrency Count `yaml:"concurrency"`
}

// TenantConfig is one client of the gateway.
type TenantConfig struct {
	// Name: lower-case letters, digits, '-' and '_', at most 64. Required.
	Name string `yaml:"name"`
	// APIKeys are "sha256:<hex>" digests of its keys, as `sluice hash-key`
	// prints them. At least one; several allow rotation.
	APIKeys []string `yaml:"api_keys"`
	// Functions, if given, are the only functions it may use.
	Functions []string `yaml:"functions"`
	// Weight is its share of a fair function's window against the other
	// tenants with work for it. Default 1.
	Weight Count `yaml:"weight"`
	// Ingress limits its submits.
	Ingress *IngressConfig `yaml:"ingress"`
	// CallbackSecrets sign its callbacks, in the form of
	// callbacks.secrets, and rotate the same way. Default: secrets derived
	// from callbacks.secrets for this tenant alone, which `sluice
	// callback-secret --tenant NAME` prints.
	CallbackSecrets []string `yaml:"callback_secrets"`
}

// IngressConfig limits submits, to a function or from a tenant.
type IngressConfig struct {
	// PerSecond is the most submits per second, in each gateway process.
	PerSecond float64 `yaml:"per_second"`
	// Burst is how many may come at once. Default: per_second rounded up.
	Burst Count `yaml:"burst"`
	// MaxQueued is the most jobs waiting or running: for a function,
	// across gateway processes; for a tenant, in each process.
	MaxQueued Count `yaml:"max_queued"`
}

// CallbacksConfig is callback delivery. Without secrets, submits that ask
// for a callback are refused.
type CallbacksConfig struct {
	// Secrets sign callbacks the Standard Webhooks way: "whsec_" and the
	// key in base64. Every one signs; to rotate, add the new secret, let
	// receivers learn it, then remove the old. They sign as they are only
	// for a gateway without tenants; each tenant's callbacks are signed
	// with its callback_secrets or with secrets derived from these.
	Secrets []string `yaml:"secrets"`
	// AllowCIDRs lets callbacks reach addresses that are otherwise refused
	// (loopback, private, link-local, metadata), e.g. 10.1.0.0/16.
	AllowCIDRs []string `yaml:"allow_cidrs"`
	// Timeout cuts off one delivery attempt. Default 10s.
	Timeout Duration `yaml:"timeout"`
	// MaxAttempts is the most delivery attempts per callback. Default 10.
	MaxAttempts Count `yaml:"max_attempts"`
	// InitialBackoff is the wait before the second attempt, doubling
	// after each. Default 1s.
	InitialBackoff Duration `yaml:"initial_backoff"`
	// MaxBackoff caps the wait between attempts. Default 5m.
	MaxBackoff Duration `yaml:"max_backoff"`
	// Concurrency is the most deliveries in flight in each gateway
	// process. Default 32.
	Concurrency Count `yaml:"concurrency"`
	// TenantConcurrency is the most of one tenant's deliveries in flight
	// in each gateway process, so that one tenant's slow or silent
	// receivers hold up only its own callbacks. Default a quarter of
	// concurrency, at least 1.
	TenantConcurrency Count `yaml:"tenant_concurrency"`
	// MaxPending is the most callbacks handed out and unfinished across
	// gateway processes, those waiting for a retry included. Default 64 ×
	// concurrency.
	MaxPending Count `yaml:"max_pending"`
}

// FunctionConfig is one function. Only name and its target (url, or
// target) are required.
type FunctionConfig struct {
	// Name: lower-case letters, digits, '-' and '_', at most 64.
	Name string `yaml:"name"`
	// URL is where jobs are POSTed (http or https): short for
	// target: {http: {url: …}}.
	URL string `yaml:"url"`
	// Target is where jobs go: exactly one of http, lambda or nats. Give it
	// or url, not both. After checking it is always set, url or not.
	Target *TargetConfig `yaml:"target"`
	// Concurrency is the most invocations in flight. Default 10; for a
	// Lambda target without it, the function's reserved concurrency if it
	// has one.
	Concurrency Count `yaml:"concurrency"`
	// Timeout cuts off one invocation. Default 30s, at most 1h.
	Timeout Duration `yaml:"timeout"`
	// MaxPayload is the largest payload accepted. Default 1MiB, at most 4MiB,
	// and at most what the NATS server stores (checked at start-up).
	MaxPayload ByteSize `yaml:"max_payload"`
	// MaxResult is the largest function response kept as a job's result; a
	// larger one fails the job, not retried, with an error saying so.
	// Default 1MiB (dispatch/target.DefaultMaxResponseBytes), or what a job's
	// state can hold on the NATS server if that is less; a larger setting
	// than that is refused at start-up.
	MaxResult ByteSize `yaml:"max_result"`
	// Scaling is how fast the platform adds environments. Without it the
	// window starts at concurrency.
	Scaling *ScalingConfig `yaml:"scaling"`
	// Rate caps invocation starts per second, across every gateway
	// process together.
	Rate *RateConfig `yaml:"rate"`
	// KeepWarm holds environments warm while the function is idle.
	KeepWarm *KeepWarmConfig `yaml:"keep_warm"`
	// IdleReap is how long the platform keeps an idle environment. Default 10m.
	IdleReap Duration `yaml:"idle_reap"`
	// Adaptive learns the platform's real limits from throttles: its
	// concurrency from what was in flight when it refused, and its rate
	// when it refuses with fewer in flight. Default true; false halves the
	// window on a throttle and grows it back one step at a time.
	Adaptive *bool `yaml:"adaptive"`
	// RetryAfter is what a throttle's Retry-After pauses: "job" (the
	// refused job only; the others go on within the learned window) or
	// "function" (every dispatch to the function). Default job.
	RetryAfter string `yaml:"retry_after"`
	// Retry says which failed attempts are tried again, and when.
	Retry RetryConfig `yaml:"retry"`
	// MaxAge ends a job not finished this long after it was accepted as
	// EXPIRED. Default 6h.
	MaxAge Duration `yaml:"max_age"`
	// CircuitBreaker pauses dispatch while most attempts fail.
	CircuitBreaker CircuitBreakerConfig `yaml:"circuit_breaker"`
	// Paused accepts and keeps the function's jobs but dispatches none,
	// for maintenance of the function or a backlog built on purpose.
	Paused bool `yaml:"paused"`
	// Ingress limits the submits to it.
	Ingress *IngressConfig `yaml:"ingress"`
	// Pool names the pool (in pools) whose capacity the function shares,
	// besides its own concurrency.
	Pool string `yaml:"pool"`
	// Reserved is the function's guaranteed share of its pool while it
	// has work; unused, it is lent to the pool's busy functions. Default 0,
	// at most the function's concurrency; needs pool.
	Reserved Count `yaml:"reserved"`
	// Fairness dispatches the function's jobs fairly: tenants with work
	// share its window by weight (tenants[].weight), and within a tenant's
	// part higher priorities (Sluice-Priority) go first. Default false:
	// jobs run in the order they came.
	Fairness bool `yaml:"fairness"`
	// PriorityAging: with fairness, a job that waited this long counts
	// one priority higher, and again after each further period, so a low
	// one never starves. Default 1m.
	PriorityAging Duration `yaml:"priority_aging"`
	// KeyConcurrency, if set, lets the function's jobs carry a
	// concurrency key (Sluice-Concurrency-Key): at most this many of one
	// tenant's key's jobs are in flight at once, first in first out within
	// the key. 1 to 1,000; default none, and a keyed submit is refused.
	KeyConcurrency Count `yaml:"key_concurrency"`

	concurrencyGiven bool // Concurrency was configured, not defaulted
	maxPayloadGiven  bool // MaxPayload was configured, not defaulted
}

// TargetConfig is where a function's jobs go. Exactly one field is set.
type TargetConfig struct {
	// HTTP POSTs each job's payload to a URL.
	HTTP *HTTPTargetConfig `yaml:"http"`
	// Lambda invokes an AWS Lambda function synchronously.
	Lambda *LambdaTargetConfig `yaml:"lambda"`
	// NATS sends each job as a request to a NATS service.
	NATS *NATSTargetConfig `yaml:"nats"`
}

// HTTPTargetConfig is a function behind an HTTP endpoint.
type HTTPTargetConfig struct {
	// URL is where jobs are POSTed (http or https). Required.
	URL string `yaml:"url"`
	// Headers are sent with every invocation (an API key, say). Sluice's
	// own headers and traceparent cannot be set here; Content-Type applies
	// only to payloads submitted without one.
	Headers map[string]string `yaml:"headers"`
}

// LambdaTargetConfig is an AWS Lambda function, invoked with the Invoke
// API (RequestResponse). Credentials come from the AWS SDK's default
// chain: environment, shared config and credentials files, web identity,
// container and instance roles. Lambda takes JSON payloads only, so
// submits of anything else are refused, as are payloads over Lambda's 6 MB.
type LambdaTargetConfig struct {
	// Function is the function's name, ARN or partial ARN. Required.
	Function string `yaml:"function"`
	// Qualifier is a version or alias. Default: $LATEST, or what the ARN
	// names.
	Qualifier string `yaml:"qualifier"`
	// Region is the function's AWS region. Default: the region in the
	// function's ARN, else the AWS configuration's (AWS_REGION, the shared
	// config file).
	Region string `yaml:"region"`
	// Endpoint overrides the Lambda API endpoint, for emulators and tests.
	Endpoint string `yaml:"endpoint"`
}

// NATSTargetConfig is a service answering requests on a NATS subject (a
// nats.go micro service, say), reached through the gateway's own NATS
// connection, so it needs `sluice serve --nats-url`. The request-reply
// timeout is the function's timeout.
type NATSTargetConfig struct {
	// Subject is the service's subject. Required; no wildcards, not under
	// Sluice's own "sluice." or the system's "$" and "_INBOX.".
	Subject string `yaml:"subject"`
}

// CircuitBreakerConfig is a function's circuit breaker. While it is open,
// queued jobs wait without spending attempts; after the cooldown one probe
// job goes through, and its failure doubles the cooldown.
type CircuitBreakerConfig struct {
	// Enabled turns it on or off. Default true.
	Enabled *bool `yaml:"enabled"`
	// FailureRatio opens it when at least this share of recent attempts
	// failed. Default 0.5; more than 0, at most 1.
	FailureRatio float64 `yaml:"failure_ratio"`
	// MinAttempts is how many recent attempts it takes to judge. Default 10.
	MinAttempts Count `yaml:"min_attempts"`
	// Window is how far back recent goes. Default 30s.
	Window Duration `yaml:"window"`
	// Cooldown is how long it first stays open. Default 5s.
	Cooldown Duration `yaml:"cooldown"`
	// MaxCooldown caps the doubling cooldown. Default 5m.
	MaxCooldown Duration `yaml:"max_cooldown"`
}

// RetryConfig is a function's retry policy. Retried: 5xx but 501, 408,
// timeouts and connection failures; other answers fail the job at once.
type RetryConfig struct {
	// MaxAttempts is the most attempts per job, throttles not counted.
	// Default 5.
	MaxAttempts Count `yaml:"max_attempts"`
	// InitialBackoff is the wait before the second attempt. Default 1s.
	InitialBackoff Duration `yaml:"initial_backoff"`
	// MaxBackoff caps the wait between attempts. Default 5m.
	MaxBackoff Duration `yaml:"max_backoff"`
	// Multiplier grows the wait after each attempt. Default 2.
	Multiplier float64 `yaml:"multiplier"`
	// Jitter is "full" (wait a random time up to the backoff; default) or
	// "none".
	Jitter string `yaml:"jitter"`
}

// ScalingConfig is the platform's scaling model.
type ScalingConfig struct {
	// Initial is how many environments are ready at once. Default: the
	// function's concurrency.
	Initial Count `yaml:"initial"`
	// PerMinute is how many more the platform adds per minute. Required.
	PerMinute Count `yaml:"per_minute"`
}

// RateConfig caps invocation starts.
type RateConfig struct {
	// PerSecond is the most starts per second. Required.
	PerSecond float64 `yaml:"per_second"`
	// Burst is how many may start at once. Default 1 (dispatch's).
	Burst Count `yaml:"burst"`
}

// KeepWarmConfig holds environments warm while the function is idle.
type KeepWarmConfig struct {
	// Instances is how many environments to hold warm. Required.
	Instances Count `yaml:"instances"`
	// Every is how often to ping them. Default 4m; keep it under idle_reap.
	Every Duration `yaml:"every"`
}

// BufferConfig sizes the job stream. Past either limit submits are refused
// with 503; accepted jobs are never evicted.
type BufferConfig struct {
	// MaxJobs is the most jobs buffered at once. Default 1,000,000.
	MaxJobs Count `yaml:"max_jobs"`
	// MaxBytes is the most payload bytes buffered at once. Default 1GiB.
	MaxBytes ByteSize `yaml:"max_bytes"`
	// MaxConsumers is the most consumers the job stream may have: one per
	// function, one per lane of a fair function. Default 10,000.
	MaxConsumers Count `yaml:"max_consumers"`
	// Durability is "always" (default): the embedded JetStream flushes to
	// disk before acknowledging each write; or "interval": it flushes every
	// two minutes, faster, but an OS crash or power loss can lose accepted
	// jobs. With --nats-url the NATS server's own sync_interval decides.
	Durability string `yaml:"durability"`
	// JobRetention is how long a job's state is kept after its last change,
	// so after it finished. Default 24h; longer than every max_age.
	JobRetention Duration `yaml:"job_retention"`
	// IdempotencyWindow is how long an Idempotency-Key returns the job it
	// first created. Default 24h; at most job_retention.
	IdempotencyWindow Duration `yaml:"idempotency_window"`
	// DeadLetterRetention is how long a dead letter is kept unless it is
	// redriven or discarded first. Default 168h (7 days).
	DeadLetterRetention Duration `yaml:"dead_letter_retention"`
	// GroupCommit tunes how concurrent writes are stored together.
	GroupCommit GroupCommitConfig `yaml:"group_commit"`
	// StateMaxBytes bounds the job-state store (every started job's state
	// and result, kept for job_retention). Default 1GiB.
	StateMaxBytes ByteSize `yaml:"state_max_bytes"`
	// IdempotencyMaxBytes bounds the idempotency-key store. Default 64MiB.
	IdempotencyMaxBytes ByteSize `yaml:"idempotency_max_bytes"`
	// DeadLetterMaxBytes bounds the dead letters. Default: max_bytes.
	DeadLetterMaxBytes ByteSize `yaml:"dead_letter_max_bytes"`
	// CallbackMaxBytes bounds the callbacks waiting for delivery. Default:
	// max_bytes.
	CallbackMaxBytes ByteSize `yaml:"callback_max_bytes"`
	// HighWater is the fill of the job-state or idempotency store past
	// which submits are refused with 503, keeping the rest for the
	// outcomes of accepted jobs. Default 0.9.
	HighWater float64 `yaml:"high_water"`
}

// GroupCommitConfig tunes group commit: concurrent submits (and job state
// writes) stored as JetStream atomic batches, one fsync per batch.
type GroupCommitConfig struct {
	// MaxBatch is the most writes in one batch; 1 turns group commit off.
	// Default 200, at most 1000 (the server's limit).
	MaxBatch Count `yaml:"max_batch"`
	// InFlight is how many batches may be committing at once. Default 2.
	InFlight Count `yaml:"in_flight"`
	// Linger is how long a batch waits for more writes once a commit slot
	// is free. Default 0: batches grow only while others commit, so a lone
	// submit waits for nothing.
	Linger Duration `yaml:"linger"`
}

// ConcurrencyGiven says whether the function's concurrency was configured
// rather than defaulted (a Lambda target then reads its reserved
// concurrency instead).
func (f *FunctionConfig) ConcurrencyGiven() bool { return f.concurrencyGiven }

// MaxPayloadGiven says whether max_payload was configured: a default that
// does not fit the NATS server gives way to what does, a configured value
// does not.
func (f *FunctionConfig) MaxPayloadGiven() bool { return f.maxPayloadGiven }
