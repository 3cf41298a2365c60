package figures

import (
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/model"
)

func TestPaperFiguresUseTableI(t *testing.T) {
	figs := Paper()
	ids := map[string]bool{}
	for _, f := range figs {
		ids[f.ID] = true
		for _, p := range f.Panels {
			for _, s := range p.Series {
				if _, err := model.New(s.Params); err != nil {
					t.Errorf("%s %s: %v", f.ID, s.Label, err)
				}
			}
		}
	}
	for _, id := range []string{"fig4", "fig5", "fig6", "fig7", "fig8", "fig9"} {
		if !ids[id] {
			t.Errorf("missing %s", id)
		}
	}
}

func TestWriteFigure(t *testing.T) {
	dir := t.TempDir()
	c := DefaultConfig(dir)
	c.Trials = 300
	f := Paper()[0] // fig4: two panels of six series
	if err := Write(context.Background(), f, c); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{".png", ".svg", ".csv"} {
		st, err := os.Stat(filepath.Join(dir, f.ID+ext))
		if err != nil || st.Size() < 1000 {
			t.Fatalf("%s%s: %v (size %v)", f.ID, ext, err, st)
		}
	}
	fh, _ := os.Open(filepath.Join(dir, f.ID+".csv"))
	defer fh.Close()
	rows, err := csv.NewReader(fh).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + 12*101; len(rows) != want {
		t.Fatalf("csv rows = %d, want %d", len(rows), want)
	}
	// At t = 0 every curve starts at 1; the sim column is a probability.
	for _, r := range rows[1:] {
		sim, _ := strconv.ParseFloat(r[12], 64)
		if r[10] == "0" && (r[11] != "1" || sim != 1) || sim < 0 || sim > 1 {
			t.Fatalf("bad row %v", r)
		}
	}
	svg, _ := os.ReadFile(filepath.Join(dir, f.ID+".svg"))
	if !strings.Contains(string(svg), "Interpretation: small-t=clamp") {
		t.Error("caption with the interpretation missing from the SVG")
	}
}
