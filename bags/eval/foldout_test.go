package eval

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func TestFoldAssignments(t *testing.T) {
	// Sessions of 2, 3, 2 over 9 traces: [0,2) [2,5) [5,7), tail 7, 8.
	bySession, byTrace, err := foldAssignments(9, []int{2, 3}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 0, 1, 1, 1, 0, 0, 0, 1}; !slices.Equal(bySession, want) {
		t.Fatalf("by session %v, want %v", bySession, want)
	}
	if want := []int{0, 1, 0, 1, 0, 1, 0, 1, 0}; !slices.Equal(byTrace, want) {
		t.Fatalf("by trace %v, want %v", byTrace, want)
	}
	if _, _, err := foldAssignments(9, []int{2}, 1); err == nil {
		t.Fatal("one fold leaves nothing out of the database: want an error")
	}
}

// TestFoldScores: a program run twice, in two traces of the same fold,
// is unseen once its fold leaves the database together; with the two
// traces in different folds, each sees the other (leave-one-out would
// too). That is the whole difference the session fold-out measures.
func TestFoldScores(t *testing.T) {
	cfg := Config{Window: 3, KNN: 1}
	train := traces([]uint16{1, 2, 3, 1, 2, 3})
	sibling := []uint16{7, 8, 9, 7, 8, 9}
	sel := traces(sibling, sibling, []uint16{1, 2, 3, 1, 2})
	ctx := context.Background()
	together, err := foldScores(ctx, train, sel, []int{0, 0, 1}, 2, cfg)
	if err != nil {
		t.Fatal(err)
	}
	apart, err := foldScores(ctx, train, sel, []int{0, 1, 0}, 2, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		near(t, "sibling left out with its twin: frac", together[i].Frac, 1)
		near(t, "sibling left out with its twin: cover pieces per call", together[i].Cover, 1)
		near(t, "sibling scored against its twin: frac", apart[i].Frac, 0)
		if apart[i].KNN > 1e-9 || together[i].KNN < 0.5 {
			t.Fatalf("knn distance apart %v together %v", apart[i].KNN, together[i].KNN)
		}
	}
	near(t, "training-like trace", together[2].Frac, 0)
	near(t, "training-like trace (other fold)", apart[2].Frac, 0)
}

// TestFoldCheck: hand-made scores where leaving siblings out raises A's
// scores, so the session-fold threshold rises and flags fewer B sessions.
func TestFoldCheck(t *testing.T) {
	sel := []float64{0, 0, 0, 0, 0, 0.5, 0, 0}        // leave-one-out: one odd trace
	sessFold := []float64{0, 0, 0, 0, 0, 0.9, 0.9, 0} // its twin too, once they leave together
	rep := []float64{0, 0, 0, 0.8, 0, 0, 0, 0}
	heldTr := []Trace{attackTrace("A_6", "a.txt", "A"), attackTrace("A_6", "b.txt", "A"), attackTrace("A_7", "a.txt", "A")}
	held := []float64{0.6, 0, 0.95}
	fc := foldCheck("v", sel, sessFold, sel, rep, held, heldTr, []int{2}, []SessionAgg{{Name: "max", K: 1}}, 0.2)
	if fc.Variant != "v" || len(fc.Rows) != 2 || fc.Rows[0].Unit != "trace" || fc.Rows[1].Unit != "max" {
		t.Fatalf("rows %+v", fc.Rows)
	}
	// Per trace, 20% of 8 traces allows one flag. Leave-one-out: threshold 0
	// (only 0.5 is above). Session folds: 0.9 appears twice, so the
	// threshold is 0.9.
	tr := fc.Rows[0]
	if tr.LOO != [2]float64{2.0 / 3, 1.0 / 8} || tr.TraceFold != tr.LOO {
		t.Fatalf("per trace LOO %v trace fold %v", tr.LOO, tr.TraceFold)
	}
	if tr.SessionFold != [2]float64{1.0 / 3, 0} {
		t.Fatalf("per trace session fold %v", tr.SessionFold)
	}
	// Pseudo-sessions of 2 traces: 20% of 4 allows no flag. Leave-one-out
	// maxima 0, 0, 0.5, 0 → threshold 0.5; session folds 0, 0, 0.9, 0.9 →
	// 0.9. The held-out runs have maxima 0.6 and 0.95, B's 0, 0.8, 0, 0.
	ss := fc.Rows[1]
	if ss.LOO != [2]float64{1, 0.25} || ss.SessionFold != [2]float64{0.5, 0} {
		t.Fatalf("sessions LOO %v session fold %v", ss.LOO, ss.SessionFold)
	}
}

// TestRunFoldCheck: the option runs end to end on a toy data set and
// reports one check per unsupervised +A-loo variant.
func TestRunFoldCheck(t *testing.T) {
	root := tinyADFA(t, append(tinyNormal, "Attack_Data_Master/Adduser_1/x.txt", "Attack_Data_Master/Adduser_6/x.txt")...)
	cfg := DefaultConfig(root)
	cfg.FoldCheck = 2
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, v := range AllVariants() {
		if v.Regime == LOOA && !v.Supervised {
			want++
		}
	}
	if len(r.FoldChecks) != want || want == 0 {
		t.Fatalf("%d fold checks, want %d", len(r.FoldChecks), want)
	}
	var b strings.Builder
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "FOLD-OUT THRESHOLD CHECK") {
		t.Fatal("report lacks the fold-out table")
	}
	cfg.FoldCheck = 1
	if _, err := Run(context.Background(), cfg); err == nil {
		t.Fatal("one fold: want an error")
	}
}
