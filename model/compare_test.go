package model

import (
	"context"
	"testing"
)

// The guided policy should beat blind random migration where both have the
// same knowledge budget; checked with disjoint 95% intervals, not a margin.
func TestGuidedBeatsRandom(t *testing.T) {
	sc := DefaultScenarios()[:1]
	runs, err := ComparePolicies(context.Background(), sc, DefaultInterpretation(), append(DefaultCompareOptions(), WithTrials(3000), WithSimHorizon(30))...)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 4 {
		t.Fatalf("got %d runs, want static + 3 policies", len(runs))
	}
	by := map[string]*SimResult{}
	for _, r := range runs {
		by[r.Policy] = r.Result
	}
	_, gLo, _ := by["model-guided"].At(25)
	_, _, rHi := by["random"].At(25)
	if gLo <= rHi {
		t.Errorf("guided lower bound %.4f not above random upper bound %.4f at t=25", gLo, rHi)
	}
}
