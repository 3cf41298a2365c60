package bags

import (
	"math/rand/v2"
	"testing"
	"time"
)

// benchStream is a synthetic pre-parsed stream with realistic locality: a
// few hot loops over ~40 syscalls with occasional excursions.
func benchStream(n int) []uint16 {
	r := rand.New(rand.NewPCG(7, 8))
	loops := [][]uint16{{0, 1, 3, 232, 0, 1}, {257, 5, 9, 3, 0, 3}, {44, 45, 232, 7, 7}, {202, 202, 228, 1}}
	s := make([]uint16, 0, n)
	for len(s) < n {
		if r.IntN(20) == 0 {
			s = append(s, uint16(r.IntN(40)))
			continue
		}
		s = append(s, loops[r.IntN(len(loops))]...)
	}
	return s[:n]
}

// BenchmarkMatcher measures the offline hot path on one core: windowing,
// per-epoch aggregation and detection against a trained profile.
// Report: syscalls/s = 1e9 / (ns/op); allocs/op is per syscall.
func BenchmarkMatcher(b *testing.B) {
	stream := benchStream(1 << 20)
	p := NewProfile(WithWindow(10), WithThreshold(10))
	x, _ := NewWindower(10, 1000)
	for _, c := range stream[:len(stream)/2] {
		if e, ok := x.Push(c); ok {
			p.Train(e)
		}
	}
	x.Reset()
	var anomalous int
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if e, ok := x.Push(stream[i&(len(stream)-1)]); ok {
			if p.Detect(e).Anomalous {
				anomalous++
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Msyscalls/s")
	_ = anomalous
}

// BenchmarkSlide measures bag construction alone (sorted sliding window).
func BenchmarkSlide(b *testing.B) {
	stream := benchStream(1 << 16)
	b.ReportAllocs()
	b.ResetTimer()
	var sink Bag
	n := 0
	for n < b.N {
		for bag := range Slide(stream, 10) {
			sink = bag
			if n++; n >= b.N {
				break
			}
		}
	}
	_ = sink
}

// scoreBench is a profile trained on half of the bench stream and the
// other half's epochs of 1,000 windows (W=10).
func scoreBench(b *testing.B) (*Profile, []Epoch) {
	stream := benchStream(1 << 20)
	p := NewProfile(WithWindow(10), WithSequence(true))
	x, _ := NewWindower(10, 1000)
	for _, c := range stream[:len(stream)/2] {
		if e, ok := x.Push(c); ok {
			p.Train(e)
		}
	}
	return p, pushAll(b, 10, 1000, stream[len(stream)/2:])
}

// BenchmarkScoreEpochPaired scores each epoch with both rules in turn and
// times each: on a shared machine the two see the same load, so their ratio
// holds where separate runs drift. Report: bosc-ns/epoch, lm-ns/epoch and
// lm/bosc; allocs/op (both scorings) must be 0.
func BenchmarkScoreEpochPaired(b *testing.B) {
	p, test := scoreBench(b)
	bosc, _ := NewScorer(RuleBoSC, p)
	lm, _ := NewScorer(RuleLM, p)
	bosc.Score(test[0])
	lm.Score(test[0])
	var tb, tl time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := test[i%len(test)]
		t0 := time.Now()
		bosc.Score(e)
		t1 := time.Now()
		lm.Score(e)
		tl += time.Since(t1)
		tb += t1.Sub(t0)
	}
	b.ReportMetric(float64(tb.Nanoseconds())/float64(b.N), "bosc-ns/epoch")
	b.ReportMetric(float64(tl.Nanoseconds())/float64(b.N), "lm-ns/epoch")
	b.ReportMetric(float64(tl)/float64(tb), "lm/bosc")
}

// BenchmarkScoreEpoch measures one scored epoch of 1,000 windows (W=10)
// per rule against the same trained profile: the daemon's cost per epoch
// on top of the kernel's. Report: ns/op is per epoch; allocs/op must be 0.
func BenchmarkScoreEpoch(b *testing.B) {
	p, test := scoreBench(b)
	for _, rule := range Rules() {
		b.Run(rule, func(b *testing.B) {
			s, err := NewScorer(rule, p)
			if err != nil {
				b.Fatal(err)
			}
			s.Score(test[0])
			var anomalous int
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if s.Score(test[i%len(test)]).Anomalous {
					anomalous++
				}
			}
			_ = anomalous
		})
	}
}
