package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

// pin is what an image: line of the manifests records: the image by
// digest, and the inputs it was built from, so that a reader (and the
// test) can tell whether the tree at hand builds that digest.
type pin struct {
	Repo   string
	Digest string
	// Source is the version (source.Version), Go the toolchain, CRIU the
	// CRIU layer's diff id (short): together they decide the digest.
	Source, Go, CRIU string
}

func (p pin) line(indent string) string {
	return fmt.Sprintf(`%simage: %s@%s   # make image: source %s, %s, criu %s (deploy/README.md, "Image")`,
		indent, p.Repo, p.Digest, p.Source, p.Go, p.CRIU)
}

var (
	// imageLine is an image: line naming one of ESCAPE's repositories,
	// whatever follows the name.
	imageLine = regexp.MustCompile(`^(\s*)image:\s+(escape\.local/escape-(?:sensor|plane))\b(.*)$`)
	// pinnedLine is what pin.line writes.
	pinnedLine = regexp.MustCompile(`^\s*image: (escape\.local/escape-(?:sensor|plane))@(sha256:[0-9a-f]{64})   # make image: source ([0-9a-f]{12}(?:-dirty)?), (go[0-9][^,\s]*), criu (sha256:[0-9a-f]{12}) \(deploy/README\.md, "Image"\)$`)
)

// rewritePins replaces every image: line of text that names a repository
// of pins by its pin, and leaves every other byte as it was. It returns
// how many lines it replaced.
func rewritePins(text []byte, pins map[string]pin) ([]byte, int, error) {
	lines := bytes.SplitAfter(text, []byte("\n"))
	n := 0
	for i, l := range lines {
		body, nl := bytes.CutSuffix(l, []byte("\n"))
		m := imageLine.FindSubmatch(body)
		if m == nil {
			continue
		}
		p, ok := pins[string(m[2])]
		if !ok {
			return nil, 0, fmt.Errorf("line %d: no image built for %s", i+1, m[2])
		}
		out := p.line(string(m[1]))
		if nl {
			out += "\n"
		}
		lines[i] = []byte(out)
		n++
	}
	return bytes.Join(lines, nil), n, nil
}

// parsePins reads the pins of text's image: lines for ESCAPE's
// repositories. A line that names one of them but is not a pin is an
// error: the manifests name the images by digest, or not at all.
func parsePins(text []byte) ([]pin, error) {
	var out []pin
	for i, l := range bytes.Split(text, []byte("\n")) {
		if imageLine.Find(l) == nil {
			continue
		}
		m := pinnedLine.FindSubmatch(l)
		if m == nil {
			return nil, fmt.Errorf("line %d: %q does not pin an image by digest as make image writes it", i+1, bytes.TrimSpace(l))
		}
		out = append(out, pin{Repo: string(m[1]), Digest: string(m[2]), Source: string(m[3]), Go: string(m[4]), CRIU: string(m[5])})
	}
	return out, nil
}

// pinManifests rewrites the image: lines of every *.yaml in dir. Each
// file is replaced atomically, and only if it changed.
func pinManifests(dir string, pins map[string]pin) (int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return 0, err
	}
	sort.Strings(files)
	total := 0
	for _, f := range files {
		old, err := os.ReadFile(f)
		if err != nil {
			return total, err
		}
		text, n, err := rewritePins(old, pins)
		if err != nil {
			return total, fmt.Errorf("pin %s: %w", f, err)
		}
		total += n
		if n == 0 || bytes.Equal(old, text) {
			continue
		}
		st, err := os.Stat(f)
		if err != nil {
			return total, err
		}
		if err := atomicfile.WriteFile(f, text, st.Mode().Perm()); err != nil {
			return total, fmt.Errorf("pin %s: %w", f, err)
		}
	}
	if total == 0 {
		return 0, fmt.Errorf("pin: no image: line of %s or %s in %s", sensorRepo, planeRepo, dir)
	}
	return total, nil
}
