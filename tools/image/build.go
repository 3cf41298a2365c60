package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// pinnedDir is the one directory whose commits do not change the images:
// it holds the pins themselves.
const pinnedDir = "deploy/kubernetes"

// source is what the binaries are built from.
type source struct {
	// Version is the last commit outside pinnedDir (short), with -dirty
	// when files outside it differ from that commit.
	Version string
	// Revision is that commit in full ("" outside a git checkout).
	Revision string
	// Go is the toolchain, which decides the binaries' bytes too.
	Go string
}

// describeSource names the tree at repo. Committing new pins touches only
// pinnedDir, so the commit that records them builds the same images.
func describeSource(ctx context.Context, repo string) (source, error) {
	s := source{Go: runtime.Version()}
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = repo
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(string(out)), nil
	}
	outside := []string{"--", ".", ":(exclude)" + pinnedDir}
	rev, err := git(append([]string{"log", "-1", "--format=%H"}, outside...)...)
	if err != nil {
		return s, fmt.Errorf("name the source: %w", err)
	}
	if rev == "" {
		return s, fmt.Errorf("name the source: no commit in %s", repo)
	}
	s.Revision, s.Version = rev, rev[:12]
	// Untracked files count too: a new .go file changes the binaries.
	dirty, err := git(append([]string{"status", "--porcelain", "--untracked-files=normal"}, outside...)...)
	if err != nil {
		return s, fmt.Errorf("name the source: %w", err)
	}
	if dirty != "" {
		s.Version += "-dirty"
	}
	return s, nil
}

// buildBinaries builds escape-sensor and escape-plane from repo into dir:
// static (no cgo), -trimpath (no build paths) and without VCS stamps
// (the version is src.Version, which does not move with the pins).
func buildBinaries(ctx context.Context, repo, dir string, src source) (sensor, plane string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X main.version="+src.Version, "-o", dir+string(filepath.Separator),
		"./cmd/escape-sensor", "./cmd/escape-plane")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("build the binaries: %w: %s", err, out)
	}
	return filepath.Join(dir, "escape-sensor"), filepath.Join(dir, "escape-plane"), nil
}
