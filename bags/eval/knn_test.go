package eval

import (
	"math"
	"testing"
)

func rep(pattern []uint16, n int) []uint16 {
	var out []uint16
	for len(out) < n {
		out = append(out, pattern...)
	}
	return out[:n]
}

// Hand-made programs: two cyclic call patterns of period 4 and 5.
var (
	progA    = rep([]uint16{3, 4, 5, 6}, 200)
	progB    = rep([]uint16{11, 12, 13, 14, 15}, 200)
	handRefs = []Trace{{Name: "a", Calls: progA}, {Name: "b", Calls: progB}}
)

func TestKNNIdenticalAndNovel(t *testing.T) {
	m := NewKNN(handRefs, 3, 1, false)
	if d := m.Score(progA, -1); math.Abs(d) > 1e-6 {
		t.Fatalf("trace identical to a reference scores %v, want 0", d)
	}
	// Same program, shorter run: same bag mix, so still (nearly) 0.
	if d := m.Score(progA[:120], -1); d > 0.01 {
		t.Fatalf("shorter run of a reference program scores %v", d)
	}
	// Mixed trace: half program A, half unseen calls.
	mixed := append(append([]uint16(nil), progA[:100]...), rep([]uint16{40, 41, 42}, 100)...)
	novel := rep([]uint16{40, 41, 42, 43}, 200)
	dm, dn := m.Score(mixed, -1), m.Score(novel, -1)
	if !(dm > 0.1 && dm < dn) {
		t.Fatalf("mixed %v should lie strictly between 0 and novel %v", dm, dn)
	}
	if dn != 1 {
		t.Fatalf("a trace sharing no bag with any reference scores %v, want 1", dn)
	}
	// Leave-one-out: program A scored without itself has no close neighbour.
	if d := m.Score(progA, 0); d != 1 {
		t.Fatalf("leave-one-out score of the only A trace %v, want 1", d)
	}
	// The nearest neighbour is per program: adding program B to the
	// references does not make program A novel (unlike a pooled share).
	if d := NewKNN(handRefs[:1], 3, 1, false).Score(progA, -1); math.Abs(d) > 1e-6 {
		t.Fatalf("single-reference score %v", d)
	}
	// k=2 averages over both programs: A is far from B.
	if d := NewKNN(handRefs, 3, 2, false).Score(progA, -1); math.Abs(d-0.5) > 1e-6 {
		t.Fatalf("k=2 score %v, want 0.5 (distance 0 and 1)", d)
	}
	if d := m.Score([]uint16{1, 2}, -1); d != 0 {
		t.Fatalf("trace without a window scores %v", d)
	}
}

func TestRefDBLeaveOneOut(t *testing.T) {
	db := NewRefDB(handRefs, 3)
	if s := db.Score(progA, false); s.Frac != 0 || s.Stide != 0 {
		t.Fatalf("reference trace scored as seen: %+v", s)
	}
	// Left out, program A's windows and 6-grams were seen only in itself.
	if s := db.Score(progA, true); s.Frac != 1 || s.Stide != 1 {
		t.Fatalf("leave-one-out: %+v, want everything unseen", s)
	}
	// Two copies of A: leaving one out keeps the other's counts.
	db2 := NewRefDB(append(handRefs, Trace{Name: "a2", Calls: progA}), 3)
	if s := db2.Score(progA, true); s.Frac != 0 || s.Stide != 0 {
		t.Fatalf("duplicate reference left out: %+v, want seen", s)
	}
	half := append(append([]uint16(nil), progA[:100]...), rep([]uint16{40, 41, 42}, 100)...)
	s := db.Score(half, false)
	if s.Frac < 0.4 || s.Frac > 0.6 || s.Surprisal <= db.Score(progA, false).Surprisal {
		t.Fatalf("half-novel trace: %+v", s)
	}
}

func TestRankScore(t *testing.T) {
	normal := []Scores{{Frac: 0.1, KNN: 0.2}, {Frac: 0.2, KNN: 0.1}, {Frac: 0.3, KNN: 0.3}, {Frac: 0.4, KNN: 0.4}}
	f := rankScore([]Channel{frac, knn}, normal)
	if got := f(Scores{Frac: 1, KNN: 1}); got != 1 {
		t.Fatalf("above every normal: %v", got)
	}
	if got := f(Scores{Frac: 0, KNN: 0}); got != 0 {
		t.Fatalf("below every normal: %v", got)
	}
	if got := f(Scores{Frac: 0.2, KNN: 0.45}); got != (0.5+1)/2 {
		t.Fatalf("mixed: %v", got)
	}
}

func TestAttackSplit(t *testing.T) {
	ts := []Trace{{Name: "Attack_Data_Master/Adduser_1/UAD-Adduser-1-1.txt"}, {Name: "Attack_Data_Master/Adduser_10/x.txt"},
		{Name: "Attack_Data_Master/Hydra_FTP_5/x.txt"}, {Name: "Attack_Data_Master/Hydra_FTP_6/x.txt"}}
	dev, held := splitAttacks(ts, 5)
	if len(dev) != 2 || len(held) != 2 || attackRun(held[0]) != 10 || attackRun(dev[1]) != 5 {
		t.Fatalf("dev %v held %v", dev, held)
	}
}
