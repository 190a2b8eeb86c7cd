package main

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/callback"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/gateway"
)

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

// gateway is the limits as the gateway takes them; zero takes its default.
func (c StreamsConfig) gateway() gateway.StreamLimits {
	return gateway.StreamLimits{
		Watches: int(c.Watches), WatchesPerTenant: int(c.WatchesPerTenant), WatchesPerConnection: int(c.WatchesPerConnection),
		Unauthenticated: int(c.Unauthenticated), UnauthenticatedPerConnection: int(c.UnauthenticatedPerConnection),
	}
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

// deliverer is callback delivery as dispatch takes it, but for its source,
// sender and logger, which the process makes.
func (cb *CallbacksConfig) deliverer() dispatch.CallbackConfig {
	return dispatch.CallbackConfig{
		Timeout: time.Duration(cb.Timeout),
		Retry: dispatch.RetryPolicy{
			MaxAttempts:    int(cb.MaxAttempts),
			InitialBackoff: time.Duration(cb.InitialBackoff),
			MaxBackoff:     time.Duration(cb.MaxBackoff),
		},
		Concurrency:       int(cb.Concurrency),
		TenantConcurrency: int(cb.TenantConcurrency),
		MaxPending:        int(cb.MaxPending),
	}
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
	// Default 1MiB (dispatch.DefaultMaxResponseBytes), or what a job's
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

	concurrencyGiven bool // Concurrency was configured, not defaulted
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

// queue is the buffer as buffer.Open takes it, but for its logger and
// replicas, which are the process's.
func (b *BufferConfig) queue() buffer.Config {
	return buffer.Config{
		MaxJobs:             int64(b.MaxJobs),
		MaxBytes:            int64(b.MaxBytes),
		Retention:           time.Duration(b.JobRetention),
		IdempotencyWindow:   time.Duration(b.IdempotencyWindow),
		DeadLetterRetention: time.Duration(b.DeadLetterRetention),
		Stores: buffer.StoreLimits{
			StateBytes:       int64(b.StateMaxBytes),
			IdempotencyBytes: int64(b.IdempotencyMaxBytes),
			DeadLetterBytes:  int64(b.DeadLetterMaxBytes),
			CallbackBytes:    int64(b.CallbackMaxBytes),
			HighWater:        b.HighWater,
		},
		Batch: buffer.BatchConfig{
			MaxBatch:    int(b.GroupCommit.MaxBatch),
			MaxInFlight: int(b.GroupCommit.InFlight),
			Linger:      time.Duration(b.GroupCommit.Linger),
		},
	}
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

// Defaults and bounds of the function settings.
const (
	defaultConcurrency = 10
	maxConcurrency     = 10_000
	defaultTimeout     = 30 * time.Second
	maxTimeout         = time.Hour
	defaultIdleReap    = 10 * time.Minute
	defaultMaxAge      = 6 * time.Hour
	// defaultKeepWarmEvery stays under the idle time after which common
	// platforms reap environments (5 to 15 minutes).
	defaultKeepWarmEvery = 4 * time.Minute
	// maxMaxPayload keeps a job message (payload plus headers) well inside
	// the embedded server's 8 MiB message limit.
	maxMaxPayload = 4 << 20
)

var functionName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML (or JSON), rejecting unknown fields, fills in
// defaults and checks every value. Its errors name the offending field.
func ParseConfig(b []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 {
		return nil, errors.New("functions: none configured; the file is empty")
	}
	var cfg Config
	if err := decodeFields(doc.Content[0], &cfg, ""); err != nil {
		return nil, err
	}
	if err := cfg.setDefaultsAndCheck(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// decodeFields decodes a YAML mapping into the struct v points to, field by
// field and recursively, so that an error names the field (a.b, list[i].c)
// rather than only a line. Unknown keys are errors at every level, and so
// is a key given twice in one mapping. Anchors, aliases and merge keys
// (<<: *base) work as YAML defines them; see [mappingPairs].
func decodeFields(n *yaml.Node, v any, path string) error {
	m := resolveAlias(n)
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: line %d: want a mapping of field names to values", cmp.Or(path, "the file"), n.Line)
	}
	pairs, err := mappingPairs(m, path, make(map[*yaml.Node]bool))
	if err != nil {
		return err
	}
	rv := reflect.ValueOf(v).Elem()
	fields := make(map[string]reflect.Value, rv.NumField())
	var known []string
	for i := range rv.NumField() {
		if !rv.Type().Field(i).IsExported() {
			continue
		}
		name, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("yaml"), ",")
		fields[name] = rv.Field(i)
		known = append(known, name)
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		key, val := pairs[i], pairs[i+1]
		field, ok := fields[key.Value]
		if !ok {
			return fmt.Errorf("%s%s: line %d: unknown field; known fields are %s", prefix(path), key.Value, key.Line, strings.Join(known, ", "))
		}
		if err := decodeValue(val, field, prefix(path)+key.Value); err != nil {
			return err
		}
	}
	return nil
}

// mappingPairs returns the keys and values (key, value, key, value, …) of
// mapping n as YAML reads them: its own, and, in place of each merge key
// (<<), those of the mappings it names (one, or a list) that n does not give
// itself, an earlier mapping in the list winning over a later one. A key
// given twice in one mapping is an error naming both lines; visiting holds
// the mappings being merged, so that one merging itself is an error too.
func mappingPairs(n *yaml.Node, path string, visiting map[*yaml.Node]bool) ([]*yaml.Node, error) {
	own := make(map[string]*yaml.Node)
	merges := false
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i]
		if first, dup := own[key.Value]; dup {
			return nil, fmt.Errorf("%s%s: line %d: given twice (first at line %d)", prefix(path), key.Value, key.Line, first.Line)
		}
		own[key.Value] = key
		merges = merges || isMergeKey(key)
	}
	if !merges {
		return n.Content, nil
	}
	visiting[n] = true
	defer delete(visiting, n)
	taken := make(map[string]bool)
	var out []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		if !isMergeKey(key) {
			out = append(out, key, val)
			continue
		}
		sources := []*yaml.Node{val}
		if v := resolveAlias(val); v.Kind == yaml.SequenceNode {
			sources = v.Content
		}
		for _, src := range sources {
			m := resolveAlias(src)
			if m.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("%s<<: line %d: a merge key takes a mapping or a list of mappings", prefix(path), key.Line)
			}
			if visiting[m] {
				return nil, fmt.Errorf("%s<<: line %d: a merge key includes the mapping it is in", prefix(path), key.Line)
			}
			merged, err := mappingPairs(m, path, visiting)
			if err != nil {
				return nil, err
			}
			for j := 0; j+1 < len(merged); j += 2 {
				name := merged[j].Value
				if _, mine := own[name]; mine || taken[name] {
					continue
				}
				taken[name] = true
				out = append(out, merged[j], merged[j+1])
			}
		}
	}
	return out, nil
}

