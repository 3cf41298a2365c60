package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/migrate"
)

// CRIU's stats files are read from work directories a killed CRIU may have
// left half-written: any bytes give an error or stats, never a panic.
func FuzzReadCRIUStats(f *testing.F) {
	f.Add([]byte{0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57, 0x04, 0, 0, 0, 0x0a, 0x02, 0x08, 0x01})
	f.Add([]byte{1, 2, 3})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, "stats-dump"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "stats-restore"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = readCRIUStats(dir, dir)
	})
}

// No image name, accepted or not, leads outside the image root.
func FuzzImagePath(f *testing.F) {
	for _, s := range []string{"checkpoints/c1/000001-e1", "../x", "a/../../b", "a//b", "/abs", "a/./b", "a\x00b"} {
		f.Add(s)
	}
	n := &Node{cfg: Config{StateDir: f.TempDir()}}
	root := n.imageRoot()
	f.Fuzz(func(t *testing.T, name string) {
		p, err := n.imagePath(migrate.ImageName(name))
		if err != nil {
			return
		}
		if p != filepath.Join(root, name) || !strings.HasPrefix(p, root+"/") || filepath.Clean(p) != p {
			t.Fatalf("name %q gives %q outside %q", name, p, root)
		}
	})
}

// A CRIU configuration keeps every line but the option taken out.
func FuzzStripOption(f *testing.F) {
	f.Add("tcp-established\nlazy-pages\n", "lazy-pages")
	f.Add("a\n  tcp-close \nb", "tcp-close")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, conf, opt string) {
		opt = strings.TrimSpace(opt)
		if opt == "" || strings.ContainsAny(opt, "\n\r") {
			return
		}
		p := filepath.Join(dir, "c.conf")
		if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := stripOption(p, opt); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		if hasOption(b, opt) {
			t.Fatalf("%q still in %q", opt, b)
		}
		var want []string
		for _, l := range strings.SplitAfter(conf, "\n") {
			if strings.TrimSpace(l) != opt {
				want = append(want, l)
			}
		}
		if string(b) != strings.Join(want, "") {
			t.Fatalf("strip %q from %q gave %q", opt, conf, b)
		}
	})
}
