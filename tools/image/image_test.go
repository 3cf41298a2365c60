package main

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/escape-mtd/escape/internal/modroot"
)

// TestBuildTwiceGivesTheSameDigests builds both images twice from this
// checkout, into different directories at different times, and compares
// the digests and every byte of the archives.
func TestBuildTwiceGivesTheSameDigests(t *testing.T) {
	first, _ := builtImages(t)
	root, err := modroot.Find()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // a later mtime for every file the second build writes
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	second, err := build(ctx, options{repo: root, out: filepath.Join(scratch, "second", "elsewhere"), criuDir: "/opt/escape/criu",
		epoch: time.Unix(0, 0).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]built{{first.sensor, second.sensor}, {first.plane, second.plane}} {
		a, b := pair[0], pair[1]
		if a.Digest != b.Digest {
			t.Errorf("%s: digest %s, then %s", a.Repo, a.Digest, b.Digest)
		}
		x, err := os.ReadFile(a.Archive)
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(b.Archive)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Errorf("%s: the archives differ (%d and %d bytes)", a.Repo, len(x), len(y))
		}
		t.Logf("%s: %s twice (%d bytes)", a.Repo, a.Digest, len(x))
	}
	if first.pins[sensorRepo] != second.pins[sensorRepo] || first.pins[planeRepo] != second.pins[planeRepo] {
		t.Errorf("pins differ: %+v and %+v", first.pins, second.pins)
	}
}

