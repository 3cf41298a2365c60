package model

import (
	"context"
	"errors"
	"math"
	"testing"
)

func mustModel(t *testing.T, p Params, opts ...Option) *Model {
	t.Helper()
	m, err := New(p, opts...)
	if err != nil {
		t.Fatalf("New(%+v): %v", p, err)
	}
	return m
}

func near(t *testing.T, what string, got, want, relTol float64) {
	t.Helper()
	if math.Abs(got-want) > relTol*math.Max(math.Abs(want), 1e-300) {
		t.Errorf("%s = %.12g, want %.12g (rel tol %g)", what, got, want, relTol)
	}
}

func call(t *testing.T, f func(float64) (float64, error), x float64) float64 {
	t.Helper()
	y, err := f(x)
	if err != nil {
		t.Fatalf("at %v: %v", x, err)
	}
	return y
}

// Hand-computed points: S(100) = 100π/ln 100 = 68.21881769…
func TestClosedFormHandPoints(t *testing.T) {
	m := mustModel(t, Params{V: 20, N: 1})
	near(t, "S(100)", call(t, m.S, 100), 68.21881769209206, 1e-12)
	near(t, "S(1) clamp", call(t, m.S, 1), math.Pi, 1e-12)
	near(t, "S(e) clamp", call(t, m.S, math.E), math.Pi*math.E, 1e-12)
	// exp(−(1/20)·68.2188) and exp(−(1/20)³·68.2188)
	near(t, "Pstatic(100) N=1", call(t, m.Static, 100), 0.033010127039639854, 1e-9)
	near(t, "Pmobile(100) N=1", call(t, m.Mobile, 100), 0.9915089025308503, 1e-12)
	m7 := mustModel(t, Params{V: 20, N: 7})
	near(t, "Pstatic(100) N=7", call(t, m7.Static, 100), 4.2710078537054697e-11, 1e-9)
	near(t, "Pmobile(100) N=7", call(t, m7.Mobile, 100), 0.05367103499540615, 1e-9)
	// Equation 3: f = 1 − e^(−0.5) = 0.39347; P = exp(−0.35·f·S(10)), S(10) = 10π/ln 10.
	md := mustModel(t, Params{V: 20, N: 7, ApplyTd: true, Td: 0.5})
	near(t, "f(0.5)", md.SuccessFraction(), 0.3934693402873666, 1e-12)
	near(t, "Pstatic td=0.5 t=10", call(t, md.Static, 10), 0.15275179617158133, 1e-8)
	near(t, "inverted f(0.5)", mustModel(t, Params{V: 20, N: 7, ApplyTd: true, Td: 0.5}, WithDetect(DetectInverted)).SuccessFraction(), math.Exp(-0.5), 1e-12)
	// Logistic N0=1, μ=4, k=1 at t=1: 4e/(e+3).
	ml := mustModel(t, Params{V: 20, N: 1, Growth: GrowthLogistic, K: 1, Mu: 4})
	near(t, "logistic N(1)", ml.NAt(1), 1.9014675456746868, 1e-12)
	near(t, "exponential N(1)", mustModel(t, Params{V: 20, N: 1, Growth: GrowthExponential, K: 1}).NAt(1), math.E, 1e-12)
	near(t, "S shift(10)", call(t, mustModel(t, Params{V: 20, N: 1}, WithSmallTime(SmallTimeShift)).S, 10), 12.353687201106071, 1e-12)
}

