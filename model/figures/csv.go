package figures

import (
	"bytes"
	"encoding/csv"
	"strconv"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

func ff(x float64) string { return strconv.FormatFloat(x, 'g', 8, 64) }

// writeCSV writes one row per series and time: the closed form and the
// simulated survival with its interval, plus the interpretation used.
func writeCSV(path string, f Figure, curves [][]Curve, c Config) error {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"figure", "panel", "series", "kind", "V", "N0", "growth", "k", "mu", "td", "t",
		"closed_form", "sim", "sim_lo95", "sim_hi95", "trials"})
	for _, panel := range curves {
		for _, cv := range panel {
			kind := "static"
			if cv.Kind == Mobile {
				kind = "mobile"
			}
			td := ""
			if cv.Params.ApplyTd {
				td = ff(cv.Params.Td)
			}
			for i, t := range cv.Sim.Times {
				_ = w.Write([]string{f.ID, cv.Panel, cv.Label, kind, ff(cv.Params.V), ff(cv.Params.N), cv.Params.Growth.String(),
					ff(cv.Params.K), ff(cv.Params.Mu), td, ff(t), ff(cv.Closed[i]), ff(cv.Sim.Survival[i]),
					ff(cv.Sim.Lo[i]), ff(cv.Sim.Hi[i]), strconv.Itoa(cv.Sim.Trials)})
			}
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b.Bytes(), 0o644)
}
