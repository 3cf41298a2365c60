package eval

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/bags"
)

// epochOf keeps every window: counts sum to the windows, and the order
// names each window's bag.
func TestEpochOfKeepsCountsAndOrder(t *testing.T) {
	ws := windowsOf([]uint16{1, 2, 3, 1, 2, 3, 4, 1, 2, 3}, 3)
	e := epochOf(ws)
	var sum uint32
	for _, bc := range e.Bags {
		sum += bc.Count
	}
	if e.Windows != uint64(len(ws)) || sum != uint32(len(ws)) || len(e.Order) != len(ws) {
		t.Fatalf("epoch of %d windows: %+v", len(ws), e)
	}
	for i, o := range e.Order {
		if e.Bags[o].Bag != ws[i] {
			t.Errorf("window %d: order names bag %v, window is %v", i, e.Bags[o].Bag, ws[i])
		}
	}
	if p := bags.NewProfile(bags.WithWindow(3), bags.WithSequence(true)); func() error { _, err := p.Train(e); return err }() != nil {
		t.Error("the profile refused the epoch")
	}
}

// The slow attacker on ADFA-LD, small: without a guard the attack is
// learned; with one it is learned later, never before the quarantine, or
// not at all; the report names both arms.
func TestSlowAttackGuardDelaysLearning(t *testing.T) {
	root := adfaRoot(t)
	cfg := DefaultSlowAttackConfig(root)
	cfg.Rules, cfg.Rates, cfg.Seeds, cfg.MaxEpochs = []string{bags.RuleBoSC}, []float64{0.02}, 2, 1500
	cfg.Quarantines = []time.Duration{30 * time.Second}
	rep, err := SlowAttack(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 2 || rep.Rows[0].Guarded || !rep.Rows[1].Guarded {
		t.Fatalf("rows %+v", rep.Rows)
	}
	off, on := rep.Rows[0], rep.Rows[1]
	for i := range off.Runs {
		a, b := off.Runs[i], on.Runs[i]
		if a.Attack != b.Attack {
			t.Errorf("seed %d: the arms saw different attacks, %s and %s", i, a.Attack, b.Attack)
		}
		if a.Censored {
			t.Errorf("seed %d: without a guard the attack (%s) was not learned in %d epochs", i, a.Attack, cfg.MaxEpochs)
		}
		if !b.Censored && (b.Epochs < 30 || b.Epochs < a.Epochs) {
			t.Errorf("seed %d: the guard learned the attack in %d epochs, %d without it; want not before the 30 s quarantine, nor sooner",
				i, b.Epochs, a.Epochs)
		}
	}
	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil || !strings.Contains(md.String(), "| bosc | 0.02 | no guard |") ||
		!strings.Contains(md.String(), "guard: quarantine 30s") {
		t.Errorf("report %v:\n%s", err, md.String())
	}
	t.Logf("\n%s", md.String())
	if _, err := SlowAttack(context.Background(), SlowAttackConfig{Root: root, Rates: []float64{1}, Rules: cfg.Rules, Seeds: 1, MaxEpochs: 1, Check: 1}); err == nil {
		t.Error("a rate of 1 was accepted")
	}
}
