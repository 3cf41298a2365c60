package main

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/escape-mtd/escape/internal/modroot"
)

// The images are built once per test run, into one directory, by the
// same function `make image` runs; the tests that need them share it.
var (
	shared struct {
		once sync.Once
		dir  string
		res  result
		err  error
	}
	scratch string
)

func TestMain(m *testing.M) {
	var err error
	if scratch, err = os.MkdirTemp("", "escape-image-test-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(scratch)
	os.Exit(code)
}

// builtImages builds both images from this checkout and make deps' CRIU,
// once. It needs make deps (CRIU, busybox-static, iptables, runc): not
// under -short.
func builtImages(t *testing.T) (result, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the images from make deps' files: not run with -short")
	}
	shared.once.Do(func() {
		root, err := modroot.Find()
		if err != nil {
			shared.err = err
			return
		}
		shared.dir = filepath.Join(scratch, "first")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		shared.res, shared.err = build(ctx, options{repo: root, out: shared.dir, criuDir: "/opt/escape/criu", epoch: time.Unix(0, 0).UTC()})
		t.Logf("built the images in %v", time.Since(start).Round(time.Millisecond))
	})
	if shared.err != nil {
		t.Fatalf("build the images: %v", shared.err)
	}
	return shared.res, shared.dir
}
