// Package jobid makes job IDs and tells them apart from other strings.
package jobid

import (
	"crypto/rand"
	"errors"
)

var (
	// ErrNotFound: no job has that ID (or its retention has passed).
	ErrNotFound = errors.New("buffer: job not found")
	// ErrInvalid: the string cannot be a job ID.
	ErrInvalid = errors.New("buffer: malformed job id")
)

// New returns a random job ID: 128 bits from crypto/rand in base32.
func New() string { return rand.Text() }

// Valid reports whether s has the form of a job ID: 26 characters of
// base32's alphabet (A–Z, 2–7), as [New] makes them. Checked on every
// read and every delivery, so by hand rather than by regular expression.
func Valid(s string) bool {
	if len(s) != 26 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < 'A' || c > 'Z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}
