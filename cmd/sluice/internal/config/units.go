package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as "30s", "1m30s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return fmt.Errorf("line %d: %q is not a positive duration such as 500ms, 30s or 2m", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// Count is a whole number of at least 1. YAML that gives a fraction, a
// string, zero or a negative number is an error, never a silent default.
type Count int

// UnmarshalYAML accepts only a positive YAML integer.
func (c *Count) UnmarshalYAML(n *yaml.Node) error {
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil || v < 1 {
		return fmt.Errorf("line %d: %q is not a whole number of at least 1", n.Line, n.Value)
	}
	if v > math.MaxInt32 {
		return fmt.Errorf("line %d: %s is too large", n.Line, n.Value)
	}
	*c = Count(v)
	return nil
}

// ByteSize is a size written as 1048576, "512KiB", "1MiB" or "1GiB" in YAML.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}

// UnmarshalYAML parses a byte count with an optional binary or decimal unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := parseByteSize(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	if v == 0 {
		return fmt.Errorf("line %d: %q: a size must be at least 1 byte", n.Line, s)
	}
	*b = ByteSize(v)
	return nil
}

func parseByteSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size such as 65536, 512KiB or 1MiB", s)
	}
	return v * mult, nil
}
