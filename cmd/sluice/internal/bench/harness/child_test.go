package harness

import (
	"bytes"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	var all bytes.Buffer
	tail := &Tail{W: &all, Keep: 16}
	for _, s := range []string{"first line\n", "second line\n", "third\n"} {
		if _, err := tail.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if all.String() != "first line\nsecond line\nthird\n" {
		t.Errorf("passed on %q", all.String())
	}
	// The kept 16 bytes begin mid-line ("cond line\n"): that part is left out.
	if got := tail.String(); got != "third" {
		t.Errorf("tail = %q, want %q", got, "third")
	}
	short := &Tail{W: &all}
	short.Write([]byte("only\nlines\n")) //nolint:errcheck // a bytes.Buffer
	if got := short.String(); got != "only\nlines" {
		t.Errorf("tail = %q, want all of it", got)
	}
	long := &Tail{W: &all}
	long.Write([]byte(strings.Repeat("x", 5000) + "\nend\n")) //nolint:errcheck // a bytes.Buffer
	if got := long.String(); got != "end" {
		t.Errorf("tail of 4 KiB = %q, want %q", got, "end")
	}
}
