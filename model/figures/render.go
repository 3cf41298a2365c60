package figures

import (
	"fmt"
	"image/color"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/model"
)

// line is one legend entry: an optional closed-form curve (solid) and an
// optional simulated curve (dashed, with its 95% band) in the same colour.
type line struct {
	label  string
	ct, cp []float64
	sim    *model.SimResult
}

type panelData struct {
	title string
	lines []line
}

func render(dir string, f Figure, curves [][]Curve, caption []string) error {
	var panels []panelData
	for i, pc := range curves {
		pd := panelData{title: f.Panels[i].Title}
		for _, cv := range pc {
			pd.lines = append(pd.lines, line{label: cv.Label, ct: cv.FineT, cp: cv.FineP, sim: cv.Sim})
		}
		panels = append(panels, pd)
	}
	return renderPanels(dir, f.ID, f.Title, panels, caption)
}

func renderPanels(dir, id, title string, panels []panelData, caption []string) error {
	var row []*plot.Plot
	for _, pd := range panels {
		p, err := panelPlot(title, pd)
		if err != nil {
			return err
		}
		row = append(row, p)
	}
	w := vg.Length(len(row)) * 5.5 * vg.Inch
	h := 4.6 * vg.Inch
	png := vgimg.New(w, h)
	if err := drawAll(draw.New(png), row, caption); err != nil {
		return err
	}
	if err := atomicfile.WriteFrom(filepath.Join(dir, id+".png"), vgimg.PngCanvas{Canvas: png}, 0o644); err != nil {
		return err
	}
	svg := vgsvg.New(w, h)
	if err := drawAll(draw.New(svg), row, caption); err != nil {
		return err
	}
	return atomicfile.WriteFrom(filepath.Join(dir, id+".svg"), svg, 0o644)
}

// drawAll lays the panels side by side above the caption lines.
func drawAll(dc draw.Canvas, row []*plot.Plot, caption []string) error {
	// ~3.7 pt per character at 8 pt: wrap so single-panel captions fit.
	caption = wrap(caption, int(float64(dc.Max.X-dc.Min.X-16)/3.7))
	capH := vg.Length(len(caption)) * 12 * vg.Length(1)
	top := draw.Crop(dc, 0, 0, capH+6, 0)
	tiles := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 2, PadTop: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4}
	cs := plot.Align([][]*plot.Plot{row}, tiles, top)
	for i, p := range row {
		p.Draw(cs[0][i])
	}
	sty := draw.TextStyle{Color: color.Black, Font: font.From(plot.DefaultFont, 8), Handler: plot.DefaultTextHandler}
	for i, l := range caption {
		dc.FillText(sty, vg.Point{X: dc.Min.X + 8, Y: dc.Min.Y + capH - vg.Length(i+1)*12 + 4}, l)
	}
	return nil
}

func panelPlot(title string, pd panelData) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title + " — " + pd.title
	p.Title.TextStyle.Font.Size = 10
	p.X.Label.Text = "time (units)"
	p.Y.Label.Text = "survival probability"
	p.Y.Min, p.Y.Max = 0, 1.02
	p.Legend.Top = true
	p.Legend.TextStyle.Font.Size = 8
	p.Add(plotter.NewGrid())
	for i, l := range pd.lines {
		col := plotutil.Color(i)
		if l.sim != nil {
			band, err := ciBand(l.sim, col)
			if err != nil {
				return nil, err
			}
			p.Add(band)
		}
		if len(l.ct) > 0 {
			xy := make(plotter.XYs, len(l.ct))
			for j := range l.ct {
				xy[j].X, xy[j].Y = l.ct[j], l.cp[j]
			}
			cl, err := plotter.NewLine(xy)
			if err != nil {
				return nil, fmt.Errorf("closed-form line %s: %w", l.label, err)
			}
			cl.Color, cl.Width = col, vg.Points(1.5)
			p.Add(cl)
			p.Legend.Add(l.label+" closed", cl)
		}
		if l.sim != nil {
			xy := make(plotter.XYs, len(l.sim.Times))
			for j := range xy {
				xy[j].X, xy[j].Y = l.sim.Times[j], l.sim.Survival[j]
			}
			sl, err := plotter.NewLine(xy)
			if err != nil {
				return nil, fmt.Errorf("simulated line %s: %w", l.label, err)
			}
			sl.Color, sl.Width, sl.Dashes = col, vg.Points(1.2), []vg.Length{vg.Points(4), vg.Points(2)}
			p.Add(sl)
			p.Legend.Add(l.label+" sim", sl)
		}
	}
	return p, nil
}

// ciBand shades the 95% interval of a simulated curve.
func ciBand(r *model.SimResult, col color.Color) (*plotter.Polygon, error) {
	n := len(r.Times)
	xy := make(plotter.XYs, 0, 2*n)
	for i := 0; i < n; i++ {
		xy = append(xy, plotter.XY{X: r.Times[i], Y: r.Hi[i]})
	}
	for i := n - 1; i >= 0; i-- {
		xy = append(xy, plotter.XY{X: r.Times[i], Y: r.Lo[i]})
	}
	poly, err := plotter.NewPolygon(xy)
	if err != nil {
		return nil, fmt.Errorf("CI band: %w", err)
	}
	c := color.NRGBAModel.Convert(col).(color.NRGBA)
	c.A = 50
	poly.Color = c
	poly.LineStyle.Width = 0
	return poly, nil
}

// wrap breaks caption lines at spaces so none exceeds width characters.
func wrap(lines []string, width int) []string {
	var out []string
	for _, l := range lines {
		for len(l) > width {
			cut := strings.LastIndex(l[:width], " ")
			if cut <= 0 {
				cut = width
			}
			out = append(out, l[:cut])
			l = "    " + strings.TrimLeft(l[cut:], " ")
		}
		out = append(out, l)
	}
	return out
}
