package buffer

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestDeletedEntry(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header nats.Header
		want   bool
	}{
		{"a put, no headers", nil, false},
		{"a put with other headers", nats.Header{"Nats-Msg-Id": {"x"}}, false},
		{"deleted", nats.Header{"KV-Operation": {"DEL"}}, true},
		{"purged", nats.Header{"KV-Operation": {"PURGE"}}, true},
		{"an operation that is neither", nats.Header{"KV-Operation": {"PUT"}}, false},
		{"aged out by TTL", nats.Header{jetstream.MarkerReasonHeader: {"MaxAge"}}, true},
		{"removed marker", nats.Header{jetstream.MarkerReasonHeader: {"Remove"}}, true},
		{"purge marker", nats.Header{jetstream.MarkerReasonHeader: {"Purge"}}, true},
		{"unknown marker", nats.Header{jetstream.MarkerReasonHeader: {"Other"}}, false},
	} {
		if got := deletedEntry(tc.header); got != tc.want {
			t.Errorf("%s: deletedEntry(%v) = %v, want %v", tc.name, tc.header, got, tc.want)
		}
	}
}

func TestValidJobID(t *testing.T) {
	for id, want := range map[string]bool{
		NewJobID():                    true,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZ":  true,
		"2345672345672345672345672Z":  true,
		"ABCDEFGHIJKLMNOPQRSTUVWXY":   false, // 25
		"ABCDEFGHIJKLMNOPQRSTUVWXYZA": false, // 27
		"":                            false,
		"abcdefghijklmnopqrstuvwxyz":  false, // lower case
		"ABCDEFGHIJKLMNOPQRSTUVWXY1":  false, // 1 is not base32
		"ABCDEFGHIJKLMNOPQRSTUVWXY8":  false,
		"ABCDEFGHIJKLMNOPQRSTUVWXY0":  false,
		"ABCDEFGHIJKLMNOPQRSTUVWXY.":  false,
		"ABCDEFGHIJKLMNOPQRSTUVWXY>":  false,
		"ABCDEFGHIJKLMNOPQRSTUVWXYÉ":  false, // 27 bytes
	} {
		if got := ValidJobID(id); got != want {
			t.Errorf("ValidJobID(%q) = %v, want %v", id, got, want)
		}
	}
}
