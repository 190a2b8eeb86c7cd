package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// checkDockerfile parses a Dockerfile with BuildKit's own parser, runs the
// build checks BuildKit runs while parsing (`docker build --check`), and
// checks what the image promises: several stages, a static Go build
// (CGO_ENABLED=0), a distroless or scratch final stage that runs as a
// non-root user, an exec-form ENTRYPOINT, and COPY --from naming stages
// that exist.
func checkDockerfile(file string) []error {
	f, err := os.Open(file)
	if err != nil {
		return []error{err}
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		return []error{fmt.Errorf("%s: %w", file, err)}
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", file, fmt.Sprintf(format, args...)))
	}
	for _, w := range res.Warnings {
		bad("line %d: %s", w.Location.Start.Line, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		bad("line %d: %s: %s", line, rule, msg)
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	if err != nil {
		return append(errs, fmt.Errorf("%s: %w", file, err))
	}
	if len(stages) < 2 {
		bad("want a multi-stage build (a build stage and a minimal run stage), got %d stage(s)", len(stages))
		return errs
	}
	names := map[string]bool{}
	staticBuild := false
	for i, st := range stages {
		for _, c := range st.Commands {
			switch c := c.(type) {
			case *instructions.RunCommand:
				line := strings.Join(c.CmdLine, " ")
				if strings.Contains(line, "go build") && strings.Contains(line, "CGO_ENABLED=0") {
					staticBuild = true
				}
			case *instructions.CopyCommand:
				if c.From != "" && !names[strings.ToLower(c.From)] {
					bad("stage %d: COPY --from=%s: no earlier stage has that name", i, c.From)
				}
			}
		}
		if st.Name != "" {
			names[strings.ToLower(st.Name)] = true
		}
	}
	if !staticBuild {
		bad("no RUN builds with CGO_ENABLED=0 go build: the binary must be static")
	}
	final := stages[len(stages)-1]
	if base := final.BaseName; base != "scratch" && !strings.HasPrefix(base, "gcr.io/distroless/") {
		bad("final stage FROM %s: want scratch or gcr.io/distroless/…", base)
	}
	var user string
	var entrypoint *instructions.EntrypointCommand
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			entrypoint = c
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	switch {
	case user == "":
		bad("final stage: no USER: the image would run as root")
	case uid == "0" || uid == "root":
		bad("final stage: USER %s is root", user)
	}
	if entrypoint == nil {
		bad("final stage: no ENTRYPOINT")
	} else if entrypoint.PrependShell {
		bad("final stage: ENTRYPOINT in shell form: a minimal image has no shell, and signals would not reach the gateway")
	}
	return errs
}

// checkDockerContext checks that the build context the Dockerfile's
// .dockerignore lets through holds every file `go build ./cmd/sluice`
// reads: the module files and each needed package's Go and embedded files.
func checkDockerContext(repoRoot, ignoreFile string) []error {
	f, err := os.Open(ignoreFile)
	if err != nil {
		return []error{err}
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		return []error{fmt.Errorf("%s: %w", ignoreFile, err)}
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return []error{fmt.Errorf("%s: %w", ignoreFile, err)}
	}
	cmd := exec.Command("go", "list", "-deps", "-json=Dir,GoFiles,EmbedFiles,Module", "./cmd/sluice")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		return []error{fmt.Errorf("go list ./cmd/sluice: %w", err)}
	}
	needed := []string{"go.mod", "go.sum"}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			Dir                 string
			GoFiles, EmbedFiles []string
			Module              *struct{ Main bool }
		}
		if err := dec.Decode(&p); err != nil {
			return []error{fmt.Errorf("go list: %w", err)}
		}
		if p.Module == nil || !p.Module.Main {
			continue
		}
		rel, err := filepath.Rel(repoRoot, p.Dir)
		if err != nil {
			return []error{err}
		}
		for _, g := range slices.Concat(p.GoFiles, p.EmbedFiles) {
			needed = append(needed, filepath.ToSlash(filepath.Join(rel, g)))
		}
	}
	var errs []error
	for _, n := range needed {
		if excluded, _ := pm.MatchesOrParentMatches(n); excluded {
			errs = append(errs, fmt.Errorf("%s: excludes %s, which the build needs", ignoreFile, n))
		}
	}
	return errs
}
