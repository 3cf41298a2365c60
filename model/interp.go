package model

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// SmallTime says how S(t) ≈ π t / ln t is evaluated for t <= e, where the
// papers' asymptotic formula breaks down (ln t <= 0 for t <= 1, and S falls
// from +∞ at t = 1+ to its minimum π e at t = e).
type SmallTime int

const (
	// SmallTimeClamp floors ln t at 1: S(t) = π t for t < e. S is then
	// continuous, increasing and S(0) = 0 (default).
	SmallTimeClamp SmallTime = iota
	// SmallTimeShift uses S(t) = π t / ln(e + t): same asymptote, smooth.
	SmallTimeShift
	// SmallTimeLiteral is π t / ln t as printed; t <= 1 is an error.
	SmallTimeLiteral
	// SmallTimeRefined is not in the papers: π t / ln(8t), the refined
	// asymptote of a 2-D lattice walk's range, with ln(8t) floored at 1.
	// The simulator's measured range is within ~5% of it for t >= 50
	// (π t / ln t is 38% high at t = 100); see docs/model.md.
	SmallTimeRefined
)

// MobileTime says what the T in equation 2,
// ln P_mobile(t) ≈ (N/V)² ln P_static(T), stands for.
type MobileTime int

const (
	// MobileAtT reads T as a typo for t (default).
	MobileAtT MobileTime = iota
	// MobileAtHorizon reads T as the simulation horizon: a flat curve.
	MobileAtHorizon
	// MobileRenewal reads T as the migration period τ: every migration
	// restarts the static clock, ln P_m(t) = ρ²[⌊t/τ⌋ ln P_s(τ) + ln P_s(t mod τ)].
	MobileRenewal
)

// RhoMode says how a growing N(t) enters ρ = N/V.
type RhoMode int

const (
	// RhoInstant substitutes ρ(t) = N(t)/V into exp(−ρ S(t)) (default).
	RhoInstant RhoMode = iota
	// RhoIntegrated treats ρ as a hazard density: −ln P = ∫ ρ(s) dS(s), so
	// hosts hacked late only count for the search done after they fell.
	RhoIntegrated
	// RhoAverage uses the time-averaged ρ̄(t) = (1/t) ∫ N(s) ds / V.
	RhoAverage
)

// DetectMode says which way t_d acts in equation 3.
type DetectMode int

const (
	// DetectWindow is equation 3 as written: a visit succeeds with
	// probability 1 − e^(−t_d). It is consistent with t_d being the time the
	// attacker has before it is detected and an Exp(1) attack duration, so a
	// larger t_d (slower detection) means more successful attacks (default).
	DetectWindow DetectMode = iota
	// DetectInverted reads t_d as detection speed: success e^(−t_d).
	DetectInverted
)

// LogisticMode says what the logistic model does when μ < N0, where the
// formula as written declines from N0 towards μ instead of growing.
type LogisticMode int

const (
	// LogisticAsWritten keeps the formula: N(t) decays to μ (default).
	LogisticAsWritten LogisticMode = iota
	// LogisticHold never lets the hacked hosts recover: N(t) = N0 if μ < N0.
	LogisticHold
	// LogisticReject makes μ < N0 a parameter error.
	LogisticReject
)

// Interpretation collects every switchable reading of the papers.
type Interpretation struct {
	SmallTime SmallTime
	Mobile    MobileTime
	Rho       RhoMode
	Detect    DetectMode
	Logistic  LogisticMode
	// CapNAtV caps N(t) at V (the papers assume N <= V; exponential growth
	// passes V within a time unit for Table I's k). Default true.
	CapNAtV bool
	// CapSAtV caps S(t) at V: a finite network has only V distinct hosts to
	// visit. Default false (the formula as written).
	CapSAtV bool
	// Horizon is T for MobileAtHorizon (default 100, Table I).
	Horizon float64
	// Period is τ for MobileRenewal (default 1).
	Period float64
}

// DefaultInterpretation is the reading used unless an option changes it.
func DefaultInterpretation() Interpretation {
	return Interpretation{CapNAtV: true, Horizon: 100, Period: 1}
}

// Option changes the interpretation of a Model.
type Option func(*Interpretation)

// WithSmallTime selects how S(t) is evaluated for t <= e.
func WithSmallTime(m SmallTime) Option { return func(i *Interpretation) { i.SmallTime = m } }

// WithMobileTime selects the meaning of T in equation 2.
func WithMobileTime(m MobileTime) Option { return func(i *Interpretation) { i.Mobile = m } }

// WithRho selects how a growing N(t) enters ρ.
func WithRho(m RhoMode) Option { return func(i *Interpretation) { i.Rho = m } }

// WithDetect selects the direction of t_d.
func WithDetect(m DetectMode) Option { return func(i *Interpretation) { i.Detect = m } }

