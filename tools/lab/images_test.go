package lab_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// TestImportImage: an extra image built from a root filesystem lands,
// unpacked, in every host's containerd under its reference, and a second
// import of the same reference replaces it.
func TestImportImage(t *testing.T) {
	inv := labtest.Ensure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	ref := "escape.local/import-test:latest"
	digests := map[string]string{}
	for i, content := range []string{"one\n", "two\n"} {
		if err := os.WriteFile(filepath.Join(rootfs, "etc", "mark"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := lab.ImportImage(ctx, inv, rootfs, ref); err != nil {
			t.Fatal(err)
		}
		for _, h := range inv.Hosts {
			c, err := containerd.New(h.Containerd)
			if err != nil {
				t.Fatal(err)
			}
			nctx := namespaces.WithNamespace(ctx, inv.Namespace)
			img, err := c.GetImage(nctx, ref)
			if err != nil {
				c.Close()
				t.Fatalf("import %d: %s has no %s: %v", i, h.Name, ref, err)
			}
			if ok, err := img.IsUnpacked(nctx, ""); err != nil || !ok {
				t.Errorf("import %d: %s on %s is not unpacked (%v)", i, ref, h.Name, err)
			}
			d := img.Target().Digest.String()
			if i == 1 && d == digests[h.Name] {
				t.Errorf("second import left %s on %s at %s", ref, h.Name, d)
			}
			digests[h.Name] = d
			if i == 1 {
				_ = c.ImageService().Delete(nctx, ref)
			}
			c.Close()
		}
	}
	if err := lab.ImportImage(ctx, inv, filepath.Join(rootfs, "missing"), ref); err == nil {
		t.Error("import of a missing root filesystem succeeded")
	}
}
