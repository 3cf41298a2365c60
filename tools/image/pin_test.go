package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/internal/modroot"
)

var testPins = map[string]pin{
	sensorRepo: {Repo: sensorRepo, Digest: "sha256:" + strings.Repeat("ab", 32), Source: "0123456789ab", Go: "go1.26.8", CRIU: "sha256:0123456789ab"},
	planeRepo:  {Repo: planeRepo, Digest: "sha256:" + strings.Repeat("cd", 32), Source: "0123456789ab-dirty", Go: "go1.26.8", CRIU: "sha256:0123456789ab"},
}

func TestRewritePinsChangesOnlyImageLines(t *testing.T) {
	in := "a: 1\n  # image: escape.local/escape-sensor:dev in a comment stays\n" +
		"        - name: x\n          image: escape.local/escape-sensor:dev\n" +
		"          image: escape.local/kubectl:v1.34.4   # not ours\n" +
		"    image:   escape.local/escape-plane@sha256:" + strings.Repeat("00", 32) + "   # old pin\nend"
	out, n, err := rewritePins([]byte(in), testPins)
	if err != nil || n != 2 {
		t.Fatalf("rewrite: %d lines, %v", n, err)
	}
	want := "a: 1\n  # image: escape.local/escape-sensor:dev in a comment stays\n        - name: x\n" +
		testPins[sensorRepo].line("          ") + "\n" +
		"          image: escape.local/kubectl:v1.34.4   # not ours\n" +
		testPins[planeRepo].line("    ") + "\nend"
	if string(out) != want {
		t.Fatalf("rewritten:\n%s\nwant:\n%s", out, want)
	}
	pins, err := parsePins(out)
	if err != nil || len(pins) != 2 || pins[0] != testPins[sensorRepo] || pins[1] != testPins[planeRepo] {
		t.Fatalf("parse back: %+v %v", pins, err)
	}
	again, _, err := rewritePins(out, testPins)
	if err != nil || !bytes.Equal(again, out) {
		t.Fatalf("a second rewrite changed the text: %v\n%s", err, again)
	}
	if _, _, err := rewritePins([]byte("image: escape.local/escape-plane:dev\n"), map[string]pin{sensorRepo: testPins[sensorRepo]}); err == nil ||
		!strings.Contains(err.Error(), "no image built for escape.local/escape-plane") {
		t.Errorf("a repository without a pin: %v", err)
	}
	if _, err := parsePins([]byte("x:\n  image: escape.local/escape-sensor:dev\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a tag instead of a digest: %v, want an error naming line 2", err)
	}
}

func TestPinManifestsRewritesFilesAtomically(t *testing.T) {
	dir := t.TempDir()
	orig := "kind: DaemonSet\n          image: escape.local/escape-sensor:dev\n"
	if err := os.WriteFile(filepath.Join(dir, "20-sensor.yaml"), []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00-other.yaml"), []byte("kind: Namespace\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := pinManifests(dir, testPins); err != nil || n != 1 {
		t.Fatalf("pin: %d, %v", n, err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "20-sensor.yaml"))
	if pins, err := parsePins(got); err != nil || len(pins) != 1 || pins[0] != testPins[sensorRepo] {
		t.Fatalf("pinned file %q: %+v %v", got, pins, err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "20-sensor.yaml")); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %o, want the file's own 0640", st.Mode().Perm())
	}
	if other, _ := os.ReadFile(filepath.Join(dir, "00-other.yaml")); string(other) != "kind: Namespace\n" {
		t.Errorf("a file without an image line changed: %q", other)
	}
	if _, err := pinManifests(t.TempDir(), testPins); err == nil {
		t.Error("a directory without image lines: want an error, not a silent success")
	}
}

