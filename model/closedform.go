package model

import (
	"fmt"
	"math"
	"sort"
)

// Model evaluates the papers' closed forms (equations 1–3 and the growth
// models) for one validated parameter set under one interpretation.
type Model struct {
	p  Params
	in Interpretation
}

// New validates p and the interpretation and returns a Model.
func New(p Params, opts ...Option) (*Model, error) {
	in := DefaultInterpretation()
	for _, o := range opts {
		o(&in)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("building model: %w", err)
	}
	if p.Growth == GrowthLogistic && p.Mu < p.N && in.Logistic == LogisticReject {
		return nil, fmt.Errorf("building model: %w: logistic mu=%v < N0=%v (rejected by logistic=reject)", ErrInvalidParam, p.Mu, p.N)
	}
	if in.Mobile == MobileAtHorizon && !(in.Horizon > 0 && !math.IsInf(in.Horizon, 0)) {
		return nil, fmt.Errorf("building model: %w: horizon=%v must be finite and > 0", ErrInvalidParam, in.Horizon)
	}
	if in.Mobile == MobileRenewal && !(in.Period > 0 && !math.IsInf(in.Period, 0)) {
		return nil, fmt.Errorf("building model: %w: period=%v must be finite and > 0", ErrInvalidParam, in.Period)
	}
	if in.Rho != RhoInstant && in.SmallTime == SmallTimeLiteral && p.Growth != GrowthConstant {
		// ∫ρ dS from 0 needs S defined on (0, 1], which the literal formula is not.
		return nil, fmt.Errorf("building model: %w: rho=%s needs S(t) on [0,t]; small-t=literal is undefined for t <= 1",
			ErrInvalidParam, nameOf(rhoNames, in.Rho))
	}
	return &Model{p: p, in: in}, nil
}

// Params returns the model's parameters.
func (m *Model) Params() Params { return m.p }

// Interpretation returns the reading the model uses.
func (m *Model) Interpretation() Interpretation { return m.in }

// S is the mean number of distinct hosts a random-walking attacker has
// visited by time t in 2-D: π t / ln t, with t <= e per Interpretation.
func (m *Model) S(t float64) (float64, error) {
	if err := checkTime(t); err != nil {
		return 0, fmt.Errorf("evaluating S: %w", err)
	}
	var s float64
	switch m.in.SmallTime {
	case SmallTimeClamp:
		s = math.Pi * t / math.Max(1, math.Log(t))
	case SmallTimeShift:
		s = math.Pi * t / math.Log(math.E+t)
	case SmallTimeRefined:
		s = math.Pi * t / math.Max(1, math.Log(8*t))
	case SmallTimeLiteral:
		if t <= 1 {
			return 0, fmt.Errorf("evaluating S: %w: t=%v: pi*t/ln(t) is undefined for t <= 1 (small-t=literal)", ErrInvalidParam, t)
		}
		s = math.Pi * t / math.Log(t)
	}
	if m.in.CapSAtV {
		s = math.Min(s, m.p.V)
	}
	return s, nil
}

// dS is S'(t), used by the integrated-ρ reading.
func (m *Model) dS(t float64) float64 {
	var d float64
	switch m.in.SmallTime {
	case SmallTimeClamp:
		if t < math.E {
			d = math.Pi
		} else {
			l := math.Log(t)
			d = math.Pi * (l - 1) / (l * l)
		}
	case SmallTimeShift:
		l := math.Log(math.E + t)
		d = math.Pi * (l - t/(math.E+t)) / (l * l)
	case SmallTimeRefined:
		if 8*t < math.E {
			d = math.Pi
		} else {
			l := math.Log(8 * t)
			d = math.Pi * (l - 1) / (l * l)
		}
	default:
		l := math.Log(t)
		d = math.Pi * (l - 1) / (l * l)
	}
	if m.in.CapSAtV {
		if s, _ := m.S(t); s >= m.p.V {
			return 0
		}
	}
	return d
}

// NAt is the number of hacked hosts at time t under the growth model.
func (m *Model) NAt(t float64) float64 {
	p := m.p
	var n float64
	switch p.Growth {
	case GrowthConstant:
		n = p.N
	case GrowthExponential:
		if p.N == 0 { // 0·e^(kt) would be NaN once e^(kt) overflows
			return 0
		}
		n = p.N * math.Exp(p.K*t)
	case GrowthLogistic:
		if p.Mu < p.N && m.in.Logistic == LogisticHold {
			n = p.N
			break
		}
		// Written as μ N0 / (N0 + (μ − N0) e^(−kt)) so e^(kt) cannot overflow;
		// it is the papers' formula divided through by e^(kt).
		den := p.N + (p.Mu-p.N)*math.Exp(-p.K*t)
		if den == 0 { // N0 = 0: no host is ever hacked
			return 0
		}
		n = p.Mu * p.N / den
	}
	if m.in.CapNAtV && n > p.V {
		n = p.V
	}
	return n
}

