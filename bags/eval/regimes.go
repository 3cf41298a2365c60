package eval

import "context"

// references are the scorers built over one set of normal reference traces:
// the pooled database, the k-NN index and the covering index.
type references struct {
	db *RefDB
	kn *KNN
	cx *CoverIndex
}

func newReferences(refs []Trace, cfg Config) references {
	return references{NewRefDB(refs, cfg.Window), NewKNN(refs, cfg.Window, max(cfg.KNN, 1), false), NewCoverIndex(refs)}
}

// score fills the pooled, k-NN and covering scores of calls. self means
// calls is reference trace number ref, scored with itself left out.
func (r references) score(calls []uint16, self bool, ref int) Scores {
	s := r.db.Score(calls, self)
	if !self {
		ref = -1
	}
	s.KNN = r.kn.Score(calls, ref)
	s.Cover = r.cx.Cover(calls, self)
	return s
}

// regimeScores are one regime's per-trace scores: [0] the normal selection
// traces (where thresholds and combiners are fitted), [1] the reporting half
// B, [2] all attack traces (dev and held-out, in dataset order).
type regimeScores [3][]Scores

// scoreRegimes scores every trace under the three regimes. The pooled
// channels (rarity, soft matching, the n-gram model) come from a RefDB of
// the regime's normal data; in LOOA, A is scored leave-one-out against the
// training + A database and the k-NN references.
//
// The supervised channel KNNAttack is filled in LOOA only: the distance to
// the nearest dev attack trace (runs ≤ DevRuns); a dev attack is compared
// with the dev attacks of the other runs only, so its own run never serves
// as its reference, and every other trace with all dev attacks.
func scoreRegimes(ctx context.Context, d *Dataset, sel, rep []Trace, cfg Config, base *Model) ([3]regimeScores, error) {
	var sets [3]regimeScores
	// ExtA1 feeds half of A (A1) to the database as extra normal data and
	// chooses thresholds on the other half (A2), so B and the attacks stay
	// unseen.
	var a1, a2 []Trace
	for i, t := range sel {
		if i%2 == 0 {
			a1 = append(a1, t)
		} else {
			a2 = append(a2, t)
		}
	}
	trainA1 := append(append([]Trace(nil), d.Train...), a1...)
	ext, err := TrainModel(ctx, trainA1, cfg.Window, cfg.Epoch)
	if err != nil {
		return sets, err
	}
	plain := func(m *Model, refs []Trace, thr []Trace) regimeScores {
		rs := newReferences(refs, cfg)
		var out regimeScores
		for i, ts := range [][]Trace{thr, rep, d.Attack} {
			out[i] = make([]Scores, len(ts))
			for j, t := range ts {
				s, p := m.Score(t.Calls), rs.score(t.Calls, false, -1)
				s.BagRarity, s.BagRarityMax, s.Soft, s.GramRarity, s.LM = p.BagRarity, p.BagRarityMax, p.Soft, p.GramRarity, p.LM
				s.KNN, s.Cover = p.KNN, p.Cover
				out[i][j] = s
			}
		}
		return out
	}
	sets[Base] = plain(base, d.Train, sel)
	if err := ctx.Err(); err != nil {
		return sets, err
	}
	sets[ExtA1] = plain(ext, trainA1, a2)
	if err := ctx.Err(); err != nil {
		return sets, err
	}

	all := append(append([]Trace(nil), d.Train...), sel...)
	rs := newReferences(all, cfg)
	dev, _ := splitAttacks(d.Attack, cfg.DevRuns)
	kAll := NewKNN(dev, cfg.Window, 1, false)
	kOut := map[int]*KNN{} // dev run → references without that run
	for r := 1; r <= cfg.DevRuns; r++ {
		var refs []Trace
		for _, t := range dev {
			if attackRun(t) != r {
				refs = append(refs, t)
			}
		}
		kOut[r] = NewKNN(refs, cfg.Window, 1, false)
	}
	for i, ts := range [][]Trace{sel, rep, d.Attack} {
		sets[LOOA][i] = make([]Scores, len(ts))
		for j, t := range ts {
			s := rs.score(t.Calls, i == 0, len(d.Train)+j)
			ka := kAll
			if r := attackRun(t); i == 2 && r >= 1 && r <= cfg.DevRuns {
				ka = kOut[r]
			}
			s.KNNAttack = ka.Score(t.Calls, -1)
			sets[LOOA][i][j] = s
		}
	}
	return sets, ctx.Err()
}