// The manifests name ESCAPE's images by digest, as make image writes
// them: the DaemonSet's container the daemon image, the Deployment's the
// plane image, both built from the same source.
func TestManifestsPinImagesByDigest(t *testing.T) {
	root, err := modroot.Find()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]pin{}
	for file, repo := range map[string]string{"20-sensor.yaml": sensorRepo, "30-plane.yaml": planeRepo} {
		data, err := os.ReadFile(filepath.Join(root, pinnedDir, file))
		if err != nil {
			t.Fatal(err)
		}
		pins, err := parsePins(data)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(pins) != 1 || pins[0].Repo != repo {
			t.Fatalf("%s: pins %+v, want one of %s", file, pins, repo)
		}
		got[repo] = pins[0]
	}
	s, p := got[sensorRepo], got[planeRepo]
	if s.Source != p.Source || s.Go != p.Go || s.CRIU != p.CRIU || s.Digest == p.Digest {
		t.Errorf("the pins come from different builds: %+v and %+v (run make image)", s, p)
	}
}

// FuzzRewritePins: whatever the text, a rewrite keeps every line that is
// not an image: line of ours, replaces those it counts, and a second
// rewrite changes nothing.
func FuzzRewritePins(f *testing.F) {
	for _, seed := range []string{"", "image: escape.local/escape-sensor:dev\n", "  image: escape.local/escape-plane@sha256:00 # x\r\nk: v",
		"image: escape.local/escape-sensorx:1\n", "\n\n  image:\tescape.local/escape-plane\n", "image: escape.local/other\n"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, n, err := rewritePins(in, testPins)
		if err != nil {
			t.Fatalf("rewrite with both pins: %v", err)
		}
		a, b := bytes.SplitAfter(in, []byte("\n")), bytes.SplitAfter(out, []byte("\n"))
		if len(a) != len(b) {
			t.Fatalf("%d lines became %d", len(a), len(b))
		}
		changed := 0
		for i := range a {
			if imageLine.Match(bytes.TrimSuffix(a[i], []byte("\n"))) {
				changed++
				if pinnedLine.Find(bytes.TrimSuffix(b[i], []byte("\n"))) == nil {
					t.Fatalf("line %d %q became %q, not a pin", i+1, a[i], b[i])
				}
			} else if !bytes.Equal(a[i], b[i]) {
				t.Fatalf("line %d %q changed to %q", i+1, a[i], b[i])
			}
		}
		if changed != n {
			t.Fatalf("replaced %d lines, said %d", changed, n)
		}
		again, _, err := rewritePins(out, testPins)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("second rewrite: %v\n%q\n%q", err, out, again)
		}
	})
}

// TestManifestPinsMatchAFreshBuild: where this tree, this toolchain and
// make deps' CRIU are those the pins name, a build here must give the
// pinned digests (the build is reproducible across runs and machines).
// Where one of them moved, the pins are stale by design until the next
// make image, and the test says which input moved.
func TestManifestPinsMatchAFreshBuild(t *testing.T) {
	res, _ := builtImages(t)
	root, err := modroot.Find()
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"20-sensor.yaml", "30-plane.yaml"} {
		data, err := os.ReadFile(filepath.Join(root, pinnedDir, file))
		if err != nil {
			t.Fatal(err)
		}
		pins, err := parsePins(data)
		if err != nil || len(pins) != 1 {
			t.Fatalf("%s: %+v %v", file, pins, err)
		}
		old, fresh := pins[0], res.pins[pins[0].Repo]
		switch {
		case old.Source != fresh.Source || old.Go != fresh.Go || old.CRIU != fresh.CRIU:
			t.Logf("%s pins %s built from source %s, %s, criu %s; this tree builds from %s, %s, criu %s: "+
				"refresh with make image before loading the images (deploy/README.md, \"Image\")",
				file, old.Repo, old.Source, old.Go, old.CRIU, fresh.Source, fresh.Go, fresh.CRIU)
		case old.Digest != fresh.Digest:
			t.Errorf("%s pins %s@%s, but the same source, toolchain and CRIU build %s: the build is not reproducible",
				file, old.Repo, old.Digest, fresh.Digest)
		default:
			t.Logf("%s: the pinned %s is this tree's (%s)", file, old.Repo, old.Digest)
		}
		// What make image would write parses back to this build's pins.
		text, n, err := rewritePins(data, res.pins)
		if err != nil || n != 1 {
			t.Fatalf("%s: rewrite: %d lines, %v", file, n, err)
		}
		if again, err := parsePins(text); err != nil || len(again) != 1 || again[0] != fresh {
			t.Errorf("%s rewritten: %+v %v, want %+v", file, again, err, fresh)
		}
	}
}
