package eval

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// WriteMarkdown renders the report as the tables used in docs/bosc.md.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "ADFA-LD: %d training traces (%d calls), validation %d selection (A) + %d reporting (B) (%d calls), %d attack traces (%d calls).\n",
		r.Train, r.Calls[0], r.Sel, r.Rep, r.Calls[1], r.Attack, r.Calls[2])
	fmt.Fprintf(&b, "W=%d, E=%d, %d distinct bags learned; %d scored traces shorter than W. Thresholds chosen on A at FPR <= %.0f%%. Run time %s.\n\n",
		c.Window, c.Epoch, r.Bags, r.ShortTraces, 100*c.TargetFPR, r.Elapsed.Round(1e8))
	fmt.Fprintf(&b, "Papers' rule at T=%d (smallest T of the grid with FPR <= %.0f%% on A): DR %.1f%%, FPR %.1f%% (B).\n\n",
		r.PaperT, 100*c.TargetFPR, 100*r.PaperDR, 100*r.PaperFPR)
	if r.Ceiling != nil {
		r.Ceiling.writeMarkdown(&b)
	}
	fmt.Fprintf(&b, "Attacks: runs 1-%d of each family (%d traces) are the dev subset, used only for model selection (dev columns: selection normals vs dev attacks); all other columns use validation B vs the held-out attacks (runs > %d, %d traces). Regimes: plain = database from training only, T on A; +valA = database also fed A1, T on A2; +A-loo = database from training + A, T on A scored leave-one-out.\n\n",
		c.DevRuns, r.Dev, c.DevRuns, r.Held)
	b.WriteString("| variant | dev AUC | dev DR@5% | AUC | DR@1% | DR@5% | DR@10% | held-out DR | held-out FPR | AUC all attacks | per family (held-out DR) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, v := range r.Variants {
		fams := make([]string, 0, len(v.FamilyDR))
		for f := range v.FamilyDR {
			fams = append(fams, f)
		}
		sort.Strings(fams)
		var fs []string
		for _, f := range fams {
			fs = append(fs, fmt.Sprintf("%s %.0f%%", f, 100*v.FamilyDR[f]))
		}
		fmt.Fprintf(&b, "| %s | %.3f | %.1f%% | %.3f | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %.3f | %s |\n", v.Name, v.DevAUC, 100*v.DevDR5, v.AUC,
			100*v.DR1, 100*v.DR5, 100*v.DR10, 100*v.HeldDR, 100*v.HeldFPR, v.AUCAll, strings.Join(fs, ", "))
	}
	writeCalibration(&b, r.Calibration)
	r.writeSessions(&b)
	r.writeFoldChecks(&b)
	b.WriteString("\nWindow sweep (E fixed):\n\n| W | bags | AUC bosc-frac | AUC freq+6gram | held-out DR bosc-frac | held-out FPR |\n|---|---|---|---|---|---|\n")
	for _, x := range r.Windows {
		fmt.Fprintf(&b, "| %d | %d | %.3f | %.3f | %.1f%% | %.1f%% |\n", x.W, x.Bags, x.AUCFrac, x.AUCFreq6, 100*x.HeldDRFrac, 100*x.HeldFPRFrac)
	}
	b.WriteString("\nPapers' rule sweep, DR% / FPR% (attacks / validation B):\n\n| E \\ T |")
	for _, t := range c.Thresholds {
		fmt.Fprintf(&b, " %d |", t)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(c.Thresholds)) + "\n")
	cells := map[[2]int]SweepCell{}
	for _, s := range r.Sweep {
		cells[[2]int{s.Epoch, s.Threshold}] = s
	}
	for _, e := range c.Epochs {
		fmt.Fprintf(&b, "| %d |", e)
		for _, t := range c.Thresholds {
			s := cells[[2]int{e, t}]
			fmt.Fprintf(&b, " %.0f/%.0f |", 100*s.DR, 100*s.FPR)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
