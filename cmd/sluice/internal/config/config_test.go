package config

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/dispatch/pacing"
	"github.com/sluicehq/sluice/gateway"
)

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
functions:
  - name: resize
    url: http://127.0.0.1:9000/resize
  - name: thumb_2
    url: https://fn.example/thumb
    concurrency: 3
    timeout: 2m
    max_payload: 256KiB
buffer:
  max_jobs: 500
  max_bytes: 1GiB
`))
	if err != nil {
		t.Fatal(err)
	}
	r, th := cfg.Functions[0], cfg.Functions[1]
	if r.Concurrency != DefaultConcurrency || time.Duration(r.Timeout) != defaultTimeout || r.MaxPayload != gateway.DefaultMaxPayload {
		t.Errorf("resize = %+v, want the defaults", r)
	}
	if th.Concurrency != 3 || time.Duration(th.Timeout) != 2*time.Minute || th.MaxPayload != 256<<10 {
		t.Errorf("thumb_2 = %+v, want concurrency 3, timeout 2m, 256KiB", th)
	}
	if cfg.Buffer.MaxJobs != 500 || cfg.Buffer.MaxBytes != 1<<30 || cfg.Buffer.Durability != "always" ||
		time.Duration(cfg.Buffer.JobRetention) != 24*time.Hour || time.Duration(cfg.Buffer.IdempotencyWindow) != 24*time.Hour {
		t.Errorf("buffer = %+v", cfg.Buffer)
	}
}

func TestParseConfigDurabilityInterval(t *testing.T) {
	cfg, err := ParseConfig([]byte("functions:\n  - name: a\n    url: http://x/\nbuffer: {durability: interval, job_retention: 72h}\n"))
	if err != nil || cfg.Buffer.Durability != "interval" || time.Duration(cfg.Buffer.JobRetention) != 72*time.Hour {
		t.Errorf("config = %+v, %v", cfg, err)
	}
}

func TestParseConfigLifecycle(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
functions:
  - name: a
    url: http://x/
  - name: b
    url: http://y/
    circuit_breaker: {enabled: false}
  - name: c
    url: http://z/
    circuit_breaker: {failure_ratio: 0.8, min_attempts: 20, window: 1m, cooldown: 2s, max_cooldown: 1m}
callbacks:
  secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]
  allow_cidrs: [10.1.0.0/16]
buffer: {dead_letter_retention: 720h}
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := DispatchFunction(cfg.Functions[0]).Circuit, DispatchFunction(cfg.Functions[1]).Circuit, DispatchFunction(cfg.Functions[2]).Circuit
	if a.Disabled || a.FailureRatio != 0.5 || a.MinAttempts != 10 || a.Window != 30*time.Second || a.Cooldown != 5*time.Second || a.MaxCooldown != 5*time.Minute {
		t.Errorf("default circuit breaker = %+v", a)
	}
	if !b.Disabled {
		t.Errorf("circuit_breaker.enabled: false gave %+v", b)
	}
	if c.FailureRatio != 0.8 || c.MinAttempts != 20 || c.Window != time.Minute || c.Cooldown != 2*time.Second || c.MaxCooldown != time.Minute {
		t.Errorf("configured circuit breaker = %+v", c)
	}
	cb := cfg.Callbacks
	if time.Duration(cb.Timeout) != 10*time.Second || cb.MaxAttempts != 10 || cb.Concurrency != 32 || time.Duration(cfg.Buffer.DeadLetterRetention) != 720*time.Hour {
		t.Errorf("callbacks = %+v, dead letter retention %v", cb, time.Duration(cfg.Buffer.DeadLetterRetention))
	}
}

func TestParseConfigJSON(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"functions": [{"name": "a", "url": "http://x/", "timeout": "5s"}]}`))
	if err != nil || cfg.Functions[0].Name != "a" || time.Duration(cfg.Functions[0].Timeout) != 5*time.Second {
		t.Fatalf("JSON config = %+v, %v", cfg, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, config, want string
	}{
		{"empty", ``, "functions: none configured"},
		{"no functions", `functions: []`, "functions: none configured"},
		{"malformed json", `{"functions": [{"name": "a", "url": "http://x/"}`, "did not find expected"},
		{"unknown field", "functions:\n  - name: a\n    url: http://x/\n    concurency: 3\n", "functions[0].concurency: line 4: unknown field"},
		{"missing name", "functions:\n  - url: http://x/\n", "functions[0].name: missing"},
		{"idempotency outlives the state", "functions:\n  - name: a\n    url: http://x/\nbuffer: {idempotency_window: 48h}\n",
			"buffer.idempotency_window: 48h0m0s is longer than buffer.job_retention (24h0m0s)"},
		{"bad name", "functions:\n  - name: Resize\n    url: http://x/\n", `functions[0] (Resize).name: "Resize" is not allowed`},
		{"name with dot", "functions:\n  - name: a.b\n    url: http://x/\n", `"a.b" is not allowed`},
		{"duplicate name", "functions:\n  - name: a\n    url: http://x/\n  - name: a\n    url: http://y/\n", `functions[1] (a).name: "a" is already the name of functions[0]`},
		{"missing url", "functions:\n  - name: a\n", "functions[0] (a).url: missing"},
		{"relative url", "functions:\n  - name: a\n    url: /x\n", `functions[0] (a).url: "/x" is not an absolute http or https URL`},
		{"other scheme", "functions:\n  - name: a\n    url: ftp://x/\n", "is not an absolute http or https URL"},
		{"negative concurrency", "functions:\n  - name: a\n    url: http://x/\n    concurrency: -1\n", `functions[0].concurrency: line 4: "-1" is not a whole number of at least 1`},
		{"zero concurrency", "functions:\n  - name: a\n    url: http://x/\n    concurrency: 0\n", `"0" is not a whole number of at least 1`},
		{"fractional concurrency", "functions:\n  - name: a\n    url: http://x/\n    concurrency: 0.5\n", `"0.5" is not a whole number of at least 1`},
		{"quoted concurrency", "functions:\n  - name: a\n    url: http://x/\n    concurrency: \"3\"\n", `"3" is not a whole number`},
		{"huge concurrency", "functions:\n  - name: a\n    url: http://x/\n    concurrency: 10001\n", "concurrency: 10001 is out of range: 1 to 10000"},
		{"bad timeout", "functions:\n  - name: a\n    url: http://x/\n    timeout: soon\n", `functions[0].timeout: line 4: "soon" is not a positive duration`},
		{"long timeout", "functions:\n  - name: a\n    url: http://x/\n    timeout: 2h\n", "functions[0] (a).timeout: 2h0m0s is out of range"},
		{"negative timeout", "functions:\n  - name: a\n    url: http://x/\n    timeout: -1s\n", `"-1s" is not a positive duration`},
		{"payload too big", "functions:\n  - name: a\n    url: http://x/\n    max_payload: 5MiB\n", "functions[0] (a).max_payload: 5242880 bytes is out of range"},
		{"bad payload size", "functions:\n  - name: a\n    url: http://x/\n    max_payload: lots\n", `"lots" is not a size`},
		{"negative buffer", "functions:\n  - name: a\n    url: http://x/\nbuffer: {max_jobs: -5}\n", `buffer.max_jobs: line 4: "-5" is not a whole number`},
		{"zero payload", "functions:\n  - name: a\n    url: http://x/\n    max_payload: 0\n", "a size must be at least 1 byte"},
		{"failure ratio over 1", "functions:\n  - name: a\n    url: http://x/\n    circuit_breaker: {failure_ratio: 1.5}\n", "circuit_breaker.failure_ratio: 1.5 is out of range"},
		{"negative failure ratio", "functions:\n  - name: a\n    url: http://x/\n    circuit_breaker: {failure_ratio: -0.1}\n", "circuit_breaker.failure_ratio: -0.1 is out of range"},
		{"cooldown over its cap", "functions:\n  - name: a\n    url: http://x/\n    circuit_breaker: {cooldown: 10m}\n", "circuit_breaker.max_cooldown: 5m0s is shorter than cooldown"},
		{"unknown circuit field", "functions:\n  - name: a\n    url: http://x/\n    circuit_breaker: {ratio: 1}\n", "circuit_breaker.ratio: line 4: unknown field"},
		{"secret without prefix", "functions:\n  - name: a\n    url: http://x/\ncallbacks: {secrets: [c2VjcmV0]}\n", "callbacks.secrets:"},
		{"short secret", "functions:\n  - name: a\n    url: http://x/\ncallbacks: {secrets: [whsec_c2VjcmV0]}\n", "callbacks.secrets:"},
		{"bad cidr", "functions:\n  - name: a\n    url: http://x/\ncallbacks: {allow_cidrs: [10.0.0.0/33]}\n", "callbacks.allow_cidrs:"},
		{"tenant without keys", "functions:\n  - name: a\n    url: http://x/\ntenants:\n  - name: acme\n", "tenants[0] (acme).api_keys: missing"},
		{"tenant key not hashed", "functions:\n  - name: a\n    url: http://x/\ntenants:\n  - name: acme\n    api_keys: [my-secret-key]\n", "tenants[0] (acme).api_keys[0]: \"my-secret-key\" is not sha256:<64 hex digits>"},
		{"tenant key twice", "functions:\n  - name: a\n    url: http://x/\ntenants:\n  - name: acme\n    api_keys: [sha256:0b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d]\n  - name: bolt\n    api_keys: [sha256:0b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d]\n", `tenants[1] (bolt).api_keys[0]: the same key is already tenant "acme"'s`},
		{"tenant unknown function", "functions:\n  - name: a\n    url: http://x/\ntenants:\n  - name: acme\n    api_keys: [sha256:0b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d]\n    functions: [b]\n", `tenants[0] (acme).functions[0]: "b" is not a configured function`},
		{"consumers past the limit", "functions:\n  - name: a\n    url: http://x/\n  - name: b\n    url: http://x/\n    fairness: true\ntenants:\n  - name: acme\n    api_keys: [sha256:0b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d]\nbuffer: {max_consumers: 8}\n", "buffer.max_consumers: 8 is fewer than the 9 consumers these functions need"},
		{"tenant empty functions", "functions:\n  - name: a\n    url: http://x/\ntenants:\n  - name: acme\n    api_keys: [sha256:0b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d]\n    functions: []\n", "tenants[0] (acme).functions: empty"},
		{"duplicate tenant", "functions:\n  - name: a\n    url: http://x/\ntenants:\n  - name: acme\n    api_keys: [sha256:0b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d]\n  - name: acme\n    api_keys: [sha256:1b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d]\n", `tenants[1] (acme).name: "acme" is already the name of tenants[0]`},
		{"pool unknown", "functions:\n  - name: a\n    url: http://x/\n    pool: aws\n", `functions[0] (a).pool: "aws" is not a configured pool`},
		{"reserved without pool", "functions:\n  - name: a\n    url: http://x/\n    reserved: 2\n", "functions[0] (a).reserved: set without pool"},
		{"reserved over concurrency", "pools: [{name: aws, concurrency: 60}]\nfunctions:\n  - name: a\n    url: http://x/\n    pool: aws\n    concurrency: 5\n    reserved: 6\n", "functions[0] (a).reserved: 6 is more than the function's concurrency of 5"},
		{"pool over-reserved", "pools: [{name: aws, concurrency: 10}]\nfunctions:\n  - name: a\n    url: http://x/\n    pool: aws\n    reserved: 6\n  - name: b\n    url: http://x/\n    pool: aws\n    reserved: 6\n", "pools[0] (aws).concurrency: 10 is less than its functions reserve (12)"},
		{"pool without concurrency", "pools: [{name: aws}]\nfunctions:\n  - name: a\n    url: http://x/\n", "pools[0] (aws).concurrency: missing"},
		{"pool bad name", "pools: [{name: AWS, concurrency: 5}]\nfunctions:\n  - name: a\n    url: http://x/\n", `pools[0] (AWS).name: "AWS" is not allowed`},
		{"pool twice", "pools: [{name: aws, concurrency: 5}, {name: aws, concurrency: 6}]\nfunctions:\n  - name: a\n    url: http://x/\n", `pools[1] (aws).name: "aws" is already the name of pools[0]`},
		{"pool unknown field", "pools: [{name: aws, limit: 5}]\nfunctions:\n  - name: a\n    url: http://x/\n", "pools[0].limit: line 1: unknown field"},
		{"negative ingress", "functions:\n  - name: a\n    url: http://x/\n    ingress: {per_second: -1}\n", "functions[0] (a).ingress.per_second: -1 is not a number of at least 0"},
		{"ingress burst alone", "functions:\n  - name: a\n    url: http://x/\n    ingress: {burst: 5}\n", "burst is set without per_second"},
		{"zero max queued", "functions:\n  - name: a\n    url: http://x/\n    ingress: {max_queued: 0}\n", `"0" is not a whole number of at least 1`},
		{"callback backoff", "functions:\n  - name: a\n    url: http://x/\ncallbacks: {initial_backoff: 10m}\n", "callbacks.max_backoff: 5m0s is shorter than initial_backoff"},
		{"target beside url", "functions:\n  - name: a\n    url: http://x/\n    target: {http: {url: http://y/}}\n", "functions[0] (a).target: given beside url"},
		{"empty target", "functions:\n  - name: a\n    target: {}\n", "functions[0] (a).target: empty: give one of http, lambda or nats"},
		{"two targets", "functions:\n  - name: a\n    target: {http: {url: http://y/}, nats: {subject: svc.a}}\n", "functions[0] (a).target: has http and nats: give exactly one"},
		{"unknown target", "functions:\n  - name: a\n    target: {grpc: {url: http://y/}}\n", "functions[0].target.grpc: line 3: unknown field; known fields are http, lambda, nats"},
		{"http target without url", "functions:\n  - name: a\n    target: {http: {headers: {X-Key: k}}}\n", "functions[0] (a).target.http.url: missing"},
		{"http target bad url", "functions:\n  - name: a\n    target: {http: {url: x}}\n", `functions[0] (a).target.http.url: "x" is not an absolute http or https URL`},
		{"http target bad header", "functions:\n  - name: a\n    target: {http: {url: http://y/, headers: {\"X Key\": k}}}\n", `functions[0] (a).target.http.headers: "X Key" is not a valid header name`},
		{"http target sluice header", "functions:\n  - name: a\n    target: {http: {url: http://y/, headers: {sluice-job-id: k}}}\n", "functions[0] (a).target.http.headers: sluice-job-id is set by Sluice"},
		{"lambda without function", "functions:\n  - name: a\n    target: {lambda: {region: eu-west-1}}\n", "functions[0] (a).target.lambda.function: missing"},
		{"lambda bad function", "functions:\n  - name: a\n    target: {lambda: {function: \"my fn\"}}\n", `functions[0] (a).target.lambda.function: "my fn" is not a Lambda function name`},
		{"lambda bad qualifier", "functions:\n  - name: a\n    target: {lambda: {function: f, qualifier: \"v 1\"}}\n", `target.lambda.qualifier: "v 1" is not a version or alias name`},
		{"lambda bad region", "functions:\n  - name: a\n    target: {lambda: {function: f, region: Ireland}}\n", `target.lambda.region: "Ireland" is not an AWS region`},
		{"lambda bad endpoint", "functions:\n  - name: a\n    target: {lambda: {function: f, endpoint: localhost:8080}}\n", `target.lambda.endpoint: "localhost:8080" is not an absolute http or https URL`},
		{"lambda unknown field", "functions:\n  - name: a\n    target: {lambda: {function: f, alias: live}}\n", "functions[0].target.lambda.alias: line 3: unknown field; known fields are function, qualifier, region, endpoint"},
		{"nats without subject", "functions:\n  - name: a\n    target: {nats: {}}\n", "functions[0] (a).target.nats.subject: missing"},
		{"nats wildcard", "functions:\n  - name: a\n    target: {nats: {subject: svc.*}}\n", `functions[0] (a).target.nats.subject: "svc.*" is not a NATS subject without wildcards`},
		{"nats empty token", "functions:\n  - name: a\n    target: {nats: {subject: svc..a}}\n", `"svc..a" is not a NATS subject`},
		{"nats sluice subject", "functions:\n  - name: a\n    target: {nats: {subject: sluice.jobs.a}}\n", `functions[0] (a).target.nats.subject: "sluice.jobs.a" is under "sluice."`},
		{"nats system subject", "functions:\n  - name: a\n    target: {nats: {subject: $JS.API.INFO}}\n", `is under "$"`},
		{"nats timeout", "functions:\n  - name: a\n    target: {nats: {subject: svc.a, timeout: 5s}}\n", "functions[0].target.nats.timeout: line 3: unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.config))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestParseConfigTargets: each target kind, and url as the http one's
// shorthand.
func TestParseConfigTargets(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
functions:
  - name: short
    url: https://fn.example.com/short
  - name: web
    target: {http: {url: "https://fn.example.com/web", headers: {X-Api-Key: k-1, Content-Type: application/json}}}
  - name: thumbs
    target: {lambda: {function: "arn:aws:lambda:eu-west-1:123456789012:function:thumbs", qualifier: live, region: eu-west-1, endpoint: "http://127.0.0.1:9000"}}
    concurrency: 5
  - name: plain
    target: {lambda: {function: thumbs}}
  - name: resize
    target: {nats: {subject: svc.resize}}
    timeout: 5s
`))
	if err != nil {
		t.Fatal(err)
	}
	fs := cfg.Functions
	if h := fs[0].Target.HTTP; h == nil || h.URL != "https://fn.example.com/short" || fs[0].Target.Lambda != nil {
		t.Errorf("url: target = %+v, want http with the url", fs[0].Target)
	}
	if inv := HTTPInvoker(fs[0]); inv.URL != "https://fn.example.com/short" || inv.Header != nil {
		t.Errorf("url: invoker = %+v", inv)
	}
	if inv := HTTPInvoker(fs[1]); inv.URL != "https://fn.example.com/web" || inv.Header.Get("X-Api-Key") != "k-1" || inv.Header.Get("Content-Type") != "application/json" {
		t.Errorf("http target: invoker = %+v", inv)
	}
	if l := fs[2].Target.Lambda; l == nil || l.Function != "arn:aws:lambda:eu-west-1:123456789012:function:thumbs" || l.Qualifier != "live" || l.Region != "eu-west-1" ||
		l.Endpoint != "http://127.0.0.1:9000" || !fs[2].concurrencyGiven || fs[2].Concurrency != 5 {
		t.Errorf("lambda target = %+v, concurrency %d (given %v)", l, fs[2].Concurrency, fs[2].concurrencyGiven)
	}
	if fs[3].concurrencyGiven || fs[3].Concurrency != DefaultConcurrency {
		t.Errorf("lambda target without concurrency: %d (given %v); want the default, not given", fs[3].Concurrency, fs[3].concurrencyGiven)
	}
	if n := fs[4].Target.NATS; n == nil || n.Subject != "svc.resize" || time.Duration(fs[4].Timeout) != 5*time.Second {
		t.Errorf("nats target = %+v", n)
	}
	// A function's setting that follows its concurrency follows the
	// reserved concurrency, without touching the parsed configuration.
	f := FunctionConfig{Concurrency: 10, Scaling: &ScalingConfig{Initial: 10, PerMinute: 60}, KeepWarm: &KeepWarmConfig{Instances: 8}}
	g := f
	g.SetConcurrency(4)
	if g.Concurrency != 4 || g.Scaling.Initial != 4 || g.KeepWarm.Instances != 4 || f.Scaling.Initial != 10 || f.KeepWarm.Instances != 8 {
		t.Errorf("setConcurrency: %+v %+v %+v; original %+v %+v", g, g.Scaling, g.KeepWarm, f.Scaling, f.KeepWarm)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "512KiB": 512 << 10, "1MiB": 1 << 20, "2 GiB": 2 << 30, "1MB": 1e6, "7B": 7} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "MiB", "1PiB", "99999999999GiB"} {
		if _, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q) succeeded, want an error", in)
		}
	}
}

func TestParseConfigPacing(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
functions:
  - name: paced
    url: http://x/
    concurrency: 50
    scaling: {initial: 10, per_minute: 600}
    rate: {per_second: 200, burst: 20}
    keep_warm: {instances: 2, every: 4m}
    idle_reap: 10m
    adaptive: false
    retry_after: function
    retry: {max_attempts: 3, initial_backoff: 2s, max_backoff: 1m, multiplier: 3, jitter: none}
    max_age: 1h
  - name: plain
    url: http://x/
`))
	if err != nil {
		t.Fatal(err)
	}
	paced, plain := DispatchFunction(cfg.Functions[0]), DispatchFunction(cfg.Functions[1])
	if paced.Pacing.Initial != 10 || paced.Pacing.PerMinute != 600 || paced.Pacing.Adaptive || paced.Pacing.IdleReap != 10*time.Minute ||
		paced.RatePerSecond != 200 || paced.RateBurst != 20 || paced.KeepWarm.Instances != 2 || paced.KeepWarm.Every != 4*time.Minute ||
		paced.Retry.MaxAttempts != 3 || paced.Retry.InitialBackoff != 2*time.Second || paced.Retry.MaxBackoff != time.Minute ||
		paced.Retry.Multiplier != 3 || !paced.Retry.NoJitter || paced.MaxAge != time.Hour || paced.Pacing.RetryAfter != pacing.RetryAfterFunction {
		t.Errorf("paced = %+v", paced)
	}
	if plain.Retry.MaxAttempts != 5 || plain.Retry.InitialBackoff != time.Second || plain.Retry.MaxBackoff != 5*time.Minute ||
		plain.Retry.Multiplier != 2 || plain.Retry.NoJitter || plain.MaxAge != 6*time.Hour {
		t.Errorf("plain retry = %+v, max age %v; want the defaults 5, 1s, 5m, 2, full jitter, 6h", plain.Retry, plain.MaxAge)
	}
	if plain.Pacing.Initial != DefaultConcurrency || plain.Pacing.PerMinute != 0 || !plain.Pacing.Adaptive || plain.KeepWarm.Instances != 0 || plain.RatePerSecond != 0 ||
		plain.Pacing.RetryAfter != pacing.RetryAfterJob {
		t.Errorf("plain = %+v, want the window at concurrency, adaptive, Retry-After pausing the job, no keep-warm, no rate", plain)
	}
	for _, tc := range []struct{ name, config, want string }{
		{"scaling without rate", "functions:\n  - name: a\n    url: http://x/\n    scaling: {initial: 5}\n", "functions[0] (a).scaling.per_minute: missing"},
		{"unknown nested field", "functions:\n  - name: a\n    url: http://x/\n    scaling: {initial: 5, per_min: 3}\n", "functions[0].scaling.per_min: line 4: unknown field"},
		{"zero rate", "functions:\n  - name: a\n    url: http://x/\n    rate: {per_second: 0}\n", "rate.per_second: 0 is not a positive number"},
		{"keep warm above concurrency", "functions:\n  - name: a\n    url: http://x/\n    concurrency: 2\n    keep_warm: {instances: 3}\n", "keep_warm.instances: 3 is more than the function's concurrency of 2"},
		{"keep warm slower than reap", "functions:\n  - name: a\n    url: http://x/\n    keep_warm: {instances: 1, every: 20m}\n", "keep_warm.every: 20m0s is not shorter than idle_reap (10m0s)"},
		{"retry jitter", "functions:\n  - name: a\n    url: http://x/\n    retry: {jitter: some}\n", `retry.jitter: "some" is neither full nor none`},
		{"retry multiplier", "functions:\n  - name: a\n    url: http://x/\n    retry: {multiplier: 0.5}\n", "retry.multiplier: 0.5 is not a number of at least 1"},
		{"retry backoffs", "functions:\n  - name: a\n    url: http://x/\n    retry: {initial_backoff: 10m, max_backoff: 1m}\n", "retry.max_backoff: 1m0s is shorter than initial_backoff (10m0s)"},
		{"retry attempts", "functions:\n  - name: a\n    url: http://x/\n    retry: {max_attempts: 0}\n", "functions[0].retry.max_attempts: line 4"},
		{"durability", "functions:\n  - name: a\n    url: http://x/\nbuffer: {durability: sometimes}\n", `buffer.durability: "sometimes" is neither always nor interval`},
		{"retention under max age", "functions:\n  - name: a\n    url: http://x/\n    max_age: 48h\n", "buffer.job_retention: 24h0m0s is not longer than functions[0] (a).max_age (48h0m0s)"},
		{"retry after scope", "functions:\n  - name: a\n    url: http://x/\n    retry_after: tenant\n", `retry_after: "tenant" is neither job nor function`},
		{"adaptive not a bool", "functions:\n  - name: a\n    url: http://x/\n    adaptive: maybe\n", "functions[0].adaptive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseConfig([]byte(tc.config)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// A function and a fair one with one tenant take 8 consumers (1, 3 lanes
// for each of no tenant and acme, and parked finishes): 8 is enough, 7 is
// not (TestParseConfigErrors).
func TestMaxConsumersAtItsEdge(t *testing.T) {
	config := "functions:\n  - name: a\n    url: http://x/\n  - name: b\n    url: http://x/\n    fairness: true\ntenants:\n  - name: acme\n    api_keys: [sha256:0b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d]\nbuffer: {max_consumers: 9}\n"
	if _, err := ParseConfig([]byte(config)); err != nil {
		t.Errorf("max_consumers: 9 for 9 consumers: %v", err)
	}
}
