package buffer

import (
	"errors"
	"testing"

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
		if got := isConflict(tc.err); got != tc.want {
			t.Errorf("isConflict(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
