package eval

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"go.uber.org/zap"
)

// Config selects what Run measures.
type Config struct {
	Root       string   // ADFA-LD root (Training_Data_Master, ...)
	Window     int      // W of the main comparison (papers: 10)
	Epoch      int      // E of the papers' rule in the main comparison
	TargetFPR  float64  // FPR target for choosing thresholds on the selection half
	KNN        int      // neighbours of the knn-bosc scorer
	DevRuns    int      // attack runs 1..DevRuns of each family are the selection (dev) subset
	Windows    []int    // window sweep
	Epochs     []int    // epoch sweep (papers: 1000..4000 step 500)
	Thresholds []int    // threshold sweep (papers: 10..100 step 10)
	Variants   []string // variants to report (names from Variants; empty: all)
	ROC        []string // variants drawn in the ROC figures (empty: DefaultROC)
	// Sessions are the aggregates of the session view (nil: none; see
	// session.go). It is reported beside the per-trace figures.
	Sessions []SessionAgg
	Ceiling  bool // also run the per-trace ceiling analysis (ceiling.go)
	// FoldCheck, when 2 or more, also chooses the +A-loo thresholds on A
	// scored with FoldCheck folds left out by pseudo-session and by trace
	// (foldout.go); 0 skips it (it rebuilds the references 2×FoldCheck times).
	FoldCheck int
	Log       *zap.Logger
}

// DefaultConfig is the papers' grid plus a window sweep.
func DefaultConfig(root string) Config {
	c := Config{Root: root, Window: 10, Epoch: 1000, TargetFPR: 0.05, KNN: 1, DevRuns: 5, Windows: []int{2, 4, 6, 8, 10, 12, 16},
		Sessions: DefaultSessionAggs()}
	for e := 1000; e <= 4000; e += 500 {
		c.Epochs = append(c.Epochs, e)
	}
	for t := 10; t <= 100; t += 10 {
		c.Thresholds = append(c.Thresholds, t)
	}
	return c
}

// VariantResult is one variant's numbers on the reporting half vs the
// held-out attacks (runs > DevRuns).
type VariantResult struct {
	Name, Help      string
	Supervised      bool    // uses attack traces as references (Variant.Supervised)
	DevAUC, DevDR5  float64 // selection data: normal selection scores vs dev attacks (runs <= DevRuns)
	AUCAll          float64 // reporting half vs all attacks (continuity with older reports)
	AUC             float64
	DR1, DR5, DR10  float64            // ROC read at 1/5/10% FPR on the reporting half
	Threshold       float64            // chosen on the selection half at TargetFPR
	HeldFPR, HeldDR float64            // that threshold applied to reporting half / attacks
	FamilyDR        map[string]float64 // HeldDR per attack family
	ROC             []ROCPoint
	Sessions        []SessionResult // session view (attack runs vs normal pseudo-sessions), one per aggregate
}

// SweepCell is the papers' rule at one (epoch, threshold).
type SweepCell struct {
	Epoch, Threshold int
	DR, FPR          float64 // attacks, reporting half
}

// WindowRow is the window sweep at one W.
type WindowRow struct {
	W                       int
	Bags                    int
	AUCFrac, AUCFreq6       float64
	HeldDRFrac, HeldFPRFrac float64
}

// Report is everything Run measured.
type Report struct {
	Config                  Config
	Train, Sel, Rep, Attack int
	Dev, Held               int    // attack traces in runs <= DevRuns / the rest
	Calls                   [3]int // training, validation, attack calls
	Bags                    int
	ShortTraces             int // traces shorter than W (no window)
	Variants                []VariantResult
	PaperT                  int     // threshold picked from the papers' grid on the selection half
	PaperDR, PaperFPR       float64 // at PaperT
	Sweep                   []SweepCell
	Windows                 []WindowRow
	Ceiling                 *CeilingReport // nil unless Config.Ceiling
	FoldChecks              []FoldCheck    // empty unless Config.FoldCheck
	Calibration             []CalibrationRow
	Elapsed                 time.Duration
}

func scoreAll(m *Model, ts []Trace) []Scores {
	out := make([]Scores, len(ts))
	for i, t := range ts {
		out[i] = m.Score(t.Calls)
	}
	return out
}