// isMergeKey reports whether key is YAML's merge key: a plain <<.
func isMergeKey(key *yaml.Node) bool {
	return key.Kind == yaml.ScalarNode && key.ShortTag() == "!!merge"
}

// resolveAlias returns the node an alias stands for, and any other node
// itself.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// decodeValue decodes one value: structs and lists of structs field by
// field, everything else (scalars and the types with their own
// UnmarshalYAML) as yaml decodes it.
func decodeValue(n *yaml.Node, field reflect.Value, path string) error {
	switch {
	case reflect.PointerTo(field.Type()).Implements(unmarshalerType):
	case field.Kind() == reflect.Struct:
		return decodeFields(n, field.Addr().Interface(), path)
	case field.Kind() == reflect.Pointer && field.Type().Elem().Kind() == reflect.Struct:
		field.Set(reflect.New(field.Type().Elem()))
		return decodeFields(n, field.Interface(), path)
	case field.Kind() == reflect.Slice && field.Type().Elem().Kind() == reflect.Struct:
		list := resolveAlias(n)
		if list.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s: line %d: want a list", path, n.Line)
		}
		field.Set(reflect.MakeSlice(field.Type(), len(list.Content), len(list.Content)))
		for i, item := range list.Content {
			if err := decodeFields(item, field.Index(i).Addr().Interface(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := n.Decode(field.Addr().Interface()); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func prefix(path string) string {
	if path == "" {
		return ""
	}
	return path + "."
}

func (c *Config) setDefaultsAndCheck() error {
	if len(c.Functions) == 0 {
		return errors.New("functions: none configured; name at least one function with its url")
	}
	seen := make(map[string]int)
	var errs []error
	for i := range c.Functions {
		f := &c.Functions[i]
		field := fmt.Sprintf("functions[%d]", i)
		if f.Name != "" {
			field = fmt.Sprintf("functions[%d] (%s)", i, f.Name)
		}
		bad := func(name, format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s.%s: %s", field, name, fmt.Sprintf(format, args...)))
		}
		switch {
		case f.Name == "":
			bad("name", "missing")
		case !functionName.MatchString(f.Name):
			bad("name", "%q is not allowed: use lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64", f.Name)
		default:
			if j, dup := seen[f.Name]; dup {
				bad("name", "%q is already the name of functions[%d]", f.Name, j)
			}
			seen[f.Name] = i
		}
		f.setDefaultsAndCheck(bad)
	}
	errs = append(errs, c.Buffer.setDefaultsAndCheck(), c.Callbacks.setDefaultsAndCheck(), c.checkTenants(seen), c.checkPools())
	for i, f := range c.Functions {
		// An unfinished job's state must outlive it.
		if f.MaxAge >= c.Buffer.JobRetention {
			errs = append(errs, fmt.Errorf("buffer.job_retention: %s is not longer than functions[%d] (%s).max_age (%s)",
				time.Duration(c.Buffer.JobRetention), i, f.Name, time.Duration(f.MaxAge)))
		}
	}
	return errors.Join(errs...)
}

// badField reports a setting that is wrong: its name within the section
// checked, and why.
type badField func(name, format string, args ...any)

// setDefaultsAndCheck fills in the function's defaults and reports what is
// wrong with it, but for its name, which is checked against the others.
func (f *FunctionConfig) setDefaultsAndCheck(bad badField) {
	f.checkTarget(bad)
	f.concurrencyGiven = f.Concurrency != 0
	if f.Concurrency == 0 {
		f.Concurrency = defaultConcurrency
	}
	if f.Concurrency > maxConcurrency {
		bad("concurrency", "%d is out of range: 1 to %d", f.Concurrency, maxConcurrency)
	}
	if f.Timeout == 0 {
		f.Timeout = Duration(defaultTimeout)
	}
	if time.Duration(f.Timeout) > maxTimeout {
		bad("timeout", "%s is out of range: more than 0 and at most %s", time.Duration(f.Timeout), maxTimeout)
	}
	if f.MaxPayload == 0 {
		f.MaxPayload = gateway.DefaultMaxPayload
	}
	if f.MaxPayload > maxMaxPayload {
		bad("max_payload", "%d bytes is out of range: 1 byte to 4MiB", f.MaxPayload)
	} else if f.Target != nil && f.Target.Lambda != nil && f.MaxPayload > dispatch.LambdaMaxPayload {
		bad("max_payload", "%d bytes is more than a synchronous Lambda invocation takes (%d)", f.MaxPayload, dispatch.LambdaMaxPayload)
	}
	if f.IdleReap == 0 {
		f.IdleReap = Duration(defaultIdleReap)
	}
	if f.MaxAge == 0 {
		f.MaxAge = Duration(defaultMaxAge)
	}
	f.Retry.setDefaultsAndCheck(bad)
	if f.Adaptive == nil {
		adaptive := true
		f.Adaptive = &adaptive
	}
	switch f.RetryAfter {
	case "":
		f.RetryAfter = "job"
	case "job", "function":
	default:
		bad("retry_after", "%q is neither job nor function", f.RetryAfter)
	}
	f.CircuitBreaker.setDefaultsAndCheck(bad)
	f.setPacingDefaultsAndCheck(bad)
}

// setDefaultsAndCheck fills in the retry policy's defaults, which are
// dispatch's, and reports what is wrong with it.
func (r *RetryConfig) setDefaultsAndCheck(bad badField) {
	retry := dispatch.DefaultRetryPolicy()
	if r.MaxAttempts == 0 {
		r.MaxAttempts = Count(retry.MaxAttempts)
	}
	if r.InitialBackoff == 0 {
		r.InitialBackoff = Duration(retry.InitialBackoff)
	}
	if r.MaxBackoff == 0 {
		r.MaxBackoff = Duration(retry.MaxBackoff)
	}
	if r.MaxBackoff < r.InitialBackoff {
		bad("retry.max_backoff", "%s is shorter than initial_backoff (%s)", time.Duration(r.MaxBackoff), time.Duration(r.InitialBackoff))
	}
	if r.Multiplier == 0 {
		r.Multiplier = retry.Multiplier
	}
	if r.Multiplier < 1 || math.IsInf(r.Multiplier, 0) || math.IsNaN(r.Multiplier) {
		bad("retry.multiplier", "%v is not a number of at least 1", r.Multiplier)
	}
	switch r.Jitter {
	case "":
		r.Jitter = "full"
	case "full", "none":
	default:
		bad("retry.jitter", "%q is neither full nor none", r.Jitter)
	}
}

// setDefaultsAndCheck fills in the circuit breaker's defaults, which are
// dispatch's, and reports what is wrong with it.
func (cb *CircuitBreakerConfig) setDefaultsAndCheck(bad badField) {
	circuit := dispatch.DefaultCircuitPolicy()
	if cb.Enabled == nil {
		enabled := true
		cb.Enabled = &enabled
	}
	if cb.FailureRatio == 0 {
		cb.FailureRatio = circuit.FailureRatio
	}
	if cb.FailureRatio < 0 || cb.FailureRatio > 1 || math.IsNaN(cb.FailureRatio) {
		bad("circuit_breaker.failure_ratio", "%v is out of range: more than 0, at most 1", cb.FailureRatio)
	}
	if cb.MinAttempts == 0 {
		cb.MinAttempts = Count(circuit.MinAttempts)
	}
	if cb.Window == 0 {
		cb.Window = Duration(circuit.Window)
	}
	if cb.Cooldown == 0 {
		cb.Cooldown = Duration(circuit.Cooldown)
	}
	if cb.MaxCooldown == 0 {
		cb.MaxCooldown = Duration(circuit.MaxCooldown)
	}
	if cb.MaxCooldown < cb.Cooldown {
		bad("circuit_breaker.max_cooldown", "%s is shorter than cooldown (%s)", time.Duration(cb.MaxCooldown), time.Duration(cb.Cooldown))
	}
}

// setPacingDefaultsAndCheck fills in and checks what paces the function:
// its scaling, ingress, rate and keep-warm settings.
func (f *FunctionConfig) setPacingDefaultsAndCheck(bad badField) {
	if sc := f.Scaling; sc != nil {
		if sc.PerMinute == 0 {
			bad("scaling.per_minute", "missing: how many environments the platform adds per minute")
		}
		if sc.Initial == 0 || sc.Initial > f.Concurrency {
			sc.Initial = f.Concurrency
		}
	}
	if in := f.Ingress; in != nil {
		if err := in.check(); err != nil {
			bad("ingress.per_second", "%v", err)
		}
	}
	if r := f.Rate; r != nil {
		if r.PerSecond <= 0 || math.IsInf(r.PerSecond, 0) || math.IsNaN(r.PerSecond) {
			bad("rate.per_second", "%v is not a positive number", r.PerSecond)
		}
	}
	if kw := f.KeepWarm; kw != nil {
		if kw.Instances == 0 {
			bad("keep_warm.instances", "missing: how many environments to hold warm")
		} else if kw.Instances > f.Concurrency {
			bad("keep_warm.instances", "%d is more than the function's concurrency of %d", kw.Instances, f.Concurrency)
		}
		if kw.Every == 0 {
			kw.Every = Duration(defaultKeepWarmEvery)
		}
		if kw.Every >= f.IdleReap {
			bad("keep_warm.every", "%s is not shorter than idle_reap (%s): the environments would be reaped between pings", time.Duration(kw.Every), time.Duration(f.IdleReap))
		}
	}
}

// setDefaultsAndCheck fills in the buffer's defaults, which are buffer's,
// and reports what is wrong with it.
func (b *BufferConfig) setDefaultsAndCheck() error {
	var errs []error
	switch b.Durability {
	case "":
		b.Durability = "always"
	case "always", "interval":
	default:
		errs = append(errs, fmt.Errorf("buffer.durability: %q is neither always nor interval", b.Durability))
	}
	if b.JobRetention == 0 {
		b.JobRetention = Duration(buffer.DefaultRetention)
	}
	if b.IdempotencyWindow == 0 {
		b.IdempotencyWindow = Duration(buffer.DefaultIdempotencyWindow)
	}
	if b.DeadLetterRetention == 0 {
		b.DeadLetterRetention = Duration(buffer.DefaultDeadLetterRetention)
	}
	if b.IdempotencyWindow > b.JobRetention {
		// A repeat that finds its key but not the job's state would run
		// the job again.
		errs = append(errs, fmt.Errorf("buffer.idempotency_window: %s is longer than buffer.job_retention (%s): a repeat after the job's state expired would run it again",
			time.Duration(b.IdempotencyWindow), time.Duration(b.JobRetention)))
	}
	if b.HighWater < 0 || b.HighWater > 1 {
		errs = append(errs, fmt.Errorf("buffer.high_water: %v is out of range: 0 (the default) to 1", b.HighWater))
	}
	gc := &b.GroupCommit
	if gc.MaxBatch == 0 {
		gc.MaxBatch = buffer.DefaultMaxBatch
	} else if gc.MaxBatch > buffer.MaxBatchLimit {
		errs = append(errs, fmt.Errorf("buffer.group_commit.max_batch: %d is more than the server's limit of %d", gc.MaxBatch, buffer.MaxBatchLimit))
	}
	if gc.InFlight == 0 {
		gc.InFlight = buffer.DefaultMaxInFlight
	} else if gc.InFlight > 64 {
		errs = append(errs, fmt.Errorf("buffer.group_commit.in_flight: %d is more than 64", gc.InFlight))
	}
	if gc.Linger < 0 || time.Duration(gc.Linger) > time.Second {
		errs = append(errs, fmt.Errorf("buffer.group_commit.linger: %s is out of range: 0 to 1s", time.Duration(gc.Linger)))
	}
	return errors.Join(errs...)
}

// Lambda's names for functions and qualifiers (the Invoke API's patterns).
var (
	lambdaFunction  = regexp.MustCompile(`^(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_.]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?$`)
	lambdaQualifier = regexp.MustCompile(`^[a-zA-Z0-9$_-]{1,128}$`)
	awsRegion       = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
)

// reservedSubjects start subjects a NATS target may not use: Sluice's own,
// the system's and the default reply inboxes.
var reservedSubjects = []string{"sluice.", "$", "_INBOX."}

// checkTarget checks the function's target, whichever way it is given,
// and sets Target from url.
func (f *FunctionConfig) checkTarget(bad badField) {
	t := f.Target
	switch {
	case t == nil && f.URL == "":
		bad("url", "missing: give url, or target with one of http, lambda or nats")
		return
	case t == nil:
		if err := checkHTTPURL(f.URL); err != nil {
			bad("url", "%v", err)
		}
		f.Target = &TargetConfig{HTTP: &HTTPTargetConfig{URL: f.URL}}
		return
	case f.URL != "":
		bad("target", "given beside url: give one or the other (url is short for target: {http: {url: …}})")
		return
	}
	var kinds []string
	if t.HTTP != nil {
		kinds = append(kinds, "http")
	}
	if t.Lambda != nil {
		kinds = append(kinds, "lambda")
	}
	if t.NATS != nil {
		kinds = append(kinds, "nats")
	}
	switch {
	case len(kinds) == 0:
		bad("target", "empty: give one of http, lambda or nats")
		return
	case len(kinds) > 1:
		bad("target", "has %s: give exactly one of http, lambda or nats", strings.Join(kinds, " and "))
		return
	}
	switch {
	case t.HTTP != nil:
		if t.HTTP.URL == "" {
			bad("target.http.url", "missing")
		} else if err := checkHTTPURL(t.HTTP.URL); err != nil {
			bad("target.http.url", "%v", err)
		}
		for k, v := range t.HTTP.Headers {
			switch canonical := http.CanonicalHeaderKey(k); {
			case !httpguts.ValidHeaderFieldName(k):
				bad("target.http.headers", "%q is not a valid header name", k)
			case !httpguts.ValidHeaderFieldValue(v):
				bad("target.http.headers", "%s: the value is not a valid header value", k)
			case strings.HasPrefix(canonical, "Sluice-") || canonical == "Traceparent" || canonical == "Tracestate" ||
				canonical == "Content-Length" || canonical == "Host" || canonical == "Transfer-Encoding":
				bad("target.http.headers", "%s is set by Sluice, not by configuration", k)
			}
		}
	case t.Lambda != nil:
		l := t.Lambda
		switch {
		case l.Function == "":
			bad("target.lambda.function", "missing: the function's name or ARN")
		case len(l.Function) > 170 || !lambdaFunction.MatchString(l.Function):
			bad("target.lambda.function", "%q is not a Lambda function name, ARN or partial ARN", l.Function)
		}
		if l.Qualifier != "" && !lambdaQualifier.MatchString(l.Qualifier) {
			bad("target.lambda.qualifier", "%q is not a version or alias name", l.Qualifier)
		}
		if l.Region != "" && !awsRegion.MatchString(l.Region) {
			bad("target.lambda.region", "%q is not an AWS region such as eu-west-1", l.Region)
		}
		if l.Endpoint != "" {
			if err := checkHTTPURL(l.Endpoint); err != nil {
				bad("target.lambda.endpoint", "%v", err)
			}
		}
	case t.NATS != nil:
		subj := t.NATS.Subject
		if subj == "" {
			bad("target.nats.subject", "missing")
			break
		}
		if !validSubject(subj) {
			bad("target.nats.subject", "%q is not a NATS subject without wildcards (tokens of printable characters joined by dots)", subj)
		}
		for _, p := range reservedSubjects {
			if strings.HasPrefix(subj, p) {
				bad("target.nats.subject", "%q is under %q, which is not for functions", subj, p)
			}
		}
	}
}

// checkHTTPURL checks an absolute http or https URL.
func checkHTTPURL(s string) error {
	if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http or https URL", s)
	}
	return nil
}

// validSubject reports whether s is a NATS subject a message can be
// published to: non-empty tokens without whitespace or wildcards.
func validSubject(s string) bool {
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f || unicode.IsSpace(r) }) {
			return false
		}
	}
	return true
}