// SuccessFraction is the fraction of visits that succeed (equation 3);
// 1 when equation 3 is not applied.
func (m *Model) SuccessFraction() float64 {
	if !m.p.ApplyTd {
		return 1
	}
	if m.in.Detect == DetectInverted {
		return math.Exp(-m.p.Td)
	}
	return -math.Expm1(-m.p.Td)
}

// hazard is −ln P_static(t): ρ·f·S(t) under the chosen ρ reading, with the
// ρ power raised to 1 + extra (extra = 2 for equation 2's (N/V)² factor, so
// the integrated and averaged readings weigh the mobile case consistently).
func (m *Model) hazard(t float64, extra float64) (float64, error) {
	s, err := m.S(t)
	if err != nil {
		return 0, err
	}
	f := m.SuccessFraction()
	if f == 0 { // every visit detected; also avoids 0·∞ when N(t) overflows
		return 0, nil
	}
	v := m.p.V
	pow := 1 + extra
	if m.p.Growth == GrowthConstant || m.in.Rho == RhoInstant || t == 0 {
		return math.Pow(m.NAt(t)/v, pow) * f * s, nil
	}
	if m.in.Rho == RhoAverage {
		mean := simpson(func(x float64) float64 { return m.NAt(x) }, 0, t, m.breaks(t)) / t
		return math.Pow(mean/v, pow) * f * s, nil
	}
	h := simpson(func(x float64) float64 {
		if d := m.dS(x); d != 0 { // S' = 0 at t = e: skip, ρ may be +Inf there
			return math.Pow(m.NAt(x)/v, pow) * d
		}
		return 0
	}, 0, t, m.breaks(t))
	return f * h, nil
}

// breaks are the kinks of the integrands (S' at e, the N cap), where
// Simpson's rule must split to stay accurate.
func (m *Model) breaks(t float64) []float64 {
	var b []float64
	if m.in.SmallTime == SmallTimeClamp && t > math.E {
		b = append(b, math.E)
	}
	if m.in.SmallTime == SmallTimeRefined && t > math.E/8 {
		b = append(b, math.E/8)
	}
	if m.in.CapNAtV && m.p.Growth == GrowthExponential && m.p.K > 0 && m.p.N > 0 {
		if tc := math.Log(m.p.V/m.p.N) / m.p.K; tc > 0 && tc < t {
			b = append(b, tc)
		}
	}
	sort.Float64s(b)
	return b
}

// Static is equation 1 (with equation 3 if ApplyTd): P_static(t) = e^(−ρ S(t)).
func (m *Model) Static(t float64) (float64, error) {
	h, err := m.hazard(t, 0)
	if err != nil {
		return 0, fmt.Errorf("evaluating P_static(%v): %w", t, err)
	}
	return math.Exp(-h), nil
}

// Mobile is equation 2: ln P_mobile(t) ≈ (N/V)² ln P_static(T).
func (m *Model) Mobile(t float64) (float64, error) {
	if err := checkTime(t); err != nil {
		return 0, fmt.Errorf("evaluating P_mobile: %w", err)
	}
	var h float64
	var err error
	switch m.in.Mobile {
	case MobileAtT:
		h, err = m.hazard(t, 2)
	case MobileAtHorizon:
		h, err = m.hazard(m.in.Horizon, 2)
	case MobileRenewal:
		tau := m.in.Period
		k := math.Floor(t / tau)
		var hp, hr float64
		if hp, err = m.hazard(tau, 2); err == nil {
			hr, err = m.hazard(t-k*tau, 2)
		}
		h = k*hp + hr
	}
	if err != nil {
		return 0, fmt.Errorf("evaluating P_mobile(%v): %w", t, err)
	}
	return math.Exp(-h), nil
}

// simpson integrates g over [a, b] split at the given interior points.
func simpson(g func(float64) float64, a, b float64, breaks []float64) float64 {
	const n = 1024 // even; integrands are smooth between breaks
	pts := append([]float64{a}, breaks...)
	pts = append(pts, b)
	total := 0.0
	for i := 0; i+1 < len(pts); i++ {
		lo, hi := pts[i], pts[i+1]
		if hi <= lo {
			continue
		}
		h := (hi - lo) / n
		sum := g(lo) + g(hi)
		for j := 1; j < n; j++ {
			w := 2.0
			if j%2 == 1 {
				w = 4
			}
			sum += w * g(lo+float64(j)*h)
		}
		total += sum * h / 3
	}
	return total
}
