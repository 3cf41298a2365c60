package model

import (
	"errors"
	"fmt"
	"math"
)

// ErrInvalidParam is wrapped by every parameter-validation error, so callers
// can tell a bad input from a numerical failure with errors.Is.
var ErrInvalidParam = errors.New("invalid model parameter")

// Growth selects how the number of hacked hosts N evolves over time
// (Section IV.A.3 of the papers).
type Growth int

const (
	// GrowthConstant keeps N fixed (the papers' "static N", dN/dt = 0).
	GrowthConstant Growth = iota
	// GrowthExponential is N(t) = N0 e^(kt).
	GrowthExponential
	// GrowthLogistic is N(t) = μ N0 e^(kt) / (N0 e^(kt) + μ − N0).
	GrowthLogistic
)

func (g Growth) String() string {
	switch g {
	case GrowthConstant:
		return "constant"
	case GrowthExponential:
		return "exponential"
	case GrowthLogistic:
		return "logistic"
	}
	return fmt.Sprintf("growth(%d)", int(g))
}

// Params are the papers' Table I quantities for one scenario.
type Params struct {
	// V is the total number of hosts (victims), V >= 1.
	V float64
	// N is the number of hacked hosts; for growing N it is N(0).
	N float64
	// Growth selects constant, exponential or logistic N(t).
	Growth Growth
	// K is the growth-rate constant k (exponential and logistic), k >= 0.
	K float64
	// Mu is the logistic carrying capacity μ, 0 < μ <= V.
	Mu float64
	// ApplyTd applies equation 3 (attacker success) with detection time Td.
	// Figures 4, 7 and 9 of the papers do not apply it; 5, 6 and 8 do.
	ApplyTd bool
	// Td is the average attack-detection time t_d >= 0 (used if ApplyTd).
	Td float64
}

func badParam(name string, v float64, why string) error {
	return fmt.Errorf("%w: %s=%v %s", ErrInvalidParam, name, v, why)
}

func finiteNonNeg(name string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return badParam(name, v, "must be a finite number")
	}
	if v < 0 {
		return badParam(name, v, "must be >= 0")
	}
	return nil
}

// Validate reports the first parameter that breaks the model's assumptions
// (N <= V is stated by the papers; the rest keeps the formulas meaningful).
func (p Params) Validate() error {
	if err := finiteNonNeg("V", p.V); err != nil {
		return err
	}
	if p.V < 1 {
		return badParam("V", p.V, "must be >= 1 (at least the prey's host)")
	}
	if err := finiteNonNeg("N", p.N); err != nil {
		return err
	}
	if p.N > p.V {
		return badParam("N", p.N, fmt.Sprintf("exceeds V=%v (the papers require N <= V)", p.V))
	}
	switch p.Growth {
	case GrowthConstant:
	case GrowthExponential, GrowthLogistic:
		if err := finiteNonNeg("k", p.K); err != nil {
			return err
		}
		if p.Growth == GrowthLogistic {
			if err := finiteNonNeg("mu", p.Mu); err != nil {
				return err
			}
			if p.Mu == 0 {
				return badParam("mu", p.Mu, "must be > 0 (carrying capacity)")
			}
			if p.Mu > p.V {
				return badParam("mu", p.Mu, fmt.Sprintf("exceeds V=%v (N(t) would pass V)", p.V))
			}
		}
	default:
		return fmt.Errorf("%w: unknown growth model %d", ErrInvalidParam, int(p.Growth))
	}
	if p.ApplyTd {
		if math.IsNaN(p.Td) || p.Td < 0 {
			return badParam("td", p.Td, "must be >= 0 (+Inf means never detected)")
		}
	}
	return nil
}

func checkTime(t float64) error {
	if math.IsNaN(t) || math.IsInf(t, 0) || t < 0 {
		return badParam("t", t, "must be a finite time >= 0")
	}
	return nil
}
