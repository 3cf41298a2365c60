package eval

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/bags"
)

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-12 {
		t.Fatalf("%s = %.15g, want %.15g", what, got, want)
	}
}

func traces(calls ...[]uint16) []Trace {
	out := make([]Trace, len(calls))
	for i, c := range calls {
		out[i] = Trace{Name: "t", Calls: c}
	}
	return out
}

func TestSubBags(t *testing.T) {
	var got []bags.Bag
	for s := range subBags(bags.BagOf([]uint16{2, 1, 3, 1}), 4) {
		got = append(got, s)
	}
	// Dropping either 1 gives the same sub-multiset: 3 distinct, not 4.
	want := []bags.Bag{bags.BagOf([]uint16{1, 2, 3}), bags.BagOf([]uint16{1, 1, 3}), bags.BagOf([]uint16{1, 1, 2})}
	if !slices.Equal(got, want) {
		t.Fatalf("sub-bags %v, want %v", got, want)
	}
}

func TestSoftBag(t *testing.T) {
	db := NewRefDB(traces([]uint16{1, 2, 3}), 3)
	for _, c := range []struct {
		calls      []uint16
		soft, frac float64
	}{
		{[]uint16{1, 2, 3}, 0, 0},         // seen
		{[]uint16{1, 2, 4}, 0.5, 1},       // {1,2,4} is one swap from {1,2,3}
		{[]uint16{5, 6, 7}, 1, 1},         // no known bag within one swap
		{[]uint16{3, 1, 2, 4}, 0.25, 0.5}, // {1,2,3} seen, {1,2,4} one swap
		{[]uint16{1, 2}, 0, 0},            // no window
	} {
		s := db.Score(c.calls, false)
		near(t, "soft", s.Soft, c.soft)
		near(t, "frac", s.Frac, c.frac)
	}
	// Leave-one-out: the trace's own bags leave the sub-multiset index too.
	if s := NewRefDB(traces([]uint16{1, 2, 3}, []uint16{1, 2, 4}), 3).Score([]uint16{1, 2, 4}, true); s.Soft != 0.5 {
		t.Fatalf("left-out {1,2,4} beside {1,2,3}: soft %v, want 0.5", s.Soft)
	}
	if s := NewRefDB(traces([]uint16{1, 2, 4}, []uint16{7, 8, 9}), 3).Score([]uint16{1, 2, 4}, true); s.Soft != 1 || s.Frac != 1 {
		t.Fatalf("left-out sole source of {1,2,4}: %+v, want soft 1", s)
	}
	// A bag present twice in the same left-out trace and elsewhere stays.
	if s := NewRefDB(traces([]uint16{1, 2, 3, 1, 2, 3}, []uint16{3, 2, 1}), 3).Score([]uint16{1, 2, 3, 1, 2, 3}, true); s.Soft != 0 || s.Frac != 0 {
		t.Fatalf("bag also in another reference: %+v", s)
	}
}

func TestBagRarity(t *testing.T) {
	// Four windows, all the bag {1,2,3}: N = 4, |B| = 1, so p = (f+1)/6.
	db := NewRefDB(traces([]uint16{1, 2, 3, 1, 2, 3}), 3)
	s := db.Score([]uint16{1, 2, 3, 4}, false) // {1,2,3} f=4, {2,3,4} unseen
	near(t, "bag rarity", s.BagRarity, (math.Log(6.0/5)+math.Log(6))/2)
	near(t, "bag rarity max (trace shorter than Span)", s.BagRarityMax, s.BagRarity)
	// Leave-one-out keeps the full database's constants: an unseen bag of
	// a left-out reference weighs exactly what an outsider's unseen bag does.
	db2 := NewRefDB(traces([]uint16{1, 2, 3}, []uint16{4, 5, 6}), 3)
	if a, b := db2.Score([]uint16{1, 2, 3}, true).BagRarity, db2.Score([]uint16{7, 8, 9}, false).BagRarity; a != b || a != math.Log(5) {
		t.Fatalf("unseen rarity: left-out %v, outsider %v, want ln 5", a, b)
	}
}

func TestMaxSpanMean(t *testing.T) {
	x := []float64{1, 5, 2, 8, 1}
	near(t, "span 2", maxSpanMean(x, 2), 5)
	near(t, "span 3", maxSpanMean(x, 3), 5)
	near(t, "span > len", maxSpanMean(x, 10), 3.4)
	near(t, "empty", maxSpanMean(nil, 3), 0)
}

func TestGramRarity(t *testing.T) {
	// Two 6-grams, each seen once: p = (c+1)/(2+2+1).
	db := NewRefDB(traces([]uint16{1, 2, 3, 4, 5, 6, 7}), 3)
	near(t, "seen 6-gram", db.Score([]uint16{1, 2, 3, 4, 5, 6}, false).GramRarity, -math.Log(2.0/5))
	s := db.Score([]uint16{9, 9, 9, 9, 9, 9, 2, 3, 4, 5, 6, 7}, false) // 7 6-grams, the last one seen
	near(t, "mixed", s.GramRarity, (6*math.Log(5)-math.Log(2.0/5))/7)
	near(t, "stide", s.Stide, 6.0/7)
}

