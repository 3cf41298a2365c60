package eval

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/escape-mtd/escape/bags"
)

// slowAttackRun is one run of SlowAttack. The seed fixes the attack trace,
// where the normal traffic starts and where in each epoch the attacker's
// windows go, so the two arms of a seed see the same traffic.
func slowAttackRun(base []byte, thr float64, rule string, held []Trace, normal [][]bags.Bag, rate float64, guard *bags.OnlineConfig,
	seed uint64, cfg SlowAttackConfig) (SlowAttackRun, error) {
	rng := rand.New(rand.NewPCG(seed, 0x5105a77ac)) //nolint:gosec // a measurement's reproducible draws
	p, err := bags.ReadProfile(bytes.NewReader(base))
	if err != nil {
		return SlowAttackRun{}, err
	}
	s, err := bags.NewScorer(rule, p)
	if err != nil {
		return SlowAttackRun{}, err
	}
	s.SetThreshold(thr)
	alarms := func(eps []bags.Epoch) bool {
		for _, e := range eps {
			if s.Value(e) > s.Threshold() {
				return true
			}
		}
		return false
	}
	// The attack: a held-out trace the profile flags when it runs alone.
	var attack Trace
	var probe []bags.Epoch
	for _, i := range rng.Perm(len(held)) {
		t := held[i]
		if len(t.Calls) < max(2*cfg.Window, cfg.MinAttackCalls) {
			continue
		}
		var eps []bags.Epoch
		for _, ws := range traceWindows([]Trace{t}, cfg.Window, cfg.Epoch) {
			eps = append(eps, epochOf(ws))
		}
		if alarms(eps) {
			attack, probe = t, eps
			break
		}
	}
	if probe == nil {
		return SlowAttackRun{}, fmt.Errorf("no held-out attack trace is flagged by the %s profile", rule)
	}
	attackW := windowsOf(attack.Calls, cfg.Window)
	var g *bags.Guard
	if guard != nil {
		if g, err = bags.NewGuard(*guard); err != nil {
			return SlowAttackRun{}, err
		}
	}
	run := SlowAttackRun{Attack: attack.Name, Calls: len(attack.Calls)}
	var buf []bags.Bag
	pos, ai := rng.IntN(len(normal)), 0
	t0 := time.Unix(0, 0)
	for i := 1; i <= cfg.MaxEpochs; i++ {
		ws := normal[pos]
		pos = (pos + 1) % len(normal)
		at := rng.IntN(len(ws) + 1)
		buf = append(buf[:0], ws[:at]...)
		for range int(math.Ceil(rate * float64(len(ws)))) {
			buf = append(buf, attackW[ai])
			ai = (ai + 1) % len(attackW)
		}
		e := epochOf(append(buf, ws[at:]...))
		now := t0.Add(time.Duration(i) * time.Second)
		switch v := s.Score(e); {
		case v.Anomalous:
			run.Alarms++
			if g != nil {
				g.Anomaly(now)
			}
		case g == nil:
			if _, err := p.Teach(e); err != nil {
				return run, err
			}
			run.Taught++
		default:
			g.Offer(e, now)
		}
		if g != nil {
			n, err := g.Release(now, p)
			if err != nil {
				return run, err
			}
			run.Taught += n
		}
		if i%cfg.Check == 0 && !alarms(probe) {
			run.Epochs = i
			return run, nil
		}
	}
	run.Epochs, run.Censored = cfg.MaxEpochs, true
	return run, nil
}

// WriteMarkdown renders the report, a row per rule, rate and arm.
func (r *SlowAttackReport) WriteMarkdown(w io.Writer) error {
	c := r.Config
	var b strings.Builder
	fmt.Fprintf(&b, "SLOW ATTACKER vs ONLINE LEARNING (ADFA-LD): W=%d, E=%d, a trace an epoch, one a second; normal traffic validation B; thresholds at %g%% of validation-A epochs (",
		c.Window, c.Epoch, 100*c.TargetFPR)
	for i, rule := range c.Rules {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %.3f", rule, r.Thresholds[rule])
	}
	fmt.Fprintf(&b, "); held-out attack traces of %d calls or more flagged alone; %d seeds, censored at %d epochs, probed every %d.\n\n",
		c.MinAttackCalls, c.Seeds, c.MaxEpochs, c.Check)
	b.WriteString("Epochs until the attack trace alone is no longer flagged (median over seeds; learned runs / runs), the alarms the mixed epochs raised and the epochs taught meanwhile (medians). Rate 0: no attacker, the control.\n\n")
	b.WriteString("| scorer | rate r | online learning | epochs to learn the attack | learned | alarms | taught |\n|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		arm := "no guard"
		if row.Guarded {
			g := row.Guard
			arm = fmt.Sprintf("guard: quarantine %v, %g/min, queue %d", g.Quarantine, g.Rate, g.Queue)
		}
		taught := make([]float64, len(row.Runs))
		for i, x := range row.Runs {
			taught[i] = float64(x.Taught)
		}
		fmt.Fprintf(&b, "| %s | %g | %s | %s | %d/%d | %.0f | %.0f |\n", row.Rule, row.Rate, arm,
			epochsCell(row.Median(), c.MaxEpochs), row.Learned(), len(row.Runs), row.MedianAlarms(), medianOf(taught))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func epochsCell(m float64, limit int) string {
	if math.IsInf(m, 1) {
		return fmt.Sprintf("> %d", limit)
	}
	return fmt.Sprintf("%.0f", m)
}
