package eval

import (
	"fmt"
	"sort"
	"strings"
)

// writeSessions renders the session view of every variant, one table per
// aggregate, headed so that it cannot be mistaken for the per-trace table.
func (r *Report) writeSessions(b *strings.Builder) {
	if len(r.Variants) == 0 || len(r.Variants[0].Sessions) == 0 {
		return
	}
	c := r.Config
	for ai := range r.Variants[0].Sessions {
		s0 := r.Variants[0].Sessions[ai]
		fmt.Fprintf(b, "\nSESSION VIEW (not per trace), aggregate %s: a session is one attack run (Attack_Data_Master folder) vs normal pseudo-sessions of consecutive validation traces sized like the runs. Threshold chosen on the selection pseudo-sessions (%d for A) at FPR <= %.0f%%; reported on validation B (%d pseudo-sessions) vs the held-out runs %d-10 (%d runs: one run is %.1f points of DR). Dev: selection pseudo-sessions vs dev runs 1-%d (%d runs).\n\n",
			s0.Agg, s0.Sel, 100*c.TargetFPR, s0.Rep, c.DevRuns+1, s0.Held, 100/float64(max(s0.Held, 1)), c.DevRuns, s0.Dev)
		b.WriteString("| variant | dev AUC | dev DR@5% | AUC | DR@1% | DR@5% | DR@10% | held-out DR | held-out FPR | held-out runs detected per family |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, v := range r.Variants {
			s := v.Sessions[ai]
			fams := make([]string, 0, len(s.FamilyRuns))
			for f := range s.FamilyRuns {
				fams = append(fams, f)
			}
			sort.Strings(fams)
			var fs []string
			for _, f := range fams {
				fs = append(fs, fmt.Sprintf("%s %d/%d", f, s.FamilyDetected[f], s.FamilyRuns[f]))
			}
			fmt.Fprintf(b, "| %s | %.3f | %.1f%% | %.3f | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %s |\n", v.Name, s.DevAUC, 100*s.DevDR5,
				s.AUC, 100*s.DR1, 100*s.DR5, 100*s.DR10, 100*s.HeldDR, 100*s.HeldFPR, strings.Join(fs, ", "))
		}
	}
}

// writeFoldChecks renders the fold-out threshold check (foldout.go).
func (r *Report) writeFoldChecks(b *strings.Builder) {
	if len(r.FoldChecks) == 0 {
		return
	}
	fmt.Fprintf(b, "\nFOLD-OUT THRESHOLD CHECK (+A-loo variants): thresholds chosen on A at FPR <= %.0f%% with A scored leave-one-out (as reported above), with %d folds of A pseudo-sessions left out (siblings in a pseudo-session leave together), and with %d folds of single traces left out (same database size, siblings stay). Cells: held-out DR / FPR on B at that threshold.\n\n",
		100*r.Config.TargetFPR, r.Config.FoldCheck, r.Config.FoldCheck)
	b.WriteString("| variant | unit | leave-one-out | session folds | trace folds |\n|---|---|---|---|---|\n")
	cell := func(x [2]float64) string { return fmt.Sprintf("%.1f%% / %.1f%%", 100*x[0], 100*x[1]) }
	for _, fc := range r.FoldChecks {
		for _, row := range fc.Rows {
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", fc.Variant, row.Unit, cell(row.LOO), cell(row.SessionFold), cell(row.TraceFold))
		}
	}
}

// writeMarkdown renders the ceiling analysis.
func (c *CeilingReport) writeMarkdown(b *strings.Builder) {
	fmt.Fprintf(b, "PER-TRACE CEILING on the held-out split (%d attack traces of runs > %d vs %d validation-B traces, W=%d).\n\n", c.Held, c.DevRuns, c.Rep, c.W)
	fmt.Fprintf(b, "Exact duplicates: %d held-out attack traces equal a training or validation-A trace; %d equal a validation-B trace%s. (For scale: %d of %d B traces equal a training or A trace.)\n\n",
		len(c.DupNormal), len(c.DupRep), listed(c.DupRep), c.RepDupNormal, c.Rep)
	b.WriteString("Upper bound on DR for ANY per-trace detector (an attack trace identical to a B trace must score as it does):\n\n| FPR on B <= | best possible DR |\n|---|---|\n")
	for _, p := range c.ExactDR {
		fmt.Fprintf(b, "| %.0f%% | %.1f%% |\n", 100*p.FPR, 100*p.TPR)
	}
	b.WriteString("\nFully covered traces (no unseen feature): a novelty detector (score grows only with the set of unseen n-grams/bags) gives them its minimum score, tied with the covered B traces, so its DR is at most the bound below at every FPR under the covered share of B.\n\n| reference | feature | held-out attack traces covered | B traces covered | novelty DR bound | valid for FPR < |\n|---|---|---|---|---|---|\n")
	for _, r := range c.Coverage {
		row := func(feat string, att, rep int) {
			fmt.Fprintf(b, "| %s | %s | %d (%.1f%%) | %d (%.1f%%) | %.1f%% | %.1f%% |\n", r.Ref, feat, att, 100*float64(att)/float64(c.Held),
				rep, 100*float64(rep)/float64(c.Rep), 100*c.NoveltyDR(att), 100*float64(rep)/float64(c.Rep))
		}
		for n := 1; n <= NGram; n++ {
			row(fmt.Sprintf("%d-grams", n), r.Grams[n], r.RepGrams[n])
		}
		row(fmt.Sprintf("bags W=%d", c.W), r.Bags, r.RepBags)
		row("all of the above", r.All, r.RepAll)
	}
	b.WriteString("\nHeld-out attack traces covered under every feature by training + A, by program (three most frequent calls):\n\n| top calls | traces | length | families | e.g. |\n|---|---|---|---|---|\n")
	for _, g := range c.Covered {
		fmt.Fprintf(b, "| %s | %d | %d-%d | %s | %s |\n", g.Top, g.Traces, g.MinLen, g.MaxLen, strings.Join(g.Families, ", "), strings.Join(g.Sample, ", "))
	}
	b.WriteString("\n")
}

func listed(xs []string) string {
	if len(xs) == 0 {
		return ""
	}
	return " (" + strings.Join(xs, "; ") + ")"
}
