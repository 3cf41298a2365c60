package eval

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/escape-mtd/escape/internal/datasets"
)

// adfaRoot finds ADFA-LD beside the repository, or skips saying where it looked.
func adfaRoot(t testing.TB) string {
	t.Helper()
	p, err := datasets.Path("adfa-ld", "Training_Data_Master")
	if err != nil {
		t.Skip(err)
	}
	return filepath.Dir(p)
}

func TestMetrics(t *testing.T) {
	n := []float64{0, 1, 2, 3}
	a := []float64{2, 4, 5, 6}
	// pairs: a=2 beats 0,1 and ties 2 -> 2.5; others beat all 4 -> 12; /16
	if got := AUC(n, a); math.Abs(got-14.5/16) > 1e-12 {
		t.Fatalf("AUC %v", got)
	}
	if AUC(n, n) != 0.5 {
		t.Fatal("identical distributions must give 0.5")
	}
	if th := ThresholdAtFPR(n, 0.25); th != 2 || Rate(n, th) != 0.25 {
		t.Fatalf("threshold at 25%%: %v (rate %v)", th, Rate(n, th))
	}
	if th := ThresholdAtFPR(n, 0); Rate(n, th) != 0 {
		t.Fatalf("threshold at 0%%: %v", th)
	}
	if dr := DRAtFPR(n, a, 0.25); dr != 0.75 {
		t.Fatalf("DR at 25%% FPR %v", dr)
	}
	roc := ROC(n, a)
	if roc[0] != (ROCPoint{}) || roc[len(roc)-1] != (ROCPoint{1, 1}) {
		t.Fatalf("ROC ends %v %v", roc[0], roc[len(roc)-1])
	}
}

// TestADFASubset trains on a slice of ADFA-LD and checks sanity bounds; the
// full evaluation is `escape-sensor eval`, not a unit test.
func TestADFASubset(t *testing.T) {
	root := adfaRoot(t)
	ctx := context.Background()
	d, err := LoadADFA(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Train) != 833 || len(d.Valid) != 3000 || len(d.Attack) == 0 {
		t.Fatalf("dataset sizes %d %d %d", len(d.Train), len(d.Valid), len(d.Attack))
	}
	m, err := TrainModel(ctx, d.Train, 10, 1000)
	if err != nil {
		t.Fatal(err)
	}
	// Every training trace scores zero mismatches against its own database.
	for _, tr := range d.Train[:50] {
		if s := m.Score(tr.Calls); s.Mismatches != 0 || s.EpochMax != 0 {
			t.Fatalf("%s: %d mismatches on training data", tr.Name, s.Mismatches)
		}
	}
	var normal, attack []float64
	for _, tr := range d.Valid[:400] {
		normal = append(normal, m.Score(tr.Calls).Frac)
	}
	for _, tr := range d.Attack[:100] {
		attack = append(attack, m.Score(tr.Calls).Frac)
	}
	auc := AUC(normal, attack)
	t.Logf("subset bosc-frac AUC %.3f", auc)
	if auc < 0.6 || auc > 0.99 {
		t.Fatalf("subset AUC %.3f outside sanity bounds [0.6, 0.99]", auc)
	}
}
