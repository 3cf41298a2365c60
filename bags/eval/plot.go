package eval

import (
	"fmt"
	"image/color"
	"path/filepath"
	"slices"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// WriteFigures writes roc.{png,svg}, roc_low.{png,svg}, sweep_dr.{png,svg},
// sweep_fpr.{png,svg} and window_auc.{png,svg} into dir.
func WriteFigures(r *Report, dir string) error {
	if err := rocPlots(r, dir); err != nil {
		return err
	}
	for _, m := range []struct {
		name, title string
		val         func(SweepCell) float64
	}{
		{"sweep_dr", "BoSC papers' rule: detection rate (attacks)", func(c SweepCell) float64 { return c.DR }},
		{"sweep_fpr", "BoSC papers' rule: false-positive rate (validation B)", func(c SweepCell) float64 { return c.FPR }},
	} {
		if err := heatPlot(r, dir, m.name, m.title, m.val); err != nil {
			return err
		}
	}
	return windowPlot(r, dir)
}

func save(p *plot.Plot, dir, name string, w, h vg.Length) error {
	for _, ext := range []string{".png", ".svg"} {
		path := filepath.Join(dir, name+ext)
		wt, err := p.WriterTo(w, h, ext[1:])
		if err != nil {
			return fmt.Errorf("save figure %s: %w", path, err)
		}
		// Whole or not at all: a failed run keeps the earlier figure.
		if err := atomicfile.WriteFrom(path, wt, 0o644); err != nil {
			return fmt.Errorf("save figure %s: %w", path, err)
		}
	}
	return nil
}

// lineColors is the figures' palette, in the order variants are drawn.
func lineColors() []color.RGBA {
	return []color.RGBA{
		{0, 0, 0, 255}, {230, 25, 75, 255}, {60, 180, 75, 255}, {0, 130, 200, 255}, {245, 130, 48, 255},
		{145, 30, 180, 255}, {70, 240, 240, 255}, {240, 50, 230, 255}, {128, 128, 0, 255}, {0, 0, 128, 255},
	}
}

// DefaultROC returns the variants drawn in roc.* and roc_low.* unless
// Config.ROC says otherwise: the papers' pure BoSC, the n-gram reference and
// the main improvements (all variants are in the tables).
func DefaultROC() []string {
	return []string{"bosc-epoch", "bosc-frac", "stide-6", "bosc-frac+A-loo", "knn-bosc+A-loo",
		"6gram-lm+A-loo", "cover+A-loo", "logit(5)+A-loo", "logit(6)+A-loo", "knn-2class+A-loo (sup.)"}
}

// rocPlots writes the full ROC (roc.*) and its low-FPR part (roc_low.*,
// FPR ≤ 20%), where the 5% operating point lives.
func rocPlots(r *Report, dir string) error {
	shown := r.Config.ROC
	if len(shown) == 0 {
		shown = DefaultROC()
	}
	for _, f := range []struct {
		name string
		maxX float64
	}{{"roc", 1}, {"roc_low", 0.2}} {
		if err := rocPlot(r, dir, f.name, f.maxX, shown); err != nil {
			return err
		}
	}
	return nil
}

func rocPlot(r *Report, dir, name string, maxX float64, shown []string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("ADFA-LD ROC, W=%d (validation B vs held-out attacks)", r.Config.Window)
	p.X.Label.Text = "false-positive rate"
	p.Y.Label.Text = "detection rate"
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, maxX, 0, 1
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.YOffs = vg.Points(30)
	i := -1
	for _, v := range r.Variants {
		if !slices.Contains(shown, v.Name) {
			continue
		}
		i++
		var pts plotter.XYs
		for j, q := range v.ROC {
			if q.FPR > maxX {
				// Cut the curve at maxX, interpolating the crossing.
				a := v.ROC[j-1]
				y := a.TPR + (q.TPR-a.TPR)*(maxX-a.FPR)/(q.FPR-a.FPR)
				pts = append(pts, plotter.XY{X: maxX, Y: y})
				break
			}
			pts = append(pts, plotter.XY{X: q.FPR, Y: q.TPR})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		palette := lineColors()
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.2)
		if i >= len(palette) || v.Name == "stide-6" || v.Supervised {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (AUC %.3f)", v.Name, v.AUC), l)
	}
	if maxX < 1 {
		// The 5% FPR operating point of the goal.
		g, err := plotter.NewLine(plotter.XYs{{X: 0.05, Y: 0}, {X: 0.05, Y: 1}})
		if err != nil {
			return err
		}
		g.Color = color.RGBA{160, 160, 160, 255}
		g.Dashes = []vg.Length{vg.Points(1), vg.Points(2)}
		p.Add(g)
	}
	return save(p, dir, name, 7*vg.Inch, 6*vg.Inch)
}

// sweepGrid adapts the sweep to plotter.GridXYZ.
type sweepGrid struct {
	epochs, ts []int
	z          map[[2]int]float64
}

func (g sweepGrid) Dims() (c, r int)   { return len(g.epochs), len(g.ts) }
func (g sweepGrid) Z(c, r int) float64 { return g.z[[2]int{g.epochs[c], g.ts[r]}] }
func (g sweepGrid) X(c int) float64    { return float64(g.epochs[c]) }
func (g sweepGrid) Y(r int) float64    { return float64(g.ts[r]) }

func heatPlot(r *Report, dir, name, title string, val func(SweepCell) float64) error {
	g := sweepGrid{epochs: r.Config.Epochs, ts: r.Config.Thresholds, z: map[[2]int]float64{}}
	for _, c := range r.Sweep {
		g.z[[2]int{c.Epoch, c.Threshold}] = val(c)
	}
	pal := moreland.SmoothBlueRed()
	pal.SetMin(0)
	pal.SetMax(1)
	h := plotter.NewHeatMap(g, pal.Palette(64))
	h.Min, h.Max = 0, 1
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "epoch (calls)"
	p.Y.Label.Text = "threshold T (mismatches)"
	p.Add(h)
	var labels plotter.XYLabels
	for _, c := range r.Sweep {
		labels.XYs = append(labels.XYs, plotter.XY{X: float64(c.Epoch), Y: float64(c.Threshold)})
		labels.Labels = append(labels.Labels, fmt.Sprintf("%.0f", 100*val(c)))
	}
	if l, err := plotter.NewLabels(labels); err == nil {
		p.Add(l)
	}
	return save(p, dir, name, 7*vg.Inch, 5*vg.Inch)
}

func windowPlot(r *Report, dir string) error {
	p := plot.New()
	p.Title.Text = "ADFA-LD AUC vs window size"
	p.X.Label.Text = "window W"
	p.Y.Label.Text = "ROC AUC (validation B vs attacks)"
	var a, b plotter.XYs
	for _, w := range r.Windows {
		a = append(a, plotter.XY{X: float64(w.W), Y: w.AUCFrac})
		b = append(b, plotter.XY{X: float64(w.W), Y: w.AUCFreq6})
	}
	for i, s := range []struct {
		name string
		pts  plotter.XYs
	}{{"bosc-frac", a}, {"freq+6gram", b}} {
		l, pts, err := plotter.NewLinePoints(s.pts)
		if err != nil {
			return err
		}
		l.Color, pts.Color = lineColors()[i], lineColors()[i]
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	p.Legend.Top = false
	return save(p, dir, "window_auc", 6*vg.Inch, 4*vg.Inch)
}
