package config

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"

	"golang.org/x/net/http/httpguts"

	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/groupcommit"
	"github.com/sluicehq/sluice/buffer/keyed"
	"github.com/sluicehq/sluice/callback"
	"github.com/sluicehq/sluice/callback/delivery"
	"github.com/sluicehq/sluice/dispatch/circuit"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/dispatch/target"
	"github.com/sluicehq/sluice/gateway"
)

// Defaults and bounds of the function settings.
const (
	DefaultConcurrency = 10
	MaxConcurrency     = 10_000
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

// Lambda's names for functions and qualifiers (the Invoke API's patterns).
var (
	lambdaFunction  = regexp.MustCompile(`^(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_.]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?$`)
	lambdaQualifier = regexp.MustCompile(`^[a-zA-Z0-9$_-]{1,128}$`)
	awsRegion       = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
)

func (c *Config) SetDefaultsAndCheck() error {
	if len(c.Functions) == 0 {
		return errors.New("functions: none configured; name at least one function with its url")
	}
	seen := make(map[string]int)
	var errs []error
	for i := range c.Functions {
		f := &c.Functions[i]
		bad := entryBad(&errs, "functions", i, f.Name)
		if checkName(bad, "functions", f.Name, seen) {
			seen[f.Name] = i
		}
		f.setDefaultsAndCheck(bad)
	}
	errs = append(errs, c.Buffer.setDefaultsAndCheck(), c.Callbacks.setDefaultsAndCheck(), c.checkTenants(seen), c.checkPools(), c.checkConsumers())
	for i, f := range c.Functions {
		// An unfinished job's state must outlive it.
		if f.MaxAge >= c.Buffer.JobRetention {
			errs = append(errs, fmt.Errorf("buffer.job_retention: %s is not longer than functions[%d] (%s).max_age (%s)",
				time.Duration(c.Buffer.JobRetention), i, f.Name, time.Duration(f.MaxAge)))
		}
	}
	return errors.Join(errs...)
}

// checkConsumers checks that the job stream's consumer limit has room for
// the consumers dispatch makes: one per function (a fair function's is its
// default lane's), one per other lane of a fair function, one for parked
// finishes and one for keyed jobs waiting for their key.
func (c *Config) checkConsumers() error {
	limit := int(c.Buffer.MaxConsumers)
	if limit == 0 {
		limit = buffer.DefaultMaxConsumers
	}
	need := 2
	for _, f := range c.Functions {
		if f.Fairness {
			need += len(FairLanes(f, c.Tenants)) // the default lane's is the function's own
		} else {
			need++
		}
	}
	if need > limit {
		return fmt.Errorf("buffer.max_consumers: %d is fewer than the %d consumers these functions need (one per function, one per other lane of a fair function: each priority of each tenant that may use it, one for parked finishes and one for keyed jobs)", limit, need)
	}
	return nil
}

// badField reports a setting that is wrong: its name within the section
// checked, and why.
type badField func(name, format string, args ...any)

// entryBad is the badField of list[i], an entry named name (functions,
// tenants, pools): it adds to errs "list[i] (name).setting: why", or
// "list[i].setting: why" while the entry has no name.
func entryBad(errs *[]error, list string, i int, name string) badField {
	field := fmt.Sprintf("%s[%d]", list, i)
	if name != "" {
		field = fmt.Sprintf("%s[%d] (%s)", list, i, name)
	}
	return func(setting, format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("%s.%s: %s", field, setting, fmt.Sprintf(format, args...)))
	}
}

// checkName reports what is wrong with the name of an entry of list: it is
// missing, not allowed, or already in seen (the names before it, to their
// index). It returns whether the name is allowed; the caller records it.
func checkName(bad badField, list, name string, seen map[string]int) bool {
	switch {
	case name == "":
		bad("name", "missing")
	case !functionName.MatchString(name):
		bad("name", "%q is not allowed: use lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64", name)
	default:
		if j, dup := seen[name]; dup {
			bad("name", "%q is already the name of %s[%d]", name, list, j)
		}
		return true
	}
	return false
}

