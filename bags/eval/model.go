package eval

import (
	"context"
	"fmt"
	"math"

	"github.com/escape-mtd/escape/bags"
)

// NGram is the n-gram length of the STIDE channel (the reference point the
// dataset README quotes is STIDE with n = 6).
const NGram = 6

// Burst is the span, in windows, of the burst score.
const Burst = 50

// Model is a trained BoSC profile plus the side channels the improvements use.
type Model struct {
	W      int
	Epoch  int
	Prof   *bags.Profile
	Total  uint64 // training windows
	ngrams map[[NGram]uint16]struct{}
	live   bags.Scorer // the daemon's sequence-model scorer over Prof
}

// TrainModel learns a profile of window w from traces with the engine's own
// path: each trace is its own stream (Windower reset between traces), cut
// into epochs of e calls, each epoch fed to Profile.Train.
func TrainModel(ctx context.Context, traces []Trace, w, e int) (*Model, error) {
	prof, err := bags.New(bags.WithWindow(w), bags.WithEpoch(e), bags.WithArch("i386"), bags.WithWorkload("adfa-ld"),
		bags.WithSequence(true))
	if err != nil {
		return nil, err
	}
	x, err := bags.NewWindower(w, e)
	if err != nil {
		return nil, err
	}
	m := &Model{W: w, Epoch: e, Prof: prof, ngrams: map[[NGram]uint16]struct{}{}}
	for _, t := range traces {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		x.Reset()
		feed := func(ep bags.Epoch) error {
			_, err := prof.Train(ep)
			return err
		}
		for _, c := range t.Calls {
			if ep, ok := x.Push(c); ok {
				if err := feed(ep); err != nil {
					return nil, fmt.Errorf("train on %s: %w", t.Name, err)
				}
			}
		}
		if ep, ok := x.Flush(); ok {
			if err := feed(ep); err != nil {
				return nil, fmt.Errorf("train on %s: %w", t.Name, err)
			}
		}
		for i := 0; i+NGram <= len(t.Calls); i++ {
			m.ngrams[[NGram]uint16(t.Calls[i:i+NGram])] = struct{}{}
		}
	}
	m.Total = prof.Stats().TrainedWindows
	if m.live, err = bags.NewScorer(bags.RuleLM, prof); err != nil {
		return nil, err
	}
	return m, nil
}

// Scores holds every per-trace score of one trace; higher is more anomalous.
type Scores struct {
	Windows    int
	Mismatches int
	EpochMax   float64 // papers' rule: max mismatches in one epoch of Model.Epoch calls
	Frac       float64 // share of windows with an unseen bag
	Surprisal  float64 // mean -log((f+1)/(N+1)) / log(N+1), in [0,1]
	Rare       float64 // share of windows whose bag was seen at most once
	BurstFrac  float64 // max share of unseen windows in any Burst consecutive windows
	Stide      float64 // share of unseen NGram-grams
	KNN        float64 // knn-bosc: cosine distance to the nearest reference traces (filled by Run)

	// Pooled-database channels filled by RefDB.Score (zero from Model.Score).
	BagRarity    float64 // mean window rarity −ln((f+1)/(N+|B|+1)), nats
	BagRarityMax float64 // max over Span consecutive windows of that mean
	Soft         float64 // mean nearest-bag distance of the windows (0 seen, ½ one call off, 1 farther)
	GramRarity   float64 // mean add-one 6-gram rarity −ln((c+1)/(N6+|G|+1)), nats
	LM           float64 // mean −ln of the stupid-backoff 6-gram probability of each call, nats

	// Cover is the covering channel (CoverIndex.Cover): the fewest runs of
	// reference calls that spell the trace, per call.
	Cover float64

	// LiveLM is the daemon's RuleLM scorer (bags.Scorer) run as the
	// daemon runs it: the trace's Windower epochs of Model.Epoch calls,
	// the largest epoch score.
	LiveLM float64

	// KNNAttack is the supervised channel's cosine distance to the nearest
	// dev attack trace (filled by Run; never a normal-only score).
	KNNAttack float64
}

// EpochMax runs the engine's detection path on one trace: Windower epochs of
// e calls, Profile.Detect, and returns the largest per-epoch mismatch count
// and the totals. A trace shorter than an epoch is one (partial) epoch, so
// for most ADFA-LD traces this is the trace's mismatch count.
func (m *Model) EpochMax(calls []uint16, e int) (max uint64, windows, mismatches uint64) {
	max, windows, mismatches, _ = m.epochScores(calls, e)
	return max, windows, mismatches
}

// epochScores is EpochMax plus the largest epoch score of the live
// sequence-model scorer.
func (m *Model) epochScores(calls []uint16, e int) (max uint64, windows, mismatches uint64, lm float64) {
	x, _ := bags.NewWindower(m.W, e)
	take := func(ep bags.Epoch) {
		if m.live != nil {
			lm = math.Max(lm, m.live.Value(ep))
		}
		v := m.Prof.Detect(ep)
		windows += v.Windows
		mismatches += v.Mismatches
		if v.Mismatches > max {
			max = v.Mismatches
		}
	}
	for _, c := range calls {
		if ep, ok := x.Push(c); ok {
			take(ep)
		}
	}
	if ep, ok := x.Flush(); ok {
		take(ep)
	}
	return max, windows, mismatches, lm
}

// Score computes all scores of one trace. A trace with fewer than W calls has
// no window: its BoSC scores are 0 (nothing to judge), which counts against
// detection, never for it.
func (m *Model) Score(calls []uint16) Scores {
	var s Scores
	max, _, _, lm := m.epochScores(calls, m.Epoch)
	s.EpochMax, s.LiveLM = float64(max), lm
	logN := math.Log(float64(m.Total) + 1)
	ring := make([]bool, Burst)
	inSpan, best := 0, 0
	var surprisal float64
	rare := 0
	for b := range bags.Slide(calls, m.W) {
		f, _ := m.Prof.Freq(b)
		miss := f == 0
		if miss {
			s.Mismatches++
		}
		if f <= 1 {
			rare++
		}
		surprisal += (logN - math.Log(float64(f)+1)) / logN
		slot := s.Windows % Burst
		if ring[slot] {
			inSpan--
		}
		ring[slot] = miss
		if miss {
			inSpan++
		}
		best = max2(best, inSpan)
		s.Windows++
	}
	if s.Windows > 0 {
		s.Frac = float64(s.Mismatches) / float64(s.Windows)
		s.Surprisal = surprisal / float64(s.Windows)
		s.Rare = float64(rare) / float64(s.Windows)
		s.BurstFrac = float64(best) / float64(min(Burst, s.Windows))
	}
	grams, unseen := 0, 0
	for i := 0; i+NGram <= len(calls); i++ {
		grams++
		if _, ok := m.ngrams[[NGram]uint16(calls[i:i+NGram])]; !ok {
			unseen++
		}
	}
	if grams > 0 {
		s.Stide = float64(unseen) / float64(grams)
	}
	return s
}

func max2(a, b int) int {
	if a > b {
		return a
	}
	return b
}
