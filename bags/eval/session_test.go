package eval

import (
	"math"
	"reflect"
	"testing"
)

func TestPseudoSessions(t *testing.T) {
	got := PseudoSessions(10, []int{3, 2})
	want := [][2]int{{0, 3}, {3, 5}, {5, 8}, {8, 10}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PseudoSessions(10, [3 2]) = %v, want %v", got, want)
	}
	// The tail of 1 trace is shorter than the next size (2): dropped.
	if got := PseudoSessions(9, []int{3, 2}); !reflect.DeepEqual(got, want[:3]) {
		t.Fatalf("PseudoSessions(9, [3 2]) = %v, want %v", got, want[:3])
	}
	if got := PseudoSessions(5, nil); len(got) != 0 {
		t.Fatalf("no sizes must give no sessions, got %v", got)
	}
	if got := PseudoSessions(5, []int{0}); len(got) != 0 {
		t.Fatalf("a zero size must stop, got %v", got)
	}
}

func TestSessionAgg(t *testing.T) {
	xs := []float64{0.1, 0.9, 0.3, 0.5}
	if got := (SessionAgg{K: 1}).Score(xs); got != 0.9 {
		t.Fatalf("max %v", got)
	}
	if got := (SessionAgg{K: 3}).Score(xs); math.Abs(got-(0.9+0.5+0.3)/3) > 1e-12 {
		t.Fatalf("top-3 mean %v", got)
	}
	if got := (SessionAgg{K: 3}).Score(xs[:2]); math.Abs(got-0.5) > 1e-12 {
		t.Fatalf("top-3 mean of 2 traces must average both, got %v", got)
	}
	if xs[0] != 0.1 || xs[1] != 0.9 {
		t.Fatal("Score must not reorder its input")
	}
	if got := (SessionAgg{K: 1}).Score(nil); got != 0 {
		t.Fatalf("empty session %v", got)
	}
}

func attackTrace(run, name string, fam string) Trace {
	return Trace{Name: "Attack_Data_Master/" + run + "/" + name, Family: fam}
}

func TestRunSizesAndGroups(t *testing.T) {
	ts := []Trace{
		attackTrace("A_1", "x.txt", "A"), attackTrace("A_1", "y.txt", "A"),
		attackTrace("A_2", "x.txt", "A"),
		attackTrace("B_1", "x.txt", "B"), attackTrace("B_1", "y.txt", "B"), attackTrace("B_1", "z.txt", "B"),
	}
	if got := RunSizes(ts); !reflect.DeepEqual(got, []int{2, 1, 3}) {
		t.Fatalf("RunSizes %v", got)
	}
	g, f := runGroups(ts)
	if !reflect.DeepEqual(g, [][]int{{0, 1}, {2}, {3, 4, 5}}) || !reflect.DeepEqual(f, []string{"A", "A", "B"}) {
		t.Fatalf("runGroups %v %v", g, f)
	}
}

// TestSessionView: one held-out run has a single very anomalous process
// among ordinary ones. Per trace it is one hit in three; as a session under
// the max it is caught, and the normal pseudo-sessions (no such process)
// are not.
func TestSessionView(t *testing.T) {
	var normal []float64
	for i := range 40 {
		normal = append(normal, float64(i%5)/10) // 0..0.4
	}
	held := []Trace{
		attackTrace("A_6", "a.txt", "A"), attackTrace("A_6", "b.txt", "A"), attackTrace("A_6", "c.txt", "A"),
		attackTrace("A_7", "a.txt", "A"), attackTrace("A_7", "b.txt", "A"),
	}
	heldS := []float64{0.1, 0.95, 0.2, 0.0, 0.1} // run 6 has one odd process, run 7 none
	dev := []Trace{attackTrace("A_1", "a.txt", "A"), attackTrace("A_1", "b.txt", "A")}
	devS := []float64{0.9, 0.3}
	in := sessionInput{sel: normal, rep: normal, devSel: normal, devAtt: devS, held: heldS,
		devTraces: dev, heldTraces: held, sizes: []int{3, 2}, target: 0.05}
	rs := sessionView(in, []SessionAgg{{Name: "max", K: 1}, {Name: "top3-mean", K: 3}})
	if len(rs) != 2 {
		t.Fatalf("%d results", len(rs))
	}
	mx := rs[0]
	if mx.Held != 2 || mx.Dev != 1 || mx.Rep != 16 || mx.Sel != 16 {
		t.Fatalf("session counts held %d dev %d rep %d sel %d", mx.Held, mx.Dev, mx.Rep, mx.Sel)
	}
	// Pseudo-sessions of 3 and 2 over 0,.1,.2,.3,.4 repeating: max is at most 0.4.
	if mx.Threshold > 0.4+1e-12 || mx.HeldDR != 0.5 || mx.HeldFPR != 0 {
		t.Fatalf("max: threshold %v DR %v FPR %v", mx.Threshold, mx.HeldDR, mx.HeldFPR)
	}
	if mx.FamilyRuns["A"] != 2 || mx.FamilyDetected["A"] != 1 {
		t.Fatalf("per family %v / %v", mx.FamilyDetected, mx.FamilyRuns)
	}
	if mx.DevDR5 != 1 {
		t.Fatalf("dev run (max 0.9) must be caught, DR %v", mx.DevDR5)
	}
	// top-3 mean of run 6 is (0.95+0.2+0.1)/3 ≈ 0.417: above every normal
	// pseudo-session's top-3 mean (at most (0.4+0.3+0.2)/3 = 0.3).
	if rs[1].HeldDR != 0.5 {
		t.Fatalf("top3-mean DR %v", rs[1].HeldDR)
	}
}
