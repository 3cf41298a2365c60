package bags

import (
	"errors"
	"testing"
)

func ep(windows uint64, bcs ...BagCount) Epoch { return Epoch{Windows: windows, Bags: bcs} }
func bc(n uint32, calls ...uint16) BagCount    { return BagCount{Bag: BagOf(calls), Count: n} }

func TestTrainFrequencies(t *testing.T) {
	p := NewProfile(WithWindow(2))
	r, err := p.Train(ep(3, bc(2, 1, 2), bc(1, 3, 3)))
	if err != nil || r.NewBags != 2 || r.Bags != 2 {
		t.Fatalf("first epoch: %+v %v", r, err)
	}
	r, _ = p.Train(ep(2, bc(1, 2, 1), bc(1, 4, 4)))
	if r.NewBags != 1 {
		t.Fatalf("second epoch new bags %d, want 1", r.NewBags)
	}
	if f, ok := p.Freq(BagOf([]uint16{1, 2})); !ok || f != 3 {
		t.Fatalf("freq {1,2} = %d %v, want 3 (2 then +1)", f, ok)
	}
	if f, _ := p.Freq(BagOf([]uint16{4, 4})); f != 1 {
		t.Fatalf("new bag freq %d, want 1", f)
	}
	if s := p.Stats(); s.TrainedWindows != 5 || s.TrainedEpochs != 2 || s.Bags != 3 {
		t.Fatalf("stats %+v", s)
	}
	if _, err := p.Train(ep(1, bc(1, 1, 2, 3))); !errors.Is(err, ErrConfig) {
		t.Fatalf("bag of wrong window size accepted: %v", err)
	}
}

func TestDetectThresholdIsStrict(t *testing.T) {
	p := NewProfile(WithWindow(1), WithThreshold(2))
	p.Train(ep(1, bc(1, 7)))
	// exactly T mismatches: not anomalous; T+1: anomalous.
	v := p.Detect(ep(4, bc(2, 7), bc(1, 8), bc(1, 9)))
	if v.Mismatches != 2 || v.NewBags != 2 || v.Anomalous || !v.Clean() || v.Score != 0.5 {
		t.Fatalf("at threshold: %+v", v)
	}
	v = p.Detect(ep(3, bc(3, 8)))
	if v.Mismatches != 3 || v.NewBags != 1 || !v.Anomalous || v.Clean() {
		t.Fatalf("above threshold: %+v", v)
	}
	if v.Learned != 0 || p.Stats().Bags != 1 {
		t.Fatal("learned without online learning")
	}
	v = p.Detect(Epoch{Windows: 5, Bags: []BagCount{bc(5, 7)}, Degraded: true})
	if v.Anomalous || !v.Degraded || v.Clean() {
		t.Fatalf("degraded epoch reported clean: %+v", v)
	}
}

func TestOnlineLearning(t *testing.T) {
	p := NewProfile(WithWindow(1), WithThreshold(2), WithOnlineLearning(true))
	p.Train(ep(1, bc(1, 1)))
	if v := p.Detect(ep(3, bc(1, 1), bc(2, 2))); v.Anomalous || v.Learned != 1 {
		t.Fatalf("below threshold epoch not learned: %+v", v)
	}
	if v := p.Detect(ep(2, bc(2, 2))); v.Mismatches != 0 {
		t.Fatalf("learned bag still mismatches: %+v", v)
	}
	if v := p.Detect(ep(3, bc(3, 3))); !v.Anomalous || v.Learned != 0 {
		t.Fatalf("anomalous epoch learned: %+v", v)
	}
	if v := p.Detect(Epoch{Windows: 1, Bags: []BagCount{bc(1, 4)}, Degraded: true}); v.Learned != 0 {
		t.Fatalf("degraded epoch learned: %+v", v)
	}
	if _, ok := p.Freq(BagOf([]uint16{4})); ok {
		t.Fatal("degraded bag stored")
	}
	if s := p.Stats(); s.LearnedOnline != 1 {
		t.Fatalf("LearnedOnline %d", s.LearnedOnline)
	}
}

func TestAutoStop(t *testing.T) {
	p := NewProfile(WithWindow(1), WithAutoStop(2))
	steps := []struct {
		e    Epoch
		stop bool
	}{
		{ep(1, bc(1, 1)), false},
		{ep(1, bc(1, 1)), false}, // unchanged 1
		{ep(0), false},           // empty epochs do not count
		{ep(1, bc(1, 2)), false}, // changed: counter restarts
		{ep(1, bc(1, 1)), false}, // unchanged 1
		{ep(1, bc(1, 2)), true},  // unchanged 2 -> stop
	}
	for i, s := range steps {
		r, err := p.Train(s.e)
		if err != nil || r.Stopped != s.stop {
			t.Fatalf("step %d: %+v %v, want stopped=%v", i, r, err, s.stop)
		}
	}
	r, _ := p.Train(ep(1, bc(1, 9)))
	if !r.Stopped || r.NewBags != 0 || p.Stats().Bags != 2 {
		t.Fatalf("learned after auto-stop: %+v", r)
	}
	q := NewProfile(WithWindow(1))
	for i := 0; i < 5; i++ {
		if r, _ := q.Train(ep(1, bc(1, 1))); r.Stopped {
			t.Fatal("stopped with auto-stop disabled")
		}
	}
}

func TestCapCountsOverflow(t *testing.T) {
	p := NewProfile(WithWindow(1), WithMaxBags(2), WithOnlineLearning(true), WithThreshold(100))
	r, _ := p.Train(ep(6, bc(1, 1), bc(2, 2), bc(3, 3)))
	if r.NewBags != 2 || r.Overflow != 1 || p.Stats().Bags != 2 {
		t.Fatalf("cap not enforced: %+v", r)
	}
	for i := 0; i < 1000; i++ { // an attacker's stream of novel bags
		p.Detect(ep(1, bc(1, uint16(100+i))))
	}
	s := p.Stats()
	if s.Bags != 2 || s.OverflowBags != 1001 || s.OverflowWindows != 1003 {
		t.Fatalf("stats after flood %+v", s)
	}
	if _, err := New(WithMaxBags(0)); err == nil {
		t.Fatal("cap 0 accepted")
	}
	if _, err := New(WithWindow(17)); !errors.Is(err, ErrConfig) {
		t.Fatalf("window 17: %v", err)
	}
}

func TestStreamTrainDetectEndToEnd(t *testing.T) {
	normal := []uint16{}
	for i := 0; i < 5000; i++ {
		normal = append(normal, uint16(i%4), 9)
	}
	p := NewProfile(WithWindow(4), WithThreshold(5))
	x, _ := NewWindower(4, 500)
	for _, c := range normal {
		if e, ok := x.Push(c); ok {
			if _, err := p.Train(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	x.Reset()
	attack := append(append([]uint16{}, normal[:500]...), 59, 11, 59, 11, 59, 11, 59, 11)
	var verdicts []Verdict
	for _, c := range attack {
		if e, ok := x.Push(c); ok {
			verdicts = append(verdicts, p.Detect(e))
		}
	}
	if e, ok := x.Flush(); ok {
		verdicts = append(verdicts, p.Detect(e))
	}
	if len(verdicts) != 2 || verdicts[0].Anomalous || verdicts[0].Mismatches != 0 {
		t.Fatalf("normal epoch: %+v", verdicts)
	}
	if !verdicts[1].Anomalous || verdicts[1].Mismatches != 8 {
		t.Fatalf("attack epoch: %+v", verdicts[1])
	}
}
