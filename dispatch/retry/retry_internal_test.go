package retry

import (
	"net/http"
	"testing"
)

// Which answers are tried again: 5xx but 501, and 408. A redirect the
// invoker did not follow (target.HTTP stops at one to another origin) is
// the function's answer, a failed attempt not retried.
func TestRetryableStatus(t *testing.T) {
	for status, want := range map[int]bool{
		http.StatusInternalServerError: true,
		http.StatusBadGateway:          true,
		http.StatusServiceUnavailable:  true,
		http.StatusRequestTimeout:      true,
		http.StatusNotImplemented:      false,
		http.StatusTemporaryRedirect:   false,
		http.StatusBadRequest:          false,
		http.StatusNotFound:            false,
	} {
		if got := RetryableStatus(status); got != want {
			t.Errorf("RetryableStatus(%d) = %v, want %v", status, got, want)
		}
	}
}
