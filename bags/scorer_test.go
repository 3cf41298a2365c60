package bags

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// pushAll feeds calls to a fresh Windower of window w and epoch e and
// returns deep copies of its epochs, the final partial one included.
func pushAll(t testing.TB, w, e int, calls []uint16) []Epoch {
	t.Helper()
	x, err := NewWindower(w, e)
	if err != nil {
		t.Fatal(err)
	}
	var out []Epoch
	keep := func(ep Epoch) {
		out = append(out, Epoch{Windows: ep.Windows, Bags: append([]BagCount(nil), ep.Bags...),
			Order: append([]uint32(nil), ep.Order...)})
	}
	for _, c := range calls {
		if ep, ok := x.Push(c); ok {
			keep(ep)
		}
	}
	if ep, ok := x.Flush(); ok {
		keep(ep)
	}
	return out
}

func repeat(seq []uint16, n int) []uint16 {
	var s []uint16
	for i := 0; i < n; i++ {
		s = append(s, seq...)
	}
	return s
}

func TestWindowerOrderNamesEachWindowsBag(t *testing.T) {
	calls := []uint16{1, 2, 1, 3, 1, 2}
	eps := pushAll(t, 2, 100, calls)
	if len(eps) != 1 {
		t.Fatalf("%d epochs", len(eps))
	}
	e := eps[0]
	if len(e.Order) != int(e.Windows) || e.Windows != 5 {
		t.Fatalf("order %v for %d windows", e.Order, e.Windows)
	}
	for i, o := range e.Order {
		if want := BagOf(calls[i : i+2]); e.Bags[o].Bag != want {
			t.Errorf("window %d: order names %v, want %v", i, e.Bags[o].Bag, want)
		}
	}
}

// The sequence model's surprise, by hand: W=1 (a bag is one call), trained
// on "1 2 3" four times in one epoch (windows 1 2 3 1 2 3 ...: N=12, V=3).
func TestLMSurpriseExactValues(t *testing.T) {
	p := NewProfile(WithWindow(1), WithSequence(true))
	for _, e := range pushAll(t, 1, 1000, repeat([]uint16{1, 2, 3}, 4)) {
		if _, err := p.Train(e); err != nil {
			t.Fatal(err)
		}
	}
	s, err := NewScorer(RuleLM, p)
	if err != nil {
		t.Fatal(err)
	}
	norm := 12.0 + 3 + 1
	// "1 2 3": the first window has no context (unigram, f=4), the second
	// one window (bigram 1→2: 4 of f(1)=4), the third a trigram 1 2→3:
	// 4 of n(1 2)=4.
	got := s.Value(pushAll(t, 1, 1000, []uint16{1, 2, 3})[0])
	want := (-math.Log(5/norm) - math.Log(1) - math.Log(1)) / 3
	if math.Abs(got-want) > 1e-12 {
		t.Errorf("1 2 3: %v nats, want %v", got, want)
	}
	// "1 3 2": 3 after 1 never seen: 0.4·(f(3)+1)/norm; 2 after 1 3: the
	// trigram is unseen, the bigram 3→2 too: 0.16·5/norm.
	got = s.Value(pushAll(t, 1, 1000, []uint16{1, 3, 2})[0])
	want = (-math.Log(5/norm) - math.Log(0.4*5/norm) - math.Log(0.16*5/norm)) / 3
	if math.Abs(got-want) > 1e-12 {
		t.Errorf("1 3 2: %v nats, want %v", got, want)
	}
	// An unseen call after a full context: 0.16·1/norm.
	got = s.Value(pushAll(t, 1, 1000, []uint16{1, 2, 9})[0])
	want = (-math.Log(5/norm) - math.Log(1) - math.Log(0.16/norm)) / 3
	if math.Abs(got-want) > 1e-12 {
		t.Errorf("1 2 9: %v nats, want %v", got, want)
	}
}

// Reordered calls: every bag is known, so the papers' rule sees nothing,
// and the sequence model sees the new order. W=2: "1 2 1 3" has the bag
// sequence A A B B (A={1,2}, B={1,3}); "1 2 1 2 1 3 1 3" has A A A A B B B
// B, whose trigrams A A A and B B B were never seen.
func TestLMSeesOrderThePapersRuleDoesNot(t *testing.T) {
	p := NewProfile(WithWindow(2), WithSequence(true))
	for _, e := range pushAll(t, 2, 100, repeat([]uint16{1, 2, 1, 3}, 200)) {
		p.Train(e)
	}
	lm, _ := NewScorer(RuleLM, p)
	bosc, _ := NewScorer(RuleBoSC, p)
	normal := pushAll(t, 2, 1000, repeat([]uint16{1, 2, 1, 3}, 30))[0]
	odd := pushAll(t, 2, 1000, repeat([]uint16{1, 2, 1, 2, 1, 3, 1, 3}, 15))[0]
	if bosc.Value(odd) != 0 || bosc.Value(normal) != 0 {
		t.Fatalf("papers' rule: %v and %v mismatches, want 0 (all bags known)", bosc.Value(odd), bosc.Value(normal))
	}
	if n, o := lm.Value(normal), lm.Value(odd); o < n+0.3 {
		t.Errorf("lm: reordered %v nats, normal %v: want clearly above", o, n)
	}
}

