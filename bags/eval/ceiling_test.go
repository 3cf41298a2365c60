package eval

import (
	"context"
	"testing"
)

func TestExactBound(t *testing.T) {
	// Three attack sequences: "a" absent from B (free), "b" twice in the
	// attacks and once in B, "c" once in the attacks and 3 times in B.
	att := map[string]int{"a": 5, "b": 2, "c": 1}
	rep := map[string]int{"b": 1, "c": 3, "n": 96}
	got := exactBound(att, rep, 8, 100)
	want := map[float64]float64{0: 5.0 / 8, 0.01: 7.0 / 8, 0.05: 1, 0.10: 1}
	for _, p := range got {
		if p.TPR != want[p.FPR] {
			t.Fatalf("bound at FPR %v: %v, want %v (all %v)", p.FPR, p.TPR, want[p.FPR], got)
		}
	}
}

func TestCeilingSynthetic(t *testing.T) {
	seq := func(xs ...uint16) []uint16 { return xs }
	norm := seq(1, 2, 3, 1, 2, 3, 1, 2)
	d := &Dataset{
		Train: []Trace{{Name: "t0", Calls: norm}},
		// Split: A = even positions, B = odd positions.
		Valid: []Trace{
			{Name: "v0", Calls: seq(4, 5, 6, 4)}, // A
			{Name: "v1", Calls: seq(9, 9, 9, 9)}, // B, novel
			{Name: "v2", Calls: seq(7, 7, 7)},    // A
			{Name: "v3", Calls: seq(2, 3, 1, 2)}, // B, covered by training
		},
		Attack: []Trace{
			{Name: "Attack_Data_Master/X_1/d.txt", Family: "X", Calls: seq(8, 8, 8)},    // dev: ignored
			{Name: "Attack_Data_Master/X_2/a.txt", Family: "X", Calls: norm},            // = training trace
			{Name: "Attack_Data_Master/X_2/b.txt", Family: "X", Calls: seq(9, 9, 9, 9)}, // = B trace v1
			{Name: "Attack_Data_Master/X_2/c.txt", Family: "X", Calls: seq(4, 5, 6)},    // covered by A only
			{Name: "Attack_Data_Master/X_2/e.txt", Family: "X", Calls: seq(3, 2, 1)},    // unseen 2-grams
		},
	}
	c, err := Ceiling(context.Background(), d, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if c.Held != 4 || c.Rep != 2 {
		t.Fatalf("held %d rep %d", c.Held, c.Rep)
	}
	if len(c.DupNormal) != 1 || len(c.DupRep) != 1 || c.RepDupNormal != 0 {
		t.Fatalf("duplicates: normal %v, B %v, B=normal %d", c.DupNormal, c.DupRep, c.RepDupNormal)
	}
	// At FPR 0 the trace equal to v1 cannot be flagged: 3 of 4 (with 2 B
	// traces, every ceilingFPRs budget is 0 B traces).
	if c.ExactDR[0].FPR != 0 || c.ExactDR[0].TPR != 0.75 {
		t.Fatalf("exact bound at 0: %v", c.ExactDR[0])
	}
	tr, ta := c.Coverage[0], c.Coverage[1]
	// e.txt (3 2 1) has only known calls and the known bag {1,2,3}, but the
	// unseen 2-grams 3-2 and 2-1: covered for 1-grams and bags, not for all.
	if tr.Ref != "training" || tr.All != 1 || tr.Bags != 2 || tr.Grams[1] != 2 || tr.Grams[2] != 1 {
		t.Fatalf("training coverage %+v", tr)
	}
	if ta.All != 2 || ta.Grams[1] != 3 || ta.Grams[2] != 2 || tr.RepAll != 1 || ta.RepAll != 1 {
		t.Fatalf("training+A coverage %+v (training %+v)", ta, tr)
	}
	if got := c.NoveltyDR(ta.All); got != 0.5 {
		t.Fatalf("novelty bound %v", got)
	}
	if len(c.Covered) != 2 {
		t.Fatalf("covered groups %+v", c.Covered)
	}
	if _, err := Ceiling(context.Background(), d, 2, 3); err == nil {
		t.Fatal("no held-out attacks must be an error")
	}
}

// TestCeilingADFA pins the measured ceiling of the held-out split (runs
// 6-10 vs validation B); docs/bosc.md quotes these figures.
func TestCeilingADFA(t *testing.T) {
	d, err := LoadADFA(context.Background(), adfaRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Ceiling(context.Background(), d, 5, 10)
	if err != nil {
		t.Fatal(err)
	}
	if c.Held != 171 || c.Rep != 1500 {
		t.Fatalf("split sizes %d %d", c.Held, c.Rep)
	}
	if len(c.DupNormal) != 0 || len(c.DupRep) != 1 || c.RepDupNormal != 664 {
		t.Fatalf("duplicates: %d of training/A, %v of B, %d B=normal", len(c.DupNormal), c.DupRep, c.RepDupNormal)
	}
	for _, p := range c.ExactDR {
		if want := map[bool]float64{true: 170.0 / 171, false: 1}[p.FPR == 0]; p.TPR != want {
			t.Fatalf("exact bound at FPR %v: %v, want %v", p.FPR, p.TPR, want)
		}
	}
	ta := c.Coverage[1]
	if ta.All != 34 || ta.Bags != 44 || ta.Grams[6] != 34 || ta.RepBags != 856 || c.Coverage[0].All != 11 {
		t.Fatalf("coverage: training+A all %d bags %d 6-grams %d, B bags %d; training all %d",
			ta.All, ta.Bags, ta.Grams[6], ta.RepBags, c.Coverage[0].All)
	}
}