// setDefaultsAndCheck fills in the function's defaults and reports what is
// wrong with it, but for its name, which is checked against the others.
func (f *FunctionConfig) setDefaultsAndCheck(bad badField) {
	f.checkTarget(bad)
	f.concurrencyGiven = f.Concurrency != 0
	if f.Concurrency == 0 {
		f.Concurrency = DefaultConcurrency
	}
	if f.Concurrency > MaxConcurrency {
		bad("concurrency", "%d is out of range: 1 to %d", f.Concurrency, MaxConcurrency)
	}
	if f.Timeout == 0 {
		f.Timeout = Duration(defaultTimeout)
	}
	if time.Duration(f.Timeout) > maxTimeout {
		bad("timeout", "%s is out of range: more than 0 and at most %s", time.Duration(f.Timeout), maxTimeout)
	}
	f.maxPayloadGiven = f.MaxPayload != 0
	if f.MaxPayload == 0 {
		f.MaxPayload = gateway.DefaultMaxPayload
	}
	if f.MaxPayload > maxMaxPayload {
		bad("max_payload", "%d bytes is out of range: 1 byte to 4MiB", f.MaxPayload)
	} else if f.Target != nil && f.Target.Lambda != nil && f.MaxPayload > target.LambdaMaxPayload {
		bad("max_payload", "%d bytes is more than a synchronous Lambda invocation takes (%d)", f.MaxPayload, target.LambdaMaxPayload)
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
	if f.KeyConcurrency > keyed.MaxConcurrency {
		bad("key_concurrency", "%d is out of range: 1 to %d", f.KeyConcurrency, keyed.MaxConcurrency)
	}
}

// setDefaultsAndCheck fills in the retry policy's defaults, which are
// dispatch's, and reports what is wrong with it.
func (r *RetryConfig) setDefaultsAndCheck(bad badField) {
	retry := retry.DefaultPolicy()
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
// dispatch/circuit's, and reports what is wrong with it.
func (cb *CircuitBreakerConfig) setDefaultsAndCheck(bad badField) {
	def := circuit.DefaultPolicy()
	if cb.Enabled == nil {
		enabled := true
		cb.Enabled = &enabled
	}
	if cb.FailureRatio == 0 {
		cb.FailureRatio = def.FailureRatio
	}
	if cb.FailureRatio < 0 || cb.FailureRatio > 1 || math.IsNaN(cb.FailureRatio) {
		bad("circuit_breaker.failure_ratio", "%v is out of range: more than 0, at most 1", cb.FailureRatio)
	}
	if cb.MinAttempts == 0 {
		cb.MinAttempts = Count(def.MinAttempts)
	}
	if cb.Window == 0 {
		cb.Window = Duration(def.Window)
	}
	if cb.Cooldown == 0 {
		cb.Cooldown = Duration(def.Cooldown)
	}
	if cb.MaxCooldown == 0 {
		cb.MaxCooldown = Duration(def.MaxCooldown)
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
		gc.MaxBatch = groupcommit.DefaultMaxBatch
	} else if gc.MaxBatch > groupcommit.MaxBatchLimit {
		errs = append(errs, fmt.Errorf("buffer.group_commit.max_batch: %d is more than the server's limit of %d", gc.MaxBatch, groupcommit.MaxBatchLimit))
	}
	if gc.InFlight == 0 {
		gc.InFlight = groupcommit.DefaultMaxInFlight
	} else if gc.InFlight > 64 {
		errs = append(errs, fmt.Errorf("buffer.group_commit.in_flight: %d is more than 64", gc.InFlight))
	}
	if gc.Linger < 0 || time.Duration(gc.Linger) > time.Second {
		errs = append(errs, fmt.Errorf("buffer.group_commit.linger: %s is out of range: 0 to 1s", time.Duration(gc.Linger)))
	}
	return errors.Join(errs...)
}

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
		bad := entryBad(&errs, "tenants", i, t.Name)
		if checkName(bad, "tenants", t.Name, names) {
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
	_, err := c.CallbackKeys() // no key shared by two tenants
	return err
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
		cb.Timeout = Duration(delivery.DefaultTimeout)
	}
	if cb.MaxAttempts == 0 {
		cb.MaxAttempts = delivery.DefaultMaxAttempts
	}
	retry := retry.DefaultPolicy()
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
		cb.Concurrency = delivery.DefaultConcurrency
	}
	if cb.TenantConcurrency > cb.Concurrency {
		errs = append(errs, fmt.Errorf("callbacks.tenant_concurrency: %d is more than concurrency (%d)", cb.TenantConcurrency, cb.Concurrency))
	}
	return errors.Join(errs...)
}

// checkPools checks the pools and the functions that name them.
func (c *Config) checkPools() error {
	var errs []error
	byName := make(map[string]int)
	for i, p := range c.Pools {
		bad := entryBad(&errs, "pools", i, p.Name)
		if checkName(bad, "pools", p.Name, byName) {
			// The first pool of a name is the one its functions join.
			if _, dup := byName[p.Name]; !dup {
				byName[p.Name] = i
			}
		}
		if p.Concurrency == 0 {
			bad("concurrency", "missing: the pool's total in flight")
		} else if p.Concurrency > MaxConcurrency {
			bad("concurrency", "%d is out of range: 1 to %d", p.Concurrency, MaxConcurrency)
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