func TestRhoReadings(t *testing.T) {
	p := Params{V: 20, N: 1, Growth: GrowthExponential, K: 1}
	// t = 2 < e, so S' = π: ∫ e^s/20 π ds = π(e²−1)/20 for both integrated and averaged.
	want := math.Exp(-math.Pi * (math.E*math.E - 1) / 20)
	near(t, "integrated", call(t, mustModel(t, p, WithRho(RhoIntegrated)).Static, 2), want, 1e-9)
	near(t, "average", call(t, mustModel(t, p, WithRho(RhoAverage)).Static, 2), want, 1e-9)
	near(t, "instant", call(t, mustModel(t, p).Static, 2), math.Exp(-math.E*math.E/20*2*math.Pi), 1e-12)
	// Past the cap N = V every reading tends to ρ = 1: integrated hazard
	// grows by exactly S(b) − S(a) between two late times.
	mi := mustModel(t, p, WithRho(RhoIntegrated))
	a, b := call(t, mi.Static, 50), call(t, mi.Static, 80)
	near(t, "integrated late increment", math.Log(a)-math.Log(b), call(t, mi.S, 80)-call(t, mi.S, 50), 1e-6)
}

func TestMobileTimeReadings(t *testing.T) {
	p := Params{V: 20, N: 1}
	mh := mustModel(t, p, WithMobileTime(MobileAtHorizon), WithHorizon(100))
	if a, b := call(t, mh.Mobile, 3), call(t, mh.Mobile, 70); a != b {
		t.Errorf("horizon reading must be flat: %v vs %v", a, b)
	}
	// Renewal, τ = 1, t = 2.5: ρ³(2 S(1) + S(0.5)) = (2π + π/2)/8000.
	mr := mustModel(t, p, WithMobileTime(MobileRenewal), WithPeriod(1))
	near(t, "renewal", call(t, mr.Mobile, 2.5), 0.9990187340523632, 1e-12)
}

func TestLimits(t *testing.T) {
	for _, g := range []Params{{V: 20, N: 0}, {V: 20, N: 0, Growth: GrowthExponential, K: 3}, {V: 20, N: 0, Growth: GrowthLogistic, K: 3, Mu: 4}} {
		m := mustModel(t, g)
		for _, x := range []float64{0, 1, 10, 100} {
			if s, mo := call(t, m.Static, x), call(t, m.Mobile, x); s != 1 || mo != 1 {
				t.Errorf("%v N=0 t=%v: static %v mobile %v, want 1", g.Growth, x, s, mo)
			}
		}
	}
	// N = V: ρ = 1 so static and mobile coincide: exp(−S).
	mv := mustModel(t, Params{V: 20, N: 20})
	for _, x := range []float64{0.5, 5, 50} {
		s := call(t, mv.S, x)
		near(t, "N=V static", call(t, mv.Static, x), math.Exp(-s), 1e-12)
		near(t, "N=V mobile", call(t, mv.Mobile, x), math.Exp(-s), 1e-12)
	}
	// t_d = 0: every visit detected, P = 1; t_d → ∞ gives back equation 1.
	m0 := mustModel(t, Params{V: 20, N: 7, ApplyTd: true, Td: 0})
	if p := call(t, m0.Static, 100); p != 1 {
		t.Errorf("td=0 static = %v, want 1", p)
	}
	mInf := mustModel(t, Params{V: 20, N: 7, ApplyTd: true, Td: math.Inf(1)})
	near(t, "td=inf", call(t, mInf.Static, 30), call(t, mustModel(t, Params{V: 20, N: 7}).Static, 30), 1e-12)
	// t → ∞: S → ∞ so both go to 0 for N > 0; with S capped at V, to e^(−N).
	if p := call(t, mustModel(t, Params{V: 50, N: 1}).Mobile, 1e9); p > 1e-6 {
		t.Errorf("mobile t=1e9 = %v, want -> 0", p)
	}
	near(t, "capped S limit", call(t, mustModel(t, Params{V: 20, N: 3}, WithCapSAtV(true)).Static, 1e6), math.Exp(-3), 1e-12)
	// Logistic tends to μ, exponential is capped at V.
	near(t, "logistic limit", mustModel(t, Params{V: 20, N: 1, Growth: GrowthLogistic, K: 2, Mu: 4}).NAt(100), 4, 1e-12)
	near(t, "exp cap", mustModel(t, Params{V: 20, N: 1, Growth: GrowthExponential, K: 4}).NAt(100), 20, 0)
	// S(0) = 0 so every curve starts at 1.
	for _, st := range []SmallTime{SmallTimeClamp, SmallTimeShift} {
		if p := call(t, mustModel(t, Params{V: 20, N: 7}, WithSmallTime(st)).Static, 0); p != 1 {
			t.Errorf("small-t %v: P(0) = %v", st, p)
		}
	}
}

