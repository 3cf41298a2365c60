package eval

import (
	"fmt"
	"slices"
	"strings"
)

// Regime is the normal data a variant's database holds and where its
// threshold is chosen.
type Regime int

const (
	// Base: database = Training_Data_Master; threshold on validation A.
	Base Regime = iota
	// ExtA1: database also fed A1 (even positions of A); threshold on A2.
	ExtA1
	// LOOA: database = training + all of A; threshold on A scored
	// leave-one-out (each A trace against the database without itself).
	LOOA
)

// Variant is one scoring rule.
type Variant struct {
	Name, Help string
	Score      Channel
	Regime     Regime
	// Rank, when set, replaces Score by the mean of the channels' empirical
	// CDFs, each fitted on the variant's normal selection scores only.
	Rank []Channel
	// Logit, when set, replaces Score by a logistic model of the channels
	// fitted on the normal selection scores and the dev attacks (runs ≤
	// DevRuns) only; its dev columns are cross-validated (see crossLogit).
	Logit []Channel
	// Supervised marks a rule that uses attack traces as references: a
	// misuse detector for the known families, not anomaly detection.
	Supervised bool
}

func frac(s Scores) float64      { return s.Frac }
func stide(s Scores) float64     { return s.Stide }
func knn(s Scores) float64       { return s.KNN }
func bagRarity(s Scores) float64 { return s.BagRarity }
func soft(s Scores) float64      { return s.Soft }
func gramRar(s Scores) float64   { return s.GramRarity }
func lm(s Scores) float64        { return s.LM }
func cover(s Scores) float64     { return s.Cover }

