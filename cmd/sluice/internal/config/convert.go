package config

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	sluicev1 "github.com/sluicehq/sluice/api/sluice/v1"
	"github.com/sluicehq/sluice/buffer"
	"github.com/sluicehq/sluice/buffer/groupcommit"
	"github.com/sluicehq/sluice/buffer/store"
	"github.com/sluicehq/sluice/callback"
	"github.com/sluicehq/sluice/callback/delivery"
	"github.com/sluicehq/sluice/dispatch"
	"github.com/sluicehq/sluice/dispatch/circuit"
	"github.com/sluicehq/sluice/dispatch/pacing"
	"github.com/sluicehq/sluice/dispatch/retry"
	"github.com/sluicehq/sluice/dispatch/target"
	"github.com/sluicehq/sluice/gateway"
)

// GatewayFunction is a configured function as the gateway takes it. The
// pacing and rate come from df, the function as dispatch takes it, so
// that the gateway reports what dispatch does.
func GatewayFunction(f FunctionConfig, df dispatch.Function, pools []PoolConfig) gateway.Function {
	return gateway.Function{
		Name: f.Name, Concurrency: int(f.Concurrency), Timeout: time.Duration(f.Timeout), MaxPayload: int64(f.MaxPayload),
		JSONPayload: f.Target != nil && f.Target.Lambda != nil, KeyConcurrency: int(f.KeyConcurrency),
		InitialWindow: df.Pacing.Initial, ScalingPerMinute: df.Pacing.PerMinute, Adaptive: df.Pacing.Adaptive,
		MaxAge: time.Duration(f.MaxAge), Ingress: f.Ingress.Gateway(),
		Pool: f.Pool, PoolConcurrency: poolConcurrency(pools, f.Pool), RatePerSecond: df.RatePerSecond,
	}
}

// DispatchFunction is a configured function as dispatch takes it, but for
// its invoker, which setUpTargets makes.
func DispatchFunction(f FunctionConfig) dispatch.Function {
	df := dispatch.Function{
		Name:        f.Name,
		Concurrency: int(f.Concurrency),
		Timeout:     time.Duration(f.Timeout),
		Pacing: pacing.Policy{
			Initial:  int(f.Concurrency),
			IdleReap: time.Duration(f.IdleReap),
			Adaptive: f.Adaptive == nil || *f.Adaptive,
		},
	}
	if f.RetryAfter == "function" {
		df.Pacing.RetryAfter = pacing.RetryAfterFunction
	}
	if sc := f.Scaling; sc != nil {
		df.Pacing.Initial, df.Pacing.PerMinute = int(sc.Initial), int(sc.PerMinute)
	}
	if r := f.Rate; r != nil {
		df.RatePerSecond, df.RateBurst = r.PerSecond, int(r.Burst)
	}
	if kw := f.KeepWarm; kw != nil {
		df.KeepWarm = dispatch.KeepWarm{Instances: int(kw.Instances), Every: time.Duration(kw.Every)}
	}
	df.Retry = retry.Policy{
		MaxAttempts:    int(f.Retry.MaxAttempts),
		InitialBackoff: time.Duration(f.Retry.InitialBackoff),
		MaxBackoff:     time.Duration(f.Retry.MaxBackoff),
		Multiplier:     f.Retry.Multiplier,
		NoJitter:       f.Retry.Jitter == "none",
	}
	df.MaxAge = time.Duration(f.MaxAge)
	df.Paused = f.Paused
	df.Pool, df.Reserved = f.Pool, int(f.Reserved)
	df.PriorityAging = time.Duration(f.PriorityAging)
	cb := f.CircuitBreaker
	df.Circuit = circuit.Policy{
		Disabled:     cb.Enabled != nil && !*cb.Enabled,
		FailureRatio: cb.FailureRatio,
		MinAttempts:  int(cb.MinAttempts),
		Window:       time.Duration(cb.Window),
		Cooldown:     time.Duration(cb.Cooldown),
		MaxCooldown:  time.Duration(cb.MaxCooldown),
	}
	return df
}

// gateway is the limit as the gateway takes it; the zero Ingress for nil.
func (in *IngressConfig) Gateway() gateway.Ingress {
	if in == nil {
		return gateway.Ingress{}
	}
	return gateway.Ingress{PerSecond: in.PerSecond, Burst: int(in.Burst), MaxQueued: int64(in.MaxQueued)}
}

// GatewayTenants are the configured tenants as the gateway takes them.
func GatewayTenants(tenants []TenantConfig) ([]gateway.Tenant, error) {
	var out []gateway.Tenant
	for _, t := range tenants {
		gt := gateway.Tenant{Name: t.Name, Functions: t.Functions, Ingress: t.Ingress.Gateway()}
		for _, k := range t.APIKeys {
			h, err := gateway.ParseKeyHash(k)
			if err != nil {
				return nil, fmt.Errorf("tenants (%s).api_keys: %w", t.Name, err)
			}
			gt.KeyHashes = append(gt.KeyHashes, h)
		}
		out = append(out, gt)
	}
	return out, nil
}

// CallbackParts builds what checks callback URLs and what signs callbacks:
// each tenant's with its own secrets.
func CallbackParts(cfg *Config) (*callback.Guard, *callback.Keyring, error) {
	guard, err := callback.NewGuard(cfg.Callbacks.AllowCIDRs)
	if err != nil {
		return nil, nil, fmt.Errorf("callbacks.allow_cidrs: %w", err)
	}
	keys, err := cfg.CallbackKeys()
	if err != nil {
		return nil, nil, err
	}
	return guard, keys, nil
}