func (in *IngressConfig) check() error {
	if in.PerSecond < 0 || math.IsInf(in.PerSecond, 0) || math.IsNaN(in.PerSecond) {
		return fmt.Errorf("%v is not a number of at least 0", in.PerSecond)
	}
	if in.PerSecond == 0 && in.Burst > 0 {
		return errors.New("burst is set without per_second")
	}
	return nil
}

// checkTenants checks the tenants against each other and the functions
// (by name, to their index).
func (c *Config) checkTenants(functions map[string]int) error {
	var errs []error
	names := make(map[string]int)
	keys := make(map[string]string)
	for i, t := range c.Tenants {
		field := fmt.Sprintf("tenants[%d]", i)
		if t.Name != "" {
			field = fmt.Sprintf("tenants[%d] (%s)", i, t.Name)
		}
		bad := func(name, format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s.%s: %s", field, name, fmt.Sprintf(format, args...)))
		}
		switch {
		case t.Name == "":
			bad("name", "missing")
		case !functionName.MatchString(t.Name):
			bad("name", "%q is not allowed: use lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64", t.Name)
		default:
			if j, dup := names[t.Name]; dup {
				bad("name", "%q is already the name of tenants[%d]", t.Name, j)
			}
			names[t.Name] = i
		}
		if len(t.APIKeys) == 0 {
			bad("api_keys", "missing: at least one key digest, as `sluice hash-key KEY` prints it")
		}
		for j, k := range t.APIKeys {
			if _, err := gateway.ParseKeyHash(k); err != nil {
				bad(fmt.Sprintf("api_keys[%d]", j), "%v", err)
			} else if other, dup := keys[k]; dup {
				bad(fmt.Sprintf("api_keys[%d]", j), "the same key is already tenant %q's", other)
			} else {
				keys[k] = t.Name
			}
		}
		if t.Functions != nil && len(t.Functions) == 0 {
			bad("functions", "empty: leave it out to allow every function")
		}
		for j, fn := range t.Functions {
			if _, ok := functions[fn]; !ok {
				bad(fmt.Sprintf("functions[%d]", j), "%q is not a configured function", fn)
			}
		}
		if in := t.Ingress; in != nil {
			if err := in.check(); err != nil {
				bad("ingress.per_second", "%v", err)
			}
		}
		if t.CallbackSecrets != nil && len(t.CallbackSecrets) == 0 {
			bad("callback_secrets", "empty: leave it out to sign with secrets derived from callbacks.secrets")
		}
		if len(t.CallbackSecrets) > 0 && len(c.Callbacks.Secrets) == 0 {
			bad("callback_secrets", "given without callbacks.secrets, which turn callbacks on")
		}
		if len(t.CallbackSecrets) > 0 {
			if _, err := callback.NewSigner(t.CallbackSecrets); err != nil {
				bad("callback_secrets", "%v", err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if _, err := callback.NewSigner(c.Callbacks.Secrets); err != nil {
		return nil // no callbacks, or bad secrets, which callbacks.secrets reports
	}
	_, err := c.callbackKeys() // no key shared by two tenants
	return err
}

// callbackKeys returns the secrets that sign each tenant's callbacks.
func (c *Config) callbackKeys() (*callback.Keyring, error) {
	tenants := make(map[string][]string, len(c.Tenants))
	for _, t := range c.Tenants {
		tenants[t.Name] = t.CallbackSecrets
	}
	keys, err := callback.NewKeyring(c.Callbacks.Secrets, tenants)
	if err != nil {
		return nil, fmt.Errorf("callbacks.secrets, tenants[].callback_secrets: %w", err)
	}
	return keys, nil
}

func (cb *CallbacksConfig) setDefaultsAndCheck() error {
	var errs []error
	if _, err := callback.NewGuard(cb.AllowCIDRs); err != nil {
		errs = append(errs, fmt.Errorf("callbacks.allow_cidrs: %w", err))
	}
	if len(cb.Secrets) > 0 {
		if _, err := callback.NewSigner(cb.Secrets); err != nil {
			errs = append(errs, fmt.Errorf("callbacks.secrets: %w", err))
		}
	}
	if cb.Timeout == 0 {
		cb.Timeout = Duration(dispatch.DefaultCallbackTimeout)
	}
	if cb.MaxAttempts == 0 {
		cb.MaxAttempts = dispatch.DefaultCallbackMaxAttempts
	}
	retry := dispatch.DefaultRetryPolicy()
	if cb.InitialBackoff == 0 {
		cb.InitialBackoff = Duration(retry.InitialBackoff)
	}
	if cb.MaxBackoff == 0 {
		cb.MaxBackoff = Duration(retry.MaxBackoff)
	}
	if cb.MaxBackoff < cb.InitialBackoff {
		errs = append(errs, fmt.Errorf("callbacks.max_backoff: %s is shorter than initial_backoff (%s)", time.Duration(cb.MaxBackoff), time.Duration(cb.InitialBackoff)))
	}
	if cb.Concurrency == 0 {
		cb.Concurrency = dispatch.DefaultCallbackConcurrency
	}
	if cb.TenantConcurrency > cb.Concurrency {
		errs = append(errs, fmt.Errorf("callbacks.tenant_concurrency: %d is more than concurrency (%d)", cb.TenantConcurrency, cb.Concurrency))
	}
	return errors.Join(errs...)
}

// Duration is a time.Duration written as "30s", "1m30s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return fmt.Errorf("line %d: %q is not a positive duration such as 500ms, 30s or 2m", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// Count is a whole number of at least 1. YAML that gives a fraction, a
// string, zero or a negative number is an error, never a silent default.
type Count int

// UnmarshalYAML accepts only a positive YAML integer.
func (c *Count) UnmarshalYAML(n *yaml.Node) error {
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil || v < 1 {
		return fmt.Errorf("line %d: %q is not a whole number of at least 1", n.Line, n.Value)
	}
	if v > math.MaxInt32 {
		return fmt.Errorf("line %d: %s is too large", n.Line, n.Value)
	}
	*c = Count(v)
	return nil
}

// ByteSize is a size written as 1048576, "512KiB", "1MiB" or "1GiB" in YAML.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}

// UnmarshalYAML parses a byte count with an optional binary or decimal unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := parseByteSize(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	if v == 0 {
		return fmt.Errorf("line %d: %q: a size must be at least 1 byte", n.Line, s)
	}
	*b = ByteSize(v)
	return nil
}

func parseByteSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size such as 65536, 512KiB or 1MiB", s)
	}
	return v * mult, nil
}

