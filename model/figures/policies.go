package figures

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/model"
)

// TableTimes are the times at which the policy table reports survival.
var TableTimes = []float64{10, 25, 50, 100}

// PolicyTable renders the comparison as a Markdown table with 95% intervals.
func PolicyTable(runs []model.PolicyRun) string {
	var b strings.Builder
	b.WriteString("| scenario | policy |")
	for _, t := range TableTimes {
		fmt.Fprintf(&b, " P(t=%g) [95%% CI] |", t)
	}
	b.WriteString(" migrations/trial |\n|---|---|")
	for range TableTimes {
		b.WriteString("---|")
	}
	b.WriteString("---|\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "| %s | %s |", r.Scenario, r.Policy)
		for _, t := range TableTimes {
			p, lo, hi := r.Result.At(t)
			fmt.Fprintf(&b, " %.4f [%.4f, %.4f] |", p, lo, hi)
		}
		fmt.Fprintf(&b, " %.1f |\n", float64(r.Result.Migrations)/float64(r.Result.Trials))
	}
	return b.String()
}

// WritePolicies writes policies.png/.svg (one panel per scenario), the
// per-time CSV and policies.md with the table.
func WritePolicies(dir string, runs []model.PolicyRun, caption []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing policy comparison: %w", err)
	}
	var panels []panelData
	idx := map[string]int{}
	for _, r := range runs {
		i, ok := idx[r.Scenario]
		if !ok {
			i = len(panels)
			idx[r.Scenario] = i
			panels = append(panels, panelData{title: r.Scenario})
		}
		panels[i].lines = append(panels[i].lines, line{label: r.Policy, sim: r.Result})
	}
	if err := renderPanels(dir, "policies", "Destination policies", panels, caption); err != nil {
		return fmt.Errorf("rendering policy comparison: %w", err)
	}
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"scenario", "policy", "t", "sim", "sim_lo95", "sim_hi95", "trials"})
	for _, r := range runs {
		for i, t := range r.Result.Times {
			_ = w.Write([]string{r.Scenario, r.Policy, ff(t), ff(r.Result.Survival[i]), ff(r.Result.Lo[i]), ff(r.Result.Hi[i]), strconv.Itoa(r.Result.Trials)})
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return fmt.Errorf("writing policies.csv: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "policies.csv"), b.Bytes(), 0o644); err != nil {
		return err
	}
	md := "# Destination policy comparison\n\n" + strings.Join(caption, "\n\n") + "\n\n" + PolicyTable(runs)
	return atomicfile.WriteFile(filepath.Join(dir, "policies.md"), []byte(md), 0o644)
}