func pick(ss []Scores, f func(Scores) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

// Run performs the whole evaluation.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	start := time.Now()
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	d, err := LoadADFA(ctx, cfg.Root)
	if err != nil {
		return nil, err
	}
	sel, rep := d.Split()
	r := &Report{Config: cfg, Train: len(d.Train), Sel: len(sel), Rep: len(rep), Attack: len(d.Attack)}
	for i, set := range [][]Trace{d.Train, d.Valid, d.Attack} {
		for _, t := range set {
			r.Calls[i] += len(t.Calls)
		}
	}
	log.Info("loaded ADFA-LD", zap.Int("train", r.Train), zap.Int("valid", len(d.Valid)), zap.Int("attack", r.Attack))

	variants, err := selectVariants(cfg.Variants)
	if err != nil {
		return nil, err
	}
	base, err := TrainModel(ctx, d.Train, cfg.Window, cfg.Epoch)
	if err != nil {
		return nil, err
	}
	r.Bags = base.Prof.Stats().Bags
	for _, set := range [][]Trace{rep, d.Attack} {
		for _, t := range set {
			if len(t.Calls) < cfg.Window {
				r.ShortTraces++
			}
		}
	}
	dev, held := splitAttacks(d.Attack, cfg.DevRuns)
	r.Dev, r.Held = len(dev), len(held)
	if len(dev) == 0 || len(held) == 0 {
		// Every figure is either a dev choice or a held-out read; without
		// both there is nothing honest to report.
		return nil, fmt.Errorf("evaluate %s: %d dev attack traces (runs 1-%d) and %d held-out (runs > %d): both sets are needed",
			cfg.Root, len(dev), cfg.DevRuns, len(held), cfg.DevRuns)
	}
	if cfg.Ceiling {
		if r.Ceiling, err = Ceiling(ctx, d, cfg.DevRuns, cfg.Window); err != nil {
			return nil, err
		}
	}
	if r.Calibration, err = Calibration(ctx, d, sel, rep, held, cfg.Window, cfg.Epoch); err != nil {
		return nil, err
	}
	sizes := RunSizes(d.Attack)
	sets, err := scoreRegimes(ctx, d, sel, rep, cfg, base)
	if err != nil {
		return nil, err
	}
	var sessFold, traceFold []Scores
	if cfg.FoldCheck != 0 {
		bySession, byTrace, err := foldAssignments(len(sel), sizes, cfg.FoldCheck)
		if err != nil {
			return nil, err
		}
		if sessFold, err = foldScores(ctx, d.Train, sel, bySession, cfg.FoldCheck, cfg); err != nil {
			return nil, err
		}
		if traceFold, err = foldScores(ctx, d.Train, sel, byTrace, cfg.FoldCheck, cfg); err != nil {
			return nil, err
		}
	}
	devRun := make([]int, len(d.Attack)) // run number of dev attacks, 0 for held-out ones
	for i, t := range d.Attack {
		if n := attackRun(t); n <= cfg.DevRuns {
			devRun[i] = n
		}
	}
	for _, v := range variants {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ss := sets[v.Regime]
		var devSS []Scores
		var runs []int
		for i, s := range ss[2] {
			if devRun[i] > 0 {
				devSS = append(devSS, s)
				runs = append(runs, devRun[i])
			}
		}
		f := v.Score
		switch {
		case len(v.Rank) > 0:
			f = rankScore(v.Rank, ss[0])
		case len(v.Logit) > 0:
			f = fitLogit(v.Logit, ss[0], devSS)
		}
		s, n, a := pick(ss[0], f), pick(ss[1], f), pick(ss[2], f)
		var ad, ah []float64
		for i, x := range a {
			if devRun[i] > 0 {
				ad = append(ad, x)
			} else {
				ah = append(ah, x)
			}
		}
		res := evalVariant(v, held, s, n, ah, cfg.TargetFPR)
		res.AUCAll = AUC(n, a)
		ds, da := s, ad
		if len(v.Logit) > 0 {
			// The fit saw the dev attacks: its dev columns are out-of-fold.
			ds, da = crossLogit(v.Logit, ss[0], devSS, runs, cfg.DevRuns)
		}
		res.DevAUC, res.DevDR5 = AUC(ds, da), Rate(da, ThresholdAtFPR(ds, cfg.TargetFPR))
		res.Sessions = sessionView(sessionInput{sel: s, rep: n, devSel: ds, devAtt: da, held: ah,
			devTraces: dev, heldTraces: held, sizes: sizes, target: cfg.TargetFPR}, cfg.Sessions)
		r.Variants = append(r.Variants, res)
		if sessFold != nil && v.Regime == LOOA && !v.Supervised {
			r.FoldChecks = append(r.FoldChecks, foldCheck(v.Name, s, pick(sessFold, f), pick(traceFold, f), n, ah, held, sizes, cfg.Sessions, cfg.TargetFPR))
		}
		log.Info("variant", zap.String("result", res.String()))
		for _, sr := range res.Sessions {
			log.Info("variant session view", zap.String("variant", v.Name), zap.String("result", sr.String()))
		}
	}

	// Papers' rule: pick T from the grid on the selection half.
	epochMax := func(s Scores) float64 { return s.EpochMax }
	selEp, repEp, attEp := pick(sets[Base][0], epochMax), pick(sets[Base][1], epochMax), pick(sets[Base][2], epochMax)
	r.PaperT = cfg.Thresholds[len(cfg.Thresholds)-1]
	for _, t := range cfg.Thresholds {
		if Rate(selEp, float64(t)) <= cfg.TargetFPR {
			r.PaperT = t
			break
		}
	}
	r.PaperDR, r.PaperFPR = Rate(attEp, float64(r.PaperT)), Rate(repEp, float64(r.PaperT))

	for _, e := range cfg.Epochs {
		nr, at := epochScores(base, rep, e), epochScores(base, d.Attack, e)
		for _, t := range cfg.Thresholds {
			r.Sweep = append(r.Sweep, SweepCell{Epoch: e, Threshold: t, DR: Rate(at, float64(t)), FPR: Rate(nr, float64(t))})
		}
	}
	for _, w := range cfg.Windows {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m, err := TrainModel(ctx, d.Train, w, cfg.Epoch)
		if err != nil {
			return nil, err
		}
		s, n, a := scoreAll(m, sel), scoreAll(m, rep), scoreAll(m, d.Attack)
		f6 := func(x Scores) float64 { return (x.Surprisal + x.Stide) / 2 }
		th := ThresholdAtFPR(pick(s, frac), cfg.TargetFPR)
		r.Windows = append(r.Windows, WindowRow{W: w, Bags: m.Prof.Stats().Bags,
			AUCFrac: AUC(pick(n, frac), pick(a, frac)), AUCFreq6: AUC(pick(n, f6), pick(a, f6)),
			HeldDRFrac: Rate(pick(a, frac), th), HeldFPRFrac: Rate(pick(n, frac), th)})
		log.Info("window sweep", zap.Int("w", w), zap.Float64("auc_frac", r.Windows[len(r.Windows)-1].AUCFrac))
	}
	r.Elapsed = time.Since(start)
	return r, nil
}