// AllVariants returns the papers' BoSC and the improvements, in report order
// (a fresh slice each call: callers may not change the table).
func AllVariants() []Variant {
	return []Variant{
		{Name: "bosc-epoch", Help: "papers' rule: max mismatches in one epoch (> T flags)", Score: func(s Scores) float64 { return s.EpochMax }},
		{Name: "live-lm", Help: "the daemon's lm scorer: max epoch mean -ln S(bag | 2 previous bags), stupid backoff", Score: func(s Scores) float64 { return s.LiveLM }},
		{Name: "live-lm+valA", Help: "live-lm, profile also fed A1", Score: func(s Scores) float64 { return s.LiveLM }, Regime: ExtA1},
		{Name: "bosc-frac", Help: "share of windows with an unseen bag", Score: frac},
		{Name: "freq-weighted", Help: "mean window surprisal -log((f+1)/(N+1)), normalised", Score: func(s Scores) float64 { return s.Surprisal }},
		{Name: "rare-bag", Help: "share of windows whose bag was seen at most once", Score: func(s Scores) float64 { return s.Rare }},
		{Name: "burst", Help: "max share of unseen windows in 50 consecutive windows", Score: func(s Scores) float64 { return s.BurstFrac }},
		{Name: "stide-6", Help: "reference: share of unseen 6-grams", Score: stide},
		{Name: "bosc+6gram", Help: "mean of bosc-frac and the 6-gram channel", Score: func(s Scores) float64 { return (s.Frac + s.Stide) / 2 }},
		{Name: "freq+6gram", Help: "mean of freq-weighted and the 6-gram channel", Score: func(s Scores) float64 { return (s.Surprisal + s.Stide) / 2 }},
		{Name: "soft-bag", Help: "mean nearest-bag distance (0 seen, 1/2 one call off, 1 farther)", Score: soft},
		{Name: "6gram-lm", Help: "mean -ln stupid-backoff 6-gram probability per call", Score: lm},
		{Name: "cover", Help: "fewest runs of training calls that spell the trace, per call (covering similarity)", Score: cover},
		{Name: "knn-bosc", Help: "cosine distance of the trace's TF-IDF bag counts to the nearest training trace", Score: knn},
		{Name: "bosc-frac+valA", Help: "bosc-frac, database also fed a quarter of validation (A1)", Score: frac, Regime: ExtA1},
		{Name: "freq+6gram+valA", Help: "freq+6gram, database also fed a quarter of validation (A1)", Score: func(s Scores) float64 { return (s.Surprisal + s.Stide) / 2 }, Regime: ExtA1},
		{Name: "knn-bosc+valA", Help: "knn-bosc, reference traces also A1", Score: knn, Regime: ExtA1},
		{Name: "bosc-frac+A-loo", Help: "bosc-frac, database = training + all of A, A scored leave-one-out", Score: frac, Regime: LOOA},
		{Name: "stide-6+A-loo", Help: "stide-6, same regime", Score: stide, Regime: LOOA},
		{Name: "bag-rarity+A-loo", Help: "mean add-one bag rarity -ln((f+1)/(N+|B|+1)) over windows", Score: bagRarity, Regime: LOOA},
		{Name: "bag-rarity-max+A-loo", Help: "max over 100 consecutive windows of the mean bag rarity (length-aware)", Score: func(s Scores) float64 { return s.BagRarityMax }, Regime: LOOA},
		{Name: "soft-bag+A-loo", Help: "soft-bag, same regime", Score: soft, Regime: LOOA},
		{Name: "6gram-rarity+A-loo", Help: "mean add-one 6-gram rarity -ln((c+1)/(N+|G|+1))", Score: gramRar, Regime: LOOA},
		{Name: "6gram-lm+A-loo", Help: "6gram-lm, same regime", Score: lm, Regime: LOOA},
		{Name: "cover+A-loo", Help: "cover, references = training + all of A, A scored leave-one-out", Score: cover, Regime: LOOA},
		{Name: "knn-bosc+A-loo", Help: "knn-bosc, references = training + all of A, A scored leave-one-out", Score: knn, Regime: LOOA},
		{Name: "rank(6gram,knn)+A-loo", Help: "mean normal-data CDF of stide-6 and knn-bosc", Regime: LOOA, Rank: []Channel{stide, knn}},
		{Name: "rank(bosc,6gram,knn)+A-loo", Help: "mean normal-data CDF of bosc-frac, stide-6 and knn-bosc", Regime: LOOA, Rank: []Channel{frac, stide, knn}},
		{Name: "rank(lm,knn)+A-loo", Help: "mean normal-data CDF of 6gram-lm and knn-bosc", Regime: LOOA, Rank: []Channel{lm, knn}},
		{Name: "logit(5)+A-loo", Help: "logistic model of knn-bosc, 6gram-lm, 6gram-rarity, bag-rarity, soft-bag fitted on A + dev attacks", Regime: LOOA,
			Logit: []Channel{knn, lm, gramRar, bagRarity, soft}},
		{Name: "logit(6)+A-loo", Help: "logit(5) plus the covering channel", Regime: LOOA,
			Logit: []Channel{knn, lm, gramRar, bagRarity, soft, cover}},
		{Name: "knn-2class+A-loo (sup.)", Help: "SUPERVISED: knn-bosc distance to normal minus distance to the nearest dev attack trace", Regime: LOOA, Supervised: true,
			Score: func(s Scores) float64 { return s.KNN - s.KNNAttack }},
	}
}

// VariantNames lists the names of Variants in report order.
func VariantNames() []string {
	out := make([]string, len(AllVariants()))
	for i, v := range AllVariants() {
		out[i] = v.Name
	}
	return out
}

// SplitVariantNames splits a comma-separated list of variant names at the
// commas outside parentheses, so "rank(lm,knn)+A-loo,cover" is two names.
// Blank items are dropped; the names are not checked here (Run does).
func SplitVariantNames(list string) []string {
	var out []string
	keep := func(name string) {
		if name = strings.TrimSpace(name); name != "" {
			out = append(out, name)
		}
	}
	depth, from := 0, 0
	for i, r := range list {
		switch r {
		case '(':
			depth++
		case ')':
			depth = max(depth-1, 0)
		case ',':
			if depth == 0 {
				keep(list[from:i])
				from = i + 1
			}
		}
	}
	keep(list[from:])
	return out
}

// selectVariants returns the variants named (all when names is empty), in
// report order, or an error naming the unknown ones.
func selectVariants(names []string) ([]Variant, error) {
	if len(names) == 0 {
		return AllVariants(), nil
	}
	var out []Variant
	for _, v := range AllVariants() {
		if slices.Contains(names, v.Name) {
			out = append(out, v)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(AllVariants(), func(v Variant) bool { return v.Name == n }) {
			return nil, fmt.Errorf("unknown variant %q (known: %v)", n, VariantNames())
		}
	}
	return out, nil
}