// WithLogistic selects the μ < N0 behaviour.
func WithLogistic(m LogisticMode) Option { return func(i *Interpretation) { i.Logistic = m } }

// WithCapNAtV caps N(t) at V.
func WithCapNAtV(on bool) Option { return func(i *Interpretation) { i.CapNAtV = on } }

// WithCapSAtV caps S(t) at V.
func WithCapSAtV(on bool) Option { return func(i *Interpretation) { i.CapSAtV = on } }

// WithHorizon sets T for MobileAtHorizon.
func WithHorizon(t float64) Option { return func(i *Interpretation) { i.Horizon = t } }

// WithPeriod sets τ for MobileRenewal.
func WithPeriod(tau float64) Option { return func(i *Interpretation) { i.Period = tau } }

// WithInterpretation replaces the whole interpretation.
func WithInterpretation(in Interpretation) Option { return func(i *Interpretation) { *i = in } }

var (
	smallTimeNames = map[string]SmallTime{"clamp": SmallTimeClamp, "shift": SmallTimeShift, "literal": SmallTimeLiteral, "refined": SmallTimeRefined}
	mobileNames    = map[string]MobileTime{"t": MobileAtT, "horizon": MobileAtHorizon, "renewal": MobileRenewal}
	rhoNames       = map[string]RhoMode{"instant": RhoInstant, "integrated": RhoIntegrated, "average": RhoAverage}
	detectNames    = map[string]DetectMode{"window": DetectWindow, "inverted": DetectInverted}
	logisticNames  = map[string]LogisticMode{"as-written": LogisticAsWritten, "hold": LogisticHold, "reject": LogisticReject}
)

func nameOf[T comparable](m map[string]T, v T) string {
	for k, x := range m {
		if x == v {
			return k
		}
	}
	return fmt.Sprintf("%v", v)
}

func keysOf[T any](m map[string]T) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, "|")
}

// String renders the interpretation in the syntax ParseInterpretation reads;
// figure captions print it so every plot names the reading it used.
func (i Interpretation) String() string {
	s := fmt.Sprintf("small-t=%s,T=%s,rho=%s,td=%s,logistic=%s,capN=%t,capS=%t",
		nameOf(smallTimeNames, i.SmallTime), nameOf(mobileNames, i.Mobile), nameOf(rhoNames, i.Rho),
		nameOf(detectNames, i.Detect), nameOf(logisticNames, i.Logistic), i.CapNAtV, i.CapSAtV)
	// Horizon and period only matter for their T reading; print them then,
	// or when changed, so String round-trips through ParseInterpretation.
	if d := DefaultInterpretation(); i.Mobile == MobileAtHorizon || i.Horizon != d.Horizon {
		s += ",horizon=" + strconv.FormatFloat(i.Horizon, 'g', -1, 64)
	}
	if d := DefaultInterpretation(); i.Mobile == MobileRenewal || i.Period != d.Period {
		s += ",period=" + strconv.FormatFloat(i.Period, 'g', -1, 64)
	}
	return s
}

// ParseInterpretation reads "key=value,..." on top of the defaults. Keys:
// small-t, T, rho, td, logistic, capN, capS, horizon, period.
func ParseInterpretation(s string) (Interpretation, error) {
	in := DefaultInterpretation()
	if strings.TrimSpace(s) == "" {
		return in, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return in, fmt.Errorf("%w: interpretation item %q is not key=value", ErrInvalidParam, kv)
		}
		var err error
		switch k {
		case "small-t":
			in.SmallTime, err = lookup(smallTimeNames, v)
		case "T":
			in.Mobile, err = lookup(mobileNames, v)
		case "rho":
			in.Rho, err = lookup(rhoNames, v)
		case "td":
			in.Detect, err = lookup(detectNames, v)
		case "logistic":
			in.Logistic, err = lookup(logisticNames, v)
		case "capN":
			in.CapNAtV, err = strconv.ParseBool(v)
		case "capS":
			in.CapSAtV, err = strconv.ParseBool(v)
		case "horizon", "period":
			var f float64
			if f, err = strconv.ParseFloat(v, 64); err == nil && !(f > 0 && f < 1e300) {
				err = fmt.Errorf("must be a finite number > 0")
			}
			if k == "horizon" {
				in.Horizon = f
			} else {
				in.Period = f
			}
		default:
			return in, fmt.Errorf("%w: unknown interpretation key %q", ErrInvalidParam, k)
		}
		if err != nil {
			return in, fmt.Errorf("%w: interpretation %s=%q: %v", ErrInvalidParam, k, v, err)
		}
	}
	return in, nil
}

func lookup[T any](m map[string]T, v string) (T, error) {
	x, ok := m[v]
	if !ok {
		var zero T
		return zero, fmt.Errorf("want one of %s", keysOf(m))
	}
	return x, nil
}
