// Package cli holds what every sluice command's flags share: parsing that
// refuses stray arguments, and the logging flags.
package cli

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// LogFlags are the logging flags every command takes.
type LogFlags struct {
	format string
	level  slog.Level
}

// Register registers --log-format and --log-level on fs.
func (l *LogFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
	fs.TextVar(&l.level, "log-level", slog.LevelInfo, "least severe level logged: debug, info, warn or error")
}

// Logger is the logger the flags ask for, writing to w.
func (l *LogFlags) Logger(w io.Writer) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: l.level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is neither text nor json", l.format)
}

// ParseFlags parses args, rejecting stray positional arguments.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}