func TestScorersThresholdsAndVerdicts(t *testing.T) {
	p := NewProfile(WithWindow(1), WithSequence(true), WithThreshold(2))
	p.Train(pushAll(t, 1, 1000, repeat([]uint16{1, 2, 3}, 50))[0])
	bosc, _ := NewScorer(RuleBoSC, p)
	odd := pushAll(t, 1, 1000, []uint16{1, 2, 3, 7, 8, 9, 1, 2})[0]
	v := bosc.Score(odd)
	if v.Value != 3 || v.Mismatches != 3 || !v.Anomalous {
		t.Errorf("bosc T=2: %+v", v)
	}
	bosc.SetThreshold(3.7)
	if bosc.Threshold() != 3 || bosc.Score(odd).Anomalous {
		t.Errorf("bosc T=⌊3.7⌋: threshold %v, anomalous %v", bosc.Threshold(), bosc.Score(odd).Anomalous)
	}
	lm, err := NewScorer(RuleLM, p)
	if err != nil || lm.Threshold() != DefaultLMThreshold || p.Rule() != RuleLM {
		t.Fatalf("lm: %v, threshold %v, rule %s", err, lm.Threshold(), p.Rule())
	}
	val := lm.Value(odd)
	lm.SetThreshold(val - 0.01)
	if v := lm.Score(odd); !v.Anomalous || v.Value != val || v.Mismatches != 3 || v.NewBags != 3 {
		t.Errorf("lm below its score: %+v", v)
	}
	lm.SetThreshold(val)
	if lm.Score(odd).Anomalous {
		t.Error("lm at its own score flagged (must be strictly above)")
	}
	if _, err := NewScorer(RuleLM, NewProfile()); !errors.Is(err, ErrConfig) {
		t.Errorf("lm without a sequence model: %v", err)
	}
	if _, err := NewScorer("stide", p); !errors.Is(err, ErrConfig) {
		t.Errorf("unknown rule: %v", err)
	}
}

func TestScoreDoesNotAllocate(t *testing.T) {
	stream := benchStream(1 << 16)
	p := NewProfile(WithWindow(10), WithSequence(true))
	eps := pushAll(t, 10, 1000, stream[:1<<15])
	for _, e := range eps {
		p.Train(e)
	}
	test := pushAll(t, 10, 1000, stream[1<<15:])
	for _, rule := range Rules() {
		s, _ := NewScorer(rule, p)
		s.Score(test[0]) // sizes the scratch
		i := 0
		if a := testing.AllocsPerRun(200, func() { s.Score(test[i%len(test)]); i++ }); a != 0 {
			t.Errorf("%s: %v allocs per scored epoch", rule, a)
		}
	}
}

func TestSequenceProfileRoundTrip(t *testing.T) {
	p := NewProfile(WithWindow(4), WithSequence(true), WithWorkload("redis"), WithMaxBags(4096))
	for _, e := range pushAll(t, 4, 300, benchStream(20000)) {
		p.Train(e)
	}
	lm, _ := NewScorer(RuleLM, p)
	lm.SetThreshold(3.25)
	p.SetComplete(true)
	path := filepath.Join(t.TempDir(), "redis.bosc")
	if err := p.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	q, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if q.Rule() != RuleLM || !q.Complete() || q.Legacy() || !q.HasSequence() || q.Stats() != p.Stats() {
		t.Fatalf("loaded rule %s complete %v sequence %v stats %+v", q.Rule(), q.Complete(), q.HasSequence(), q.Stats())
	}
	lq, _ := NewScorer(q.Rule(), q)
	if lq.Threshold() != 3.25 {
		t.Errorf("threshold %v after load", lq.Threshold())
	}
	for _, e := range pushAll(t, 4, 300, benchStream(3000)) {
		if a, b := lm.Value(e), lq.Value(e); a != b {
			t.Fatalf("score %v before save, %v after", a, b)
		}
	}
	var b1, b2 bytes.Buffer
	p.WriteTo(&b1)
	q.WriteTo(&b2)
	if !bytes.Equal(b1.Bytes(), b2.Bytes()) {
		t.Error("re-export differs")
	}
}

// A profile written by the previous release (format version 1, made by
// the code of commit f0b0eb2) still loads, as the papers' rule.
func TestVersion1ProfileLoads(t *testing.T) {
	data, err := os.ReadFile("testdata/v1.bosc")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ReadProfile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if p.Rule() != RuleBoSC || p.Threshold() != 7 || p.Workload() != "v1/redis" || p.Window() != 3 ||
		p.HasSequence() || p.Complete() || !p.Legacy() || p.Stats().Bags == 0 {
		t.Fatalf("v1 profile: rule %s T %d workload %q W %d stats %+v", p.Rule(), p.Threshold(), p.Workload(), p.Window(), p.Stats())
	}
	s, err := NewScorer(p.Rule(), p)
	if err != nil {
		t.Fatal(err)
	}
	if v := s.Score(pushAll(t, 3, 20, []uint16{0, 1, 3, 232, 0, 1, 257, 2})[0]); v.Mismatches != 0 {
		t.Errorf("trained calls mismatch: %+v", v)
	}
	if v := s.Score(pushAll(t, 3, 20, []uint16{59, 59, 59, 59})[0]); v.Mismatches != 2 || !(v.Value == 2) {
		t.Errorf("unseen calls: %+v", v)
	}
}

// sequenceProfileBytes is a small v2 profile with a sequence model, a
// fuzz seed.
func sequenceProfileBytes(t testing.TB) []byte {
	p := NewProfile(WithWindow(2), WithSequence(true))
	for _, e := range pushAll(t, 2, 50, repeat([]uint16{1, 2, 3, 1, 4}, 20)) {
		p.Train(e)
	}
	NewScorer(RuleLM, p)
	var buf bytes.Buffer
	p.WriteTo(&buf)
	return buf.Bytes()
}
