package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHashKey(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"hash-key", "test-key-0123456789"}, &out, &out); err != nil || out.String() != "sha256:0b026dcaf52dd2d7e8b377ed75182bfcc65497aff885b3a37dd1be1a75ca394d\n" {
		t.Errorf("hash-key = %q, %v", out.String(), err)
	}
	if err := runHashKey(nil, strings.NewReader("test-key-0123456789\n"), &out); err != nil || !strings.HasSuffix(out.String(), "394d\n") {
		t.Errorf("hash-key from stdin = %q, %v", out.String(), err)
	}
	if err := runHashKey([]string{"short"}, nil, &out); err == nil {
		t.Error("hash-key took a 5-character key")
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte("functions:\n  - name: a\n    url: http://x/\n    concurrency: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err := run(t.Context(), []string{"serve", "--config", path, "--data-dir", dir}, &stderr, &stderr)
	if err == nil || !strings.Contains(err.Error(), "sluice.yaml") || !strings.Contains(err.Error(), "concurrency") {
		t.Errorf("serve with a bad config: %v, want an error naming the file and the field", err)
	}
	for _, args := range [][]string{{"serve"}, {"serve", "--config", filepath.Join(dir, "missing.yaml")}, {"nonsense"}, {}} {
		if err := run(t.Context(), args, &stderr, &stderr); err == nil {
			t.Errorf("run %q succeeded, want an error", args)
		}
	}
}