// DispatchPools are the configured pools as dispatch takes them.
func DispatchPools(pools []PoolConfig) []dispatch.Pool {
	out := make([]dispatch.Pool, 0, len(pools))
	for _, p := range pools {
		out = append(out, dispatch.Pool{Name: p.Name, Concurrency: int(p.Concurrency)})
	}
	return out
}

// poolConcurrency is the configured concurrency of the named pool; 0 for
// none.
func poolConcurrency(pools []PoolConfig, name string) int {
	for _, p := range pools {
		if p.Name == name {
			return int(p.Concurrency)
		}
	}
	return 0
}

// TenantWeights are the tenants' weights for fair functions, by name.
func TenantWeights(tenants []TenantConfig) map[string]int {
	out := make(map[string]int, len(tenants))
	for _, t := range tenants {
		if t.Weight > 0 {
			out[t.Name] = int(t.Weight)
		}
	}
	return out
}

// FairLanes are the lanes of a fair function: one per priority for each
// tenant that may use it, and for jobs without a tenant.
func FairLanes(f FunctionConfig, tenants []TenantConfig) []buffer.Lane {
	names := []string{""}
	for _, t := range tenants {
		if t.Functions == nil || slices.Contains(t.Functions, f.Name) {
			names = append(names, t.Name)
		}
	}
	var out []buffer.Lane
	for _, n := range names {
		for _, p := range []sluicev1.Priority{sluicev1.Priority_HIGH, sluicev1.Priority_NORMAL, sluicev1.Priority_LOW} {
			out = append(out, buffer.Lane{Tenant: n, Priority: p})
		}
	}
	return out
}

// gateway is the limits as the gateway takes them; zero takes its default.
func (c StreamsConfig) Gateway() gateway.StreamLimits {
	return gateway.StreamLimits{
		Watches: int(c.Watches), WatchesPerTenant: int(c.WatchesPerTenant), WatchesPerConnection: int(c.WatchesPerConnection),
		Unauthenticated: int(c.Unauthenticated), UnauthenticatedPerConnection: int(c.UnauthenticatedPerConnection),
	}
}

// Deliverer is callback delivery as package delivery takes it, but for its
// source, sender and logger, which the process makes.
func (cb *CallbacksConfig) Deliverer() delivery.Config {
	return delivery.Config{
		Timeout: time.Duration(cb.Timeout),
		Retry: retry.Policy{
			MaxAttempts:    int(cb.MaxAttempts),
			InitialBackoff: time.Duration(cb.InitialBackoff),
			MaxBackoff:     time.Duration(cb.MaxBackoff),
		},
		Concurrency:       int(cb.Concurrency),
		TenantConcurrency: int(cb.TenantConcurrency),
		MaxPending:        int(cb.MaxPending),
	}
}

// queue is the buffer as buffer.Open takes it, but for its logger and
// replicas, which are the process's.
func (b *BufferConfig) Queue() buffer.Config {
	return buffer.Config{
		MaxJobs:             int64(b.MaxJobs),
		MaxBytes:            int64(b.MaxBytes),
		MaxConsumers:        int(b.MaxConsumers),
		Retention:           time.Duration(b.JobRetention),
		IdempotencyWindow:   time.Duration(b.IdempotencyWindow),
		DeadLetterRetention: time.Duration(b.DeadLetterRetention),
		Stores: store.Limits{
			StateBytes:       int64(b.StateMaxBytes),
			IdempotencyBytes: int64(b.IdempotencyMaxBytes),
			DeadLetterBytes:  int64(b.DeadLetterMaxBytes),
			CallbackBytes:    int64(b.CallbackMaxBytes),
			HighWater:        b.HighWater,
		},
		Batch: groupcommit.Config{
			MaxBatch:    int(b.GroupCommit.MaxBatch),
			MaxInFlight: int(b.GroupCommit.InFlight),
			Linger:      time.Duration(b.GroupCommit.Linger),
		},
	}
}

// callbackKeys returns the secrets that sign each tenant's callbacks.
func (c *Config) CallbackKeys() (*callback.Keyring, error) {
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

// HTTPInvoker is the invoker of a function with an http target, or a url
// and no target (a configuration not yet checked).
func HTTPInvoker(f FunctionConfig) *target.HTTP {
	if f.Target == nil || f.Target.HTTP == nil {
		return &target.HTTP{URL: f.URL, MaxResponseBytes: int64(f.MaxResult)}
	}
	inv := &target.HTTP{URL: f.Target.HTTP.URL, MaxResponseBytes: int64(f.MaxResult)}
	if len(f.Target.HTTP.Headers) > 0 {
		inv.Header = make(http.Header, len(f.Target.HTTP.Headers))
		for k, v := range f.Target.HTTP.Headers {
			inv.Header.Set(k, v)
		}
	}
	return inv
}

// SetConcurrency replaces the function's defaulted concurrency, and the
// settings that default to it or must stay within it.
func (f *FunctionConfig) SetConcurrency(c Count) {
	old := f.Concurrency
	f.Concurrency = c
	if f.Scaling != nil && (f.Scaling.Initial == old || f.Scaling.Initial > c) {
		sc := *f.Scaling // the caller's config keeps its own
		sc.Initial = c
		f.Scaling = &sc
	}
	if f.KeepWarm != nil && f.KeepWarm.Instances > c {
		kw := *f.KeepWarm
		kw.Instances = c
		f.KeepWarm = &kw
	}
}

// KeyConcurrency is each function's key_concurrency, for the functions
// that have one.
func (c *Config) KeyConcurrency() map[string]int {
	out := map[string]int{}
	for _, f := range c.Functions {
		if f.KeyConcurrency > 0 {
			out[f.Name] = int(f.KeyConcurrency)
		}
	}
	return out
}
