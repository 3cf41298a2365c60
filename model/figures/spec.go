package figures

import (
	"fmt"

	"github.com/escape-mtd/escape/model"
)

// Kind is which closed form a series is compared with.
type Kind int

const (
	// Static compares with equation 1 and simulates a prey that stays put.
	Static Kind = iota
	// Mobile compares with equation 2 and simulates the migrating prey.
	Mobile
)

// Series is one scenario on a panel: a closed-form line and a simulated one.
type Series struct {
	Label  string
	Kind   Kind
	Params model.Params
}

// Panel is one set of axes.
type Panel struct {
	Title  string
	Series []Series
}

// Figure is one of the papers' figures.
type Figure struct {
	ID      string // file stem, e.g. "fig4"
	Title   string
	Panels  []Panel
	Comment string // what the paper's text says the figure shows
}

var tds = []float64{0, 0.2, 0.5, 1, 10}

// Paper returns Figures 4–9 with Table I's parameters, plus "fig10", the
// exponential growth Table I lists but no figure of the papers shows.
func Paper() []Figure {
	var f4s, f4m, f5, f6, f7s, f7m, f8, f9, f10s, f10m []Series
	for _, n := range []float64{1, 2, 3, 4, 5, 7} {
		p := model.Params{V: 20, N: n}
		f4s = append(f4s, Series{fmt.Sprintf("N=%g", n), Static, p})
		f4m = append(f4m, Series{fmt.Sprintf("N=%g", n), Mobile, p})
	}
	for _, td := range tds {
		p := model.Params{V: 20, N: 7, ApplyTd: true, Td: td}
		f5 = append(f5, Series{fmt.Sprintf("td=%g", td), Mobile, p})
		f6 = append(f6, Series{fmt.Sprintf("td=%g", td), Static, p})
		pl := model.Params{V: 20, N: 4, Growth: model.GrowthLogistic, K: 4, Mu: 4, ApplyTd: true, Td: td}
		f8 = append(f8, Series{fmt.Sprintf("td=%g", td), Mobile, pl})
	}
	for _, k := range []float64{1, 2, 3, 4} {
		p := model.Params{V: 20, N: 1, Growth: model.GrowthLogistic, K: k, Mu: 4}
		f7s = append(f7s, Series{fmt.Sprintf("k=%g", k), Static, p})
		f7m = append(f7m, Series{fmt.Sprintf("k=%g", k), Mobile, p})
		pe := model.Params{V: 20, N: 1, Growth: model.GrowthExponential, K: k}
		f10s = append(f10s, Series{fmt.Sprintf("k=%g", k), Static, pe})
		f10m = append(f10m, Series{fmt.Sprintf("k=%g", k), Mobile, pe})
	}
	for _, v := range []float64{20, 30, 40, 50} {
		f9 = append(f9, Series{fmt.Sprintf("V=%g", v), Mobile, model.Params{V: v, N: 7}})
	}
	return []Figure{
		{"fig4", "Fig. 4: static/mobile container, V=20, constant N", []Panel{{"static", f4s}, {"mobile", f4m}},
			"paper: mobile survives better; more hacked hosts, lower survival"},
		{"fig5", "Fig. 5: mobile container, N=7, V=20, detection time td", []Panel{{"mobile", f5}},
			"paper: smaller td, better survival"},
		{"fig6", "Fig. 6: static container, N=7, V=20, detection time td", []Panel{{"static", f6}},
			"paper: static survival small at every td"},
		{"fig7", "Fig. 7: logistic growth N0=1, mu=4, V=20, rate k", []Panel{{"static", f7s}, {"mobile", f7m}},
			"paper: faster growth, lower survival"},
		{"fig8", "Fig. 8: mobile container, logistic N0=mu=k=4, V=20, td", []Panel{{"mobile", f8}},
			"paper: small td mitigates growth (N0=mu makes N constant = 4)"},
		{"fig9", "Fig. 9: mobile container, N=7, victims V", []Panel{{"mobile", f9}},
			"paper: more victim hosts, better survival"},
		{"fig10", "Fig. 10 (not in the papers): exponential growth N0=1, V=20, rate k", []Panel{{"static", f10s}, {"mobile", f10m}},
			"Table I lists exponential k=1..4 but no figure shows it"},
	}
}
