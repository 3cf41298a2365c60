package eval

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var documentedAUC = map[string]float64{
	"bosc-frac": 0.776, "cover": 0.800, "cover+A-loo": 0.857, "logit(5)+A-loo": 0.868, "logit(6)+A-loo": 0.873,
}

// TestRunSmall runs the whole pipeline on ADFA-LD with a minimal grid;
// the full evaluation is `escape-sensor eval`.
func TestRunSmall(t *testing.T) {
	root := adfaRoot(t)
	cfg := DefaultConfig(root)
	cfg.Windows = []int{10}
	cfg.Ceiling = true
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range r.Variants {
		t.Log(v)
		// The session view sits beside the per-trace figures: 15 held-out
		// runs and 15 dev runs (5 per family) against the pseudo-sessions
		// of A and B.
		if len(v.Sessions) != len(DefaultSessionAggs()) {
			t.Fatalf("%s: %d session results", v.Name, len(v.Sessions))
		}
		for _, s := range v.Sessions {
			if s.Held != 15 || s.Dev != 15 || s.Rep < 100 || s.Sel < 50 {
				t.Fatalf("%s %s: sessions held %d dev %d rep %d sel %d", v.Name, s.Agg, s.Held, s.Dev, s.Rep, s.Sel)
			}
		}
		// The figures docs/bosc.md quotes; the run is deterministic.
		if want, ok := documentedAUC[v.Name]; ok && math.Abs(v.AUC-want) > 0.001 {
			t.Fatalf("%s per-trace AUC %.4f, documented %.3f", v.Name, v.AUC, want)
		}
	}
	if r.Ceiling == nil || r.Ceiling.Held != r.Held {
		t.Fatalf("ceiling %+v for %d held-out traces", r.Ceiling, r.Held)
	}
	figs := t.TempDir()
	if err := WriteFigures(r, figs); err != nil {
		t.Fatal(err)
	}
	checkFigures(t, figs, "roc", "sweep_dr")
	var b strings.Builder
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PER-TRACE CEILING", "SESSION VIEW (not per trace), aggregate max", "| bosc-frac |"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("report lacks %q", want)
		}
	}
}

// checkFigures checks that each named figure is a whole PNG and SVG and
// that no temporary file of the atomic writes is left in dir.
func checkFigures(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n+".png"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s.png: %v", n, err)
		}
		svg, err := os.ReadFile(filepath.Join(dir, n+".svg"))
		if err != nil || !bytes.Contains(svg, []byte("<svg")) || !bytes.HasSuffix(bytes.TrimSpace(svg), []byte("</svg>")) {
			t.Fatalf("%s.svg is not a whole SVG (%v)", n, err)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("temporary file left: %s", e.Name())
		}
	}
}