// checkPools checks the pools and the functions that name them.
func (c *Config) checkPools() error {
	var errs []error
	byName := make(map[string]int)
	for i, p := range c.Pools {
		field := fmt.Sprintf("pools[%d]", i)
		if p.Name != "" {
			field = fmt.Sprintf("pools[%d] (%s)", i, p.Name)
		}
		switch {
		case p.Name == "":
			errs = append(errs, fmt.Errorf("%s.name: missing", field))
		case !functionName.MatchString(p.Name):
			errs = append(errs, fmt.Errorf("%s.name: %q is not allowed: use lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64", field, p.Name))
		default:
			if j, dup := byName[p.Name]; dup {
				errs = append(errs, fmt.Errorf("%s.name: %q is already the name of pools[%d]", field, p.Name, j))
			} else {
				byName[p.Name] = i
			}
		}
		if p.Concurrency == 0 {
			errs = append(errs, fmt.Errorf("%s.concurrency: missing: the pool's total in flight", field))
		} else if p.Concurrency > maxConcurrency {
			errs = append(errs, fmt.Errorf("%s.concurrency: %d is out of range: 1 to %d", field, p.Concurrency, maxConcurrency))
		}
	}
	members := make([]int, len(c.Pools))
	reserved := make([]int, len(c.Pools))
	for i, f := range c.Functions {
		field := fmt.Sprintf("functions[%d] (%s)", i, f.Name)
		if f.Pool == "" {
			if f.Reserved > 0 {
				errs = append(errs, fmt.Errorf("%s.reserved: set without pool: a reserved share is a share of a pool", field))
			}
			continue
		}
		j, ok := byName[f.Pool]
		if !ok {
			errs = append(errs, fmt.Errorf("%s.pool: %q is not a configured pool", field, f.Pool))
			continue
		}
		if f.Reserved > f.Concurrency {
			errs = append(errs, fmt.Errorf("%s.reserved: %d is more than the function's concurrency of %d", field, f.Reserved, f.Concurrency))
		}
		members[j]++
		reserved[j] += int(f.Reserved)
	}
	for i, p := range c.Pools {
		if p.Concurrency == 0 {
			continue
		}
		if reserved[i] > int(p.Concurrency) {
			errs = append(errs, fmt.Errorf("pools[%d] (%s).concurrency: %d is less than its functions reserve (%d)", i, p.Name, p.Concurrency, reserved[i]))
		} else if members[i] > int(p.Concurrency) {
			errs = append(errs, fmt.Errorf("pools[%d] (%s).concurrency: %d is less than its %d functions: each holds one slot at least", i, p.Name, p.Concurrency, members[i]))
		}
	}
	return errors.Join(errs...)
}
