package config

import (
	"strings"
	"testing"
	"time"
)

// The config file is read by a decoder of its own (decodeFields), so the
// YAML features a file may use are tested here: a key given twice is an
// error naming both lines, and anchors, aliases and merge keys work.

func TestParseConfigRefusesDuplicateKeys(t *testing.T) {
	for _, tt := range []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{
			name: "two functions blocks at top level",
			yaml: `functions:
  - name: a
    url: http://a/
buffer: {max_jobs: 5}
functions:
  - name: b
    url: http://b/
`,
			want: []string{"functions: line 5: given twice (first at line 1)"},
		},
		{
			name: "a field twice inside a function",
			yaml: `functions:
  - name: a
    url: http://a/
    concurrency: 5
    timeout: 10s
    concurrency: 50
`,
			want: []string{"functions[0].concurrency: line 6: given twice (first at line 4)"},
		},
		{
			name: "twice in a flow mapping, deeper",
			yaml: `functions:
  - name: a
    url: http://a/
    retry: {max_attempts: 3, max_attempts: 4}
`,
			want: []string{"functions[0].retry.max_attempts: line 4: given twice (first at line 4)"},
		},
		{
			name: "a header twice in a map",
			yaml: `functions:
  - name: a
    target:
      http:
        url: http://a/
        headers:
          X-Key: one
          X-Key: two
`,
			want: []string{"line 8", "X-Key", "already defined at line 7"},
		},
		{
			name: "twice beside a merge key",
			yaml: `functions:
  - &a
    name: a
    url: http://a/
  - <<: *a
    name: b
    name: c
`,
			want: []string{"functions[1].name: line 7: given twice (first at line 6)"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted: %+v", cfg.Functions)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestParseConfigAnchorsAndMergeKeys(t *testing.T) {
	t.Run("one anchor reused for two functions", func(t *testing.T) {
		cfg, err := ParseConfig([]byte(`
functions:
  - name: a
    url: http://a/
    retry: &retry {max_attempts: 3, initial_backoff: 2s}
    timeout: &timeout 45s
  - name: b
    url: http://b/
    retry: *retry
    timeout: *timeout
  - name: c
    url: http://c/
    retry: *retry
`))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range cfg.Functions {
			if f.Retry.MaxAttempts != 3 || time.Duration(f.Retry.InitialBackoff) != 2*time.Second {
				t.Errorf("%s.retry = %+v, want the anchored max_attempts 3, initial_backoff 2s", f.Name, f.Retry)
			}
		}
		if time.Duration(cfg.Functions[1].Timeout) != 45*time.Second || time.Duration(cfg.Functions[2].Timeout) != defaultTimeout {
			t.Errorf("timeouts = %s, %s; want 45s from the alias and the default", time.Duration(cfg.Functions[1].Timeout), time.Duration(cfg.Functions[2].Timeout))
		}
		// Defaults filled into one function must not leak into another
		// through a shared node.
		cfg.Functions[1].Retry.MaxAttempts = 9
		if cfg.Functions[2].Retry.MaxAttempts != 3 {
			t.Error("two aliased functions share one retry value")
		}
	})

	t.Run("a merge key overriding one field", func(t *testing.T) {
		cfg, err := ParseConfig([]byte(`
functions:
  - &base
    name: a
    url: http://a/
    concurrency: 20
    timeout: 1m
    circuit_breaker: {cooldown: 2s}
  - <<: *base
    name: b
    concurrency: 5
`))
		if err != nil {
			t.Fatal(err)
		}
		a, b := cfg.Functions[0], cfg.Functions[1]
		if a.Name != "a" || a.Concurrency != 20 {
			t.Errorf("a = %s concurrency %d", a.Name, a.Concurrency)
		}
		if b.Name != "b" || b.Concurrency != 5 || time.Duration(b.Timeout) != time.Minute || b.URL != "http://a/" ||
			time.Duration(b.CircuitBreaker.Cooldown) != 2*time.Second {
			t.Errorf("b = name %s, concurrency %d, timeout %s, url %s, cooldown %s; want b, 5 and the rest from a",
				b.Name, b.Concurrency, time.Duration(b.Timeout), b.URL, time.Duration(b.CircuitBreaker.Cooldown))
		}
	})

	t.Run("a list of merges: the first wins, the mapping's own keys over both", func(t *testing.T) {
		cfg, err := ParseConfig([]byte(`
functions:
  - &one {name: a, url: http://a/, concurrency: 7}
  - &two {name: b, url: http://b/, concurrency: 8, timeout: 9s}
  - <<: [*one, *two]
    name: c
`))
		if err != nil {
			t.Fatal(err)
		}
		c := cfg.Functions[2]
		if c.Name != "c" || c.URL != "http://a/" || c.Concurrency != 7 || time.Duration(c.Timeout) != 9*time.Second {
			t.Errorf("c = name %s, url %s, concurrency %d, timeout %s; want c, http://a/, 7, 9s", c.Name, c.URL, c.Concurrency, time.Duration(c.Timeout))
		}
	})

	t.Run("a merge into a nested mapping", func(t *testing.T) {
		cfg, err := ParseConfig([]byte(`
functions:
  - name: a
    url: http://a/
    retry: &r {max_attempts: 4, max_backoff: 1m}
  - name: b
    url: http://b/
    retry: {<<: *r, max_attempts: 2}
`))
		if err != nil {
			t.Fatal(err)
		}
		r := cfg.Functions[1].Retry
		if r.MaxAttempts != 2 || time.Duration(r.MaxBackoff) != time.Minute {
			t.Errorf("b.retry = %+v, want max_attempts 2 and max_backoff 1m", r)
		}
	})

	for _, tt := range []struct {
		name, yaml, want string
	}{
		{
			name: "merged keys are still checked",
			yaml: "functions:\n  - &a {name: a, url: http://a/}\n  - <<: *a\n    name: b\n    bogus: 1\n",
			want: "functions[1].bogus: line 5: unknown field",
		},
		{
			name: "an unknown key inside a merged mapping",
			yaml: "functions:\n  - name: a\n    url: http://a/\n    retry: &r {max_attempts: 2, nope: 1}\n  - name: b\n    url: http://b/\n    retry: {<<: *r}\n",
			want: "functions[0].retry.nope: line 4: unknown field",
		},
		{
			name: "a merge of a scalar",
			yaml: "functions:\n  - name: a\n    url: &u http://a/\n  - <<: *u\n    name: b\n",
			want: "functions[1].<<: line 4: a merge key takes a mapping or a list of mappings",
		},
		{
			name: "a merge of itself",
			yaml: "functions:\n  - &a\n    name: a\n    url: http://a/\n    retry: {<<: *a}\n",
			want: "functions[0].retry.name: line 3: unknown field",
		},
		{
			name: "a mapping that merges itself",
			yaml: "functions:\n  - &a {name: a, url: http://a/, <<: *a}\n",
			want: "functions[0].<<: line 2: a merge key includes the mapping it is in",
		},
		{
			name: "an alias of a list where a mapping belongs",
			yaml: "functions: &f\n  - name: a\n    url: http://a/\nbuffer: *f\n",
			want: "buffer: line 4: want a mapping of field names to values",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one saying %q", err, tt.want)
			}
		})
	}
}
