package modroot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindFromASubdirectory(t *testing.T) {
	root, err := Find()
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.Contains(string(mod), "module github.com/escape-mtd/escape") {
		t.Fatalf("root %s: go.mod %q, %v; want this module's", root, mod, err)
	}
	if filepath.Base(filepath.Dir(mustGetwd(t))) != "internal" {
		t.Fatalf("the test runs in %s, want internal/modroot", mustGetwd(t))
	}
}

func TestFindOutsideAModule(t *testing.T) {
	t.Chdir(t.TempDir())
	if root, err := Find(); err == nil || !strings.Contains(err.Error(), "no go.mod") {
		t.Fatalf("Find in a temp dir: %q, %v; want a no go.mod error", root, err)
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}
