package eval

import (
	"context"
	"math"
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
	if err := WriteFigures(r, t.TempDir()); err != nil {
		t.Fatal(err)
	}
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