func epochScores(m *Model, ts []Trace, e int) []float64 {
	out := make([]float64, len(ts))
	for i, t := range ts {
		mx, _, _ := m.EpochMax(t.Calls, e)
		out[i] = float64(mx)
	}
	return out
}

func evalVariant(v Variant, attacks []Trace, sel, rep, att []float64, target float64) VariantResult {
	th := ThresholdAtFPR(sel, target)
	res := VariantResult{Name: v.Name, Help: v.Help, Supervised: v.Supervised, AUC: AUC(rep, att),
		DR1: DRAtFPR(rep, att, 0.01), DR5: DRAtFPR(rep, att, 0.05), DR10: DRAtFPR(rep, att, 0.10),
		Threshold: th, HeldFPR: Rate(rep, th), HeldDR: Rate(att, th), ROC: ROC(rep, att),
		FamilyDR: map[string]float64{}}
	fam := map[string][2]int{}
	for i, t := range attacks {
		c := fam[t.Family]
		c[1]++
		if att[i] > th {
			c[0]++
		}
		fam[t.Family] = c
	}
	names := make([]string, 0, len(fam))
	for n := range fam {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		res.FamilyDR[n] = float64(fam[n][0]) / float64(fam[n][1])
	}
	return res
}

// String renders the headline numbers for logs and tests.
func (v VariantResult) String() string {
	return fmt.Sprintf("%-16s AUC %.3f  DR@1%% %.1f%%  DR@5%% %.1f%%  DR@10%% %.1f%%  held-out: DR %.1f%% FPR %.1f%%",
		v.Name, v.AUC, 100*v.DR1, 100*v.DR5, 100*v.DR10, 100*v.HeldDR, 100*v.HeldFPR)
}

// attackRun is the run number of an attack trace (Adduser_3/... → 3), 0 when
// the folder name carries none (LoadADFA refuses such traces).
func attackRun(t Trace) int {
	_, n, _ := parseRunDir(filepath.Base(filepath.Dir(t.Name)))
	return n
}

// splitAttacks separates the dev attacks (runs 1..devRuns of each family),
// the only attacks model selection may look at, from the held-out rest.
func splitAttacks(ts []Trace, devRuns int) (dev, held []Trace) {
	for _, t := range ts {
		if attackRun(t) <= devRuns {
			dev = append(dev, t)
		} else {
			held = append(held, t)
		}
	}
	return dev, held
}
