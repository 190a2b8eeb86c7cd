package jobid

import "testing"

func TestValid(t *testing.T) {
	for id, want := range map[string]bool{
		New():                         true,
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
		if got := Valid(id); got != want {
			t.Errorf("Valid(%q) = %v, want %v", id, got, want)
		}
	}
}