func TestLogisticBelowN0(t *testing.T) {
	p := Params{V: 20, N: 4, Growth: GrowthLogistic, K: 1, Mu: 1}
	near(t, "as written declines to mu", mustModel(t, p).NAt(50), 1, 1e-12)
	near(t, "hold stays at N0", mustModel(t, p, WithLogistic(LogisticHold)).NAt(50), 4, 0)
	if _, err := New(p, WithLogistic(LogisticReject)); !errors.Is(err, ErrInvalidParam) {
		t.Errorf("reject: err = %v, want ErrInvalidParam", err)
	}
	// μ = N0 is constant under every reading (the papers' Figure 8 case).
	near(t, "mu=N0", mustModel(t, Params{V: 20, N: 4, Growth: GrowthLogistic, K: 4, Mu: 4}).NAt(7), 4, 1e-12)
}

func TestBadParams(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name string
		p    Params
		opts []Option
	}{
		{"negative N", Params{V: 20, N: -1}, nil},
		{"NaN N", Params{V: 20, N: nan}, nil},
		{"N > V", Params{V: 20, N: 21}, nil},
		{"V zero", Params{V: 0, N: 0}, nil},
		{"V inf", Params{V: math.Inf(1), N: 1}, nil},
		{"negative k", Params{V: 20, N: 1, Growth: GrowthExponential, K: -1}, nil},
		{"NaN k", Params{V: 20, N: 1, Growth: GrowthLogistic, K: nan, Mu: 2}, nil},
		{"mu zero", Params{V: 20, N: 1, Growth: GrowthLogistic, K: 1, Mu: 0}, nil},
		{"mu > V", Params{V: 20, N: 1, Growth: GrowthLogistic, K: 1, Mu: 30}, nil},
		{"negative td", Params{V: 20, N: 1, ApplyTd: true, Td: -0.1}, nil},
		{"NaN td", Params{V: 20, N: 1, ApplyTd: true, Td: nan}, nil},
		{"unknown growth", Params{V: 20, N: 1, Growth: 9}, nil},
		{"bad period", Params{V: 20, N: 1}, []Option{WithMobileTime(MobileRenewal), WithPeriod(0)}},
		{"literal integrated", Params{V: 20, N: 1, Growth: GrowthExponential, K: 1}, []Option{WithSmallTime(SmallTimeLiteral), WithRho(RhoIntegrated)}},
	}
	for _, c := range cases {
		if _, err := New(c.p, c.opts...); !errors.Is(err, ErrInvalidParam) {
			t.Errorf("%s: err = %v, want ErrInvalidParam", c.name, err)
		}
	}
	m := mustModel(t, Params{V: 20, N: 1})
	for _, x := range []float64{-1, nan, math.Inf(1)} {
		if _, err := m.Static(x); !errors.Is(err, ErrInvalidParam) {
			t.Errorf("Static(%v): err = %v", x, err)
		}
	}
	lit := mustModel(t, Params{V: 20, N: 1}, WithSmallTime(SmallTimeLiteral))
	if _, err := lit.Static(0.5); !errors.Is(err, ErrInvalidParam) {
		t.Errorf("literal S(0.5): err = %v, want ErrInvalidParam", err)
	}
	near(t, "literal S(100)", call(t, lit.S, 100), 68.21881769209206, 1e-12)
}

