package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVerifyImageRejectsGarbage(t *testing.T) {
	if _, err := verifyDir(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing dir accepted")
	}
	dir := t.TempDir()
	if _, err := verifyDir(dir); !errors.Is(err, ErrIncompleteImage) {
		t.Fatalf("empty dir: %v", err)
	}
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("inventory.img", "x")
	write("pstree.img", "")
	write("core-1.img", "x")
	_, err := verifyDir(dir)
	if err == nil || !strings.Contains(err.Error(), "pstree.img") || !strings.Contains(err.Error(), "pages") {
		t.Fatalf("partial image: %v", err)
	}
	write("pstree.img", "x")
	write("pages-1.img", "xyz")
	n, err := verifyDir(dir)
	if err != nil || n != 6 {
		t.Fatalf("complete image: %d %v", n, err)
	}
}