func TestNGramLM(t *testing.T) {
	// Reference 1 2 1 2 1 3: unigrams 1:3 2:2 3:1 (N 6, V 3); bigrams 12:2
	// 21:2 13:1; trigrams 121:2 212:1 213:1; 4-grams 1212 2121 1213.
	db := NewRefDB(traces([]uint16{1, 2, 1, 2, 1, 3}), 3)
	p := []float64{
		4.0 / 10, // 1: unigram (3+1)/(6+3+1)
		2.0 / 3,  // 2 after 1: c(12)/c(1)
		2.0 / 2,  // 1 after 1 2: c(121)/c(12)
		1.0 / 2,  // 3 after 1 2 1: c(1213)/c(121)
	}
	want := 0.0
	for _, x := range p {
		want -= math.Log(x) / 4
	}
	near(t, "seen path", db.Score([]uint16{1, 2, 1, 3}, false).LM, want)
	p = []float64{
		2.0 / 10,              // 3: unigram (1+1)/10
		0.4 * 4 / 10,          // 1 after 3: 31 unseen, back off to the unigram
		0.4 * 2 / 3,           // 2 after 3 1: 312 unseen, c(12)/c(1)
		0.4 * 0.4 * 0.4 * 0.3, // 2 after 3 1 2: 3122, 122, 22 unseen; unigram (2+1)/10
	}
	want = 0
	for _, x := range p {
		want -= math.Log(x) / 4
	}
	near(t, "backoff path", db.Score([]uint16{3, 1, 2, 2}, false).LM, want)
	// Left out, the only reference is empty: every call backs off to the
	// add-one unigram 1/10 of the full database's N and V.
	want = 0
	pen := 1.0
	for range 6 {
		want -= math.Log(pen*0.1) / 6
		pen *= Backoff
	}
	near(t, "leave-one-out", db.Score([]uint16{1, 2, 1, 2, 1, 3}, true).LM, want)
	if s := db.Score(nil, false); s.LM != 0 {
		t.Fatalf("empty trace LM %v", s.LM)
	}
}

func TestKNNLeaveOneOutIDF(t *testing.T) {
	tail := rep([]uint16{40, 41, 42}, 60)
	r0 := append(append([]uint16(nil), progA...), tail...)
	// Left out, r0's tail bags must weigh like bags nobody holds: the same
	// score as an outsider r0 against references with no tail (r1 = progA,
	// plus a trace sharing nothing, so N is the same).
	loo := NewKNN(traces(r0, progA), 3, 1, false).Score(r0, 0)
	out := NewKNN(traces(progB, progA), 3, 1, false).Score(r0, -1)
	if math.Abs(loo-out) > 1e-6 || loo <= 0 {
		t.Fatalf("leave-one-out %v, outsider %v", loo, out)
	}
}

func TestLogit(t *testing.T) {
	// Symmetric data: the intercept is 0 and the slope w solves the
	// stationarity condition λw = σ(−w).
	beta := newtonLogit([][]float64{{-1, 1}, {1, 1}}, []float64{0, 1}, []float64{0.5, 0.5}, 0.1)
	w := beta[0]
	near(t, "intercept", beta[1], 0)
	near(t, "stationarity", 0.1*w, 1/(1+math.Exp(w)))
	// A fitted combiner ranks separable attacks above every normal trace,
	// whichever channel carries the signal.
	var normal, attack []Scores
	for i := range 20 {
		normal = append(normal, Scores{KNN: float64(i%5) / 10, LM: float64(i % 3)})
		attack = append(attack, Scores{KNN: 0.6 + float64(i%4)/10, LM: float64(i % 3)})
	}
	f := fitLogit([]Channel{knn, lm}, normal, attack)
	if a := AUC(pick(normal, f), pick(attack, f)); a != 1 {
		t.Fatalf("separable AUC %v", a)
	}
	runs := make([]int, len(attack))
	for i := range runs {
		runs[i] = 1 + i%5
	}
	ns, as := crossLogit([]Channel{knn, lm}, normal, attack, runs, 5)
	if len(ns) != 20 || len(as) != 20 || AUC(ns, as) != 1 {
		t.Fatalf("cross-fitted: %d %d AUC %v", len(ns), len(as), AUC(ns, as))
	}
}

func TestSelectVariants(t *testing.T) {
	vs, err := selectVariants([]string{"knn-bosc+A-loo", "bosc-frac"})
	if err != nil || len(vs) != 2 || vs[0].Name != "bosc-frac" || vs[1].Name != "knn-bosc+A-loo" {
		t.Fatalf("%v %v", vs, err)
	}
	if _, err := selectVariants([]string{"nope"}); err == nil {
		t.Fatal("unknown variant accepted")
	}
	if vs, _ := selectVariants(nil); len(vs) != len(AllVariants()) {
		t.Fatal("empty selection must mean all")
	}
}

func TestSplitVariantNames(t *testing.T) {
	for in, want := range map[string][]string{
		"":                         nil,
		"cover":                    {"cover"},
		"rank(lm,knn)+A-loo,cover": {"rank(lm,knn)+A-loo", "cover"},
		" bosc-frac , rank(bosc,6gram,knn)+A-loo,": {"bosc-frac", "rank(bosc,6gram,knn)+A-loo"},
		"knn-2class+A-loo (sup.),logit(6)+A-loo":   {"knn-2class+A-loo (sup.)", "logit(6)+A-loo"},
		"a),b":                                     {"a)", "b"},
	} {
		if got := SplitVariantNames(in); !slices.Equal(got, want) {
			t.Errorf("SplitVariantNames(%q) = %q, want %q", in, got, want)
		}
	}
	// Every listed name survives a round trip through the joined list.
	if got := SplitVariantNames(strings.Join(VariantNames(), ",")); !slices.Equal(got, VariantNames()) {
		t.Fatalf("round trip of all names: %q", got)
	}
}