func TestInterpretationRoundTrip(t *testing.T) {
	in := Interpretation{SmallTime: SmallTimeShift, Mobile: MobileRenewal, Rho: RhoIntegrated,
		Detect: DetectInverted, Logistic: LogisticHold, CapNAtV: false, CapSAtV: true, Horizon: 100, Period: 2.5}
	got, err := ParseInterpretation(in.String())
	if err != nil {
		t.Fatal(err)
	}
	if got != in {
		t.Errorf("round trip: got %+v want %+v", got, in)
	}
	for _, bad := range []string{"rho", "rho=sideways", "nope=1", "period=-1", "capN=maybe", "horizon=NaN"} {
		if _, err := ParseInterpretation(bad); !errors.Is(err, ErrInvalidParam) {
			t.Errorf("ParseInterpretation(%q): err = %v", bad, err)
		}
	}
}

func FuzzParseInterpretation(f *testing.F) {
	f.Add("small-t=clamp,T=t,rho=instant")
	f.Add("T=renewal,period=3")
	f.Add(",,=")
	f.Fuzz(func(t *testing.T, s string) {
		in, err := ParseInterpretation(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidParam) {
				t.Fatalf("error not wrapping ErrInvalidParam: %v", err)
			}
			return
		}
		again, err := ParseInterpretation(in.String())
		if err != nil || again != in {
			t.Fatalf("String() of a parsed value does not round-trip: %q -> %+v -> %v", s, in, err)
		}
		if _, err := New(Params{V: 20, N: 3, Growth: GrowthLogistic, K: 1, Mu: 2}, WithInterpretation(in)); err != nil && !errors.Is(err, ErrInvalidParam) {
			t.Fatalf("New with parsed interpretation: %v", err)
		}
	})
}

func FuzzParams(f *testing.F) {
	f.Add(20.0, 3.0, 1.0, 4.0, 0.5, uint8(2))
	f.Fuzz(func(t *testing.T, v, n, k, mu, td float64, g uint8) {
		m, err := New(Params{V: v, N: n, Growth: Growth(g % 4), K: k, Mu: mu, ApplyTd: true, Td: td},
			WithRho(RhoMode(g/4%3)), WithCapNAtV(g&64 == 0), WithLogistic(LogisticMode(g/16%3)))
		if err != nil {
			if !errors.Is(err, ErrInvalidParam) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		for _, x := range []float64{0, 0.5, 3, 100} {
			for _, fn := range []func(float64) (float64, error){m.Static, m.Mobile} {
				p, err := fn(x)
				if err != nil || math.IsNaN(p) || p < 0 || p > 1 {
					t.Fatalf("valid params %+v gave P(%v) = %v, %v", m.p, x, p, err)
				}
			}
		}
	})
}

// The refined S must track the simulator's own mean range on a large
// torus (where the lattice asymptote applies): within the estimate's 4-sd
// band plus the asymptote's known O(ln ln t / ln t) bias, taken as 6%.
func TestRefinedRangeTracksSimulatedRange(t *testing.T) {
	r, err := MeanRange(context.Background(), TopologyTorus, 2500, 100, 4000, 3)
	if err != nil {
		t.Fatal(err)
	}
	m := mustModel(t, Params{V: 2500, N: 1}, WithSmallTime(SmallTimeRefined))
	paper := mustModel(t, Params{V: 2500, N: 1})
	for _, s := range []float64{50, 100} {
		ref, lit := call(t, m.S, s), call(t, paper.S, s)
		if rel := math.Abs(r[int(s)]-ref) / ref; rel > 0.06 {
			t.Errorf("t=%v: range %.2f vs refined %.2f (%.1f%%)", s, r[int(s)], ref, 100*rel)
		}
		if lit < 1.3*r[int(s)] {
			t.Errorf("t=%v: expected pi t/ln t (%.2f) to overestimate the range %.2f by > 30%%", s, lit, r[int(s)])
		}
	}
}