// The digest depends only on what goes in: the same files copied to other
// paths, with other times, owners and modes, give the same layers and
// image; another SOURCE_DATE_EPOCH or another byte in a file does not.
func TestDigestDependsOnContentNotOnTheMachine(t *testing.T) {
	dir := t.TempDir()
	mk := func(base string, mtime time.Time, mode os.FileMode, uid int) inputs {
		for rel, body := range map[string]string{"usr/sbin/criu": "\x7fELF criu", "usr/lib/x86_64-linux-gnu/libc.so.6": "libc",
			"usr/share/doc/criu/copyright": "GPL-2"} {
			p := filepath.Join(base, "criu", rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			m := os.FileMode(0o600)
			if strings.Contains(rel, "sbin") {
				m = mode
			}
			if err := os.WriteFile(p, []byte(body), m); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			if os.Geteuid() == 0 { // another owner needs root (not under make test-unit)
				if err := os.Lchown(p, uid, uid); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := os.Symlink("libc.so.6", filepath.Join(base, "criu", "usr/lib/x86_64-linux-gnu/libc.so")); err != nil {
			t.Fatal(err)
		}
		for _, b := range []string{"escape-sensor", "escape-plane"} {
			if err := os.WriteFile(filepath.Join(base, b), []byte(b+" binary"), mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(filepath.Join(base, b), mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
		return inputs{sensorBin: filepath.Join(base, "escape-sensor"), planeBin: filepath.Join(base, "escape-plane"),
			criuDir: filepath.Join(base, "criu"), src: source{Version: "0123456789ab", Revision: strings.Repeat("0123456789ab", 3), Go: "go1.26.8"},
			epoch: time.Unix(1700000000, 0).UTC()}
	}
	digests := func(in inputs) [2]string {
		t.Helper()
		s, p, err := images(in)
		if err != nil {
			t.Fatal(err)
		}
		ds, _ := s.Digest()
		dp, _ := p.Digest()
		return [2]string{ds.String(), dp.String()}
	}
	a := mk(filepath.Join(dir, "a"), time.Unix(1, 0), 0o755, 0)
	b := mk(filepath.Join(dir, "b", "deeper"), time.Now(), 0o700, 1234)
	base := digests(a)
	if got := digests(b); got != base {
		t.Fatalf("the same content elsewhere, at other times, owners and modes: %v, want %v", got, base)
	}
	later := a
	later.epoch = a.epoch.Add(time.Second)
	if got := digests(later); got[0] == base[0] || got[1] == base[1] {
		t.Errorf("another SOURCE_DATE_EPOCH gives the same digests %v", got)
	}
	if err := os.WriteFile(b.sensorBin, []byte("escape-sensor binary, changed"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := digests(b); got[0] == base[0] || got[1] != base[1] {
		t.Errorf("a changed escape-sensor: digests %v, want a new daemon image and the same plane image as %v", got, base)
	}
}

// The daemon image holds what the agent and the doctor exec, at the paths
// they look for, every entry owned by root at SOURCE_DATE_EPOCH; its
// config names the entrypoint, labels and nothing else in its environment.
func TestDaemonImageContent(t *testing.T) {
	res, _ := builtImages(t)
	img := readImage(t, res.sensor)
	files := imageFiles(t, img)
	for _, want := range []string{sensorBin, "/opt/escape/bin/criu", "/opt/escape/criu/usr/sbin/criu",
		"/opt/escape/criu/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "/usr/bin/nsenter", "/usr/sbin/iptables-restore",
		"/usr/sbin/iptables", "/usr/sbin/runc", "/bin/sh", "/bin/sleep", xtablesDir + "/libxt_comment.so",
		xtablesDir + "/libxt_tcp.so", "/lib64/ld-linux-x86-64.so.2", "/tmp", "/var/lib/escape-agent"} {
		if _, ok := files[want]; !ok {
			t.Errorf("the daemon image lacks %s", want)
		}
	}
	// The wrapper is make deps' own, byte for byte (tools/deps.sh writes
	// /opt/escape/bin/criu on this machine).
	deps, err := os.ReadFile("/opt/escape/bin/criu")
	if err != nil {
		t.Fatal(err)
	}
	if got := files["/opt/escape/bin/criu"]; string(got.body) != string(deps) || got.hdr.Mode != 0o755 {
		t.Errorf("the image's CRIU wrapper (mode %o):\n%s\nwant make deps' /opt/escape/bin/criu:\n%s", got.hdr.Mode, got.body, deps)
	}
	for name, f := range files {
		if f.hdr.Uid != 0 || f.hdr.Gid != 0 || f.hdr.Uname != "" || !f.hdr.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: uid %d gid %d uname %q time %v: want root's, no names, time 0", name, f.hdr.Uid, f.hdr.Gid, f.hdr.Uname, f.hdr.ModTime)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if strings.Join(c.Entrypoint, " ") != sensorBin || c.User != "0:0" || len(c.Env) != 1 || !strings.HasPrefix(c.Env[0], "PATH=/opt/escape/bin:") {
		t.Errorf("daemon image config: entrypoint %v user %q env %v", c.Entrypoint, c.User, c.Env)
	}
	checkLabels(t, cf, res.src)
}

func TestPlaneImageContent(t *testing.T) {
	res, _ := builtImages(t)
	img := readImage(t, res.plane)
	files := imageFiles(t, img)
	var regular []string
	for name, f := range files {
		if f.hdr.Typeflag == tar.TypeReg {
			regular = append(regular, name)
		}
	}
	sort.Strings(regular)
	if strings.Join(regular, " ") != "/etc/group /etc/passwd "+planeBin {
		t.Errorf("the plane image's files: %v, want escape-plane and the account files only", regular)
	}
	if f := files["/var/lib/escape-plane"]; f.hdr.Uid != planeUID || f.hdr.Mode != 0o700 {
		t.Errorf("/var/lib/escape-plane: uid %d mode %o, want the plane's user and 0700", f.hdr.Uid, f.hdr.Mode)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if c := cf.Config; c.User != "65532:65532" || strings.Join(c.Entrypoint, " ") != planeBin || strings.Join(c.Env, " ") != planePath {
		t.Errorf("plane image config: user %q entrypoint %v env %v", c.User, c.Entrypoint, c.Env)
	}
	if !strings.Contains(string(files["/etc/passwd"].body), "escape:x:65532:65532:") {
		t.Errorf("/etc/passwd lacks the plane's user: %s", files["/etc/passwd"].body)
	}
	checkLabels(t, cf, res.src)
}

func checkLabels(t *testing.T, cf *v1.ConfigFile, src source) {
	t.Helper()
	l := cf.Config.Labels
	for k, want := range map[string]string{"org.opencontainers.image.version": src.Version, "org.opencontainers.image.revision": src.Revision,
		"org.opencontainers.image.created": "1970-01-01T00:00:00Z"} {
		if l[k] != want {
			t.Errorf("label %s = %q, want %q", k, l[k], want)
		}
	}
	if l["org.opencontainers.image.title"] == "" || l["org.opencontainers.image.source"] == "" {
		t.Errorf("labels %v: want a title and a source", l)
	}
	if !cf.Created.Time.Equal(time.Unix(0, 0)) {
		t.Errorf("created %v, want SOURCE_DATE_EPOCH (0)", cf.Created)
	}
}

type imageFile struct {
	hdr  *tar.Header
	body []byte
}

// readImage reads an image back from the OCI layout it was written to.
func readImage(t *testing.T, b built) v1.Image {
	t.Helper()
	p, err := layout.FromPath(b.Layout)
	if err != nil {
		t.Fatal(err)
	}
	h, err := v1.NewHash(b.Digest)
	if err != nil {
		t.Fatal(err)
	}
	img, err := p.Image(h)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// imageFiles is every entry of every layer by its absolute path, checking
// that each layer lists its entries sorted.
func imageFiles(t *testing.T, img v1.Image) map[string]imageFile {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]imageFile{}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		prev := ""
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			name := "/" + strings.TrimSuffix(hdr.Name, "/")
			if name <= prev {
				t.Errorf("layer %d: %s after %s: entries not sorted", i, name, prev)
			}
			prev = name
			body, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			out[name] = imageFile{hdr: hdr, body: body}
		}
		rc.Close()
	}
	return out
}

func TestSourceDateEpoch(t *testing.T) {
	env := func(v string, ok bool) func(string) (string, bool) {
		return func(string) (string, bool) { return v, ok }
	}
	if got, err := sourceDateEpoch(env("", false)); err != nil || got.Unix() != 0 {
		t.Errorf("unset: %v %v, want time 0", got, err)
	}
	if got, err := sourceDateEpoch(env("1700000000", true)); err != nil || got.Unix() != 1700000000 {
		t.Errorf("1700000000: %v %v", got, err)
	}
	for _, bad := range []string{"yesterday", "-1", "1.5"} {
		if _, err := sourceDateEpoch(env(bad, true)); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
			t.Errorf("%q: got %v, want an error naming SOURCE_DATE_EPOCH", bad, err)
		}
	}
}
