package jsapi

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestIsConflict(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{jetstream.ErrKeyExists, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10071}, true},
		// Around a leader change: "wrong last sequence", without a number.
		{&jetstream.APIError{Code: 400, ErrorCode: 10164}, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008}, false},
		{errors.New("other"), false},
	} {
		if got := Conflict(tc.err); got != tc.want {
			t.Errorf("Conflict(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

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
		if got := Deleted(tc.header); got != tc.want {
			t.Errorf("%s: Deleted(%v) = %v, want %v", tc.name, tc.header, got, tc.want)
		}
	}
}
