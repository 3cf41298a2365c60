package sensor

import (
	"fmt"
	"strings"
	"time"

	"github.com/escape-mtd/escape/bags"
	"go.uber.org/zap"
)

// OnlineLabel turns a container's online learning on or off, overriding
// the daemon's default (WithOnlineLearning): escape.learn-online=on|off.
// Like ScorerLabel it is the sensor's, outside the plane's policy prefix.
const OnlineLabel = "escape.learn-online"

// defaultOnlineSaveEvery spaces the saves of a profile that online
// learning changed: often enough that a crash loses little of what was
// taught, rare enough that a large profile is not rewritten every few
// epochs.
const defaultOnlineSaveEvery = time.Minute

// WithOnlineLearning sets whether identities keep learning after their
// learning phase (default off; a container's OnlineLabel wins), and the
// poisoning guard's configuration (bags.OnlineConfig; zero fields take its
// defaults): a below-threshold epoch teaches only after the quarantine,
// if no anomaly of the identity came meanwhile, at most cfg.Rate epochs a
// minute. The threshold is kept as calibrated (docs/bosc.md, "Online
// learning").
func WithOnlineLearning(on bool, cfg bags.OnlineConfig) MonitorOption {
	return func(c *monitorConfig) { c.online, c.onlineCfg = on, cfg }
}

// onlineOf says whether container c learns online: its label, else the
// default.
func (m *Monitor) onlineOf(c Container) (bool, error) {
	v, ok := c.Labels[OnlineLabel]
	if !ok {
		return m.cfg.online, nil
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "on", "true", "1":
		return true, nil
	case "off", "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("label %s: %q: want on or off", OnlineLabel, v)
}

// guardFor is the online-learning guard of a new identity with container
// c's labels, nil when it does not learn online.
func (m *Monitor) guardFor(c Container) (*bags.Guard, error) {
	on, err := m.onlineOf(c)
	if err != nil || !on {
		return nil, err
	}
	return bags.NewGuard(m.cfg.onlineCfg) // checked in NewMonitor
}

// onlineLocked runs t's online learning on one scored epoch: an anomaly
// voids the quarantine (and refuses the epochs that follow it closely), a
// clean epoch (not degraded, not overlapping one of
// ESCAPE's interventions) is offered to it, and what has served its
// quarantine is taught. It returns the epochs taught.
func (m *Monitor) onlineLocked(t *tracked, e bags.Epoch, anomalous, marked bool, now time.Time) int {
	g := t.guard
	if g == nil {
		return 0
	}
	switch {
	case anomalous:
		// A marked anomaly (CRIU's parasite) voids it too: an attacker
		// whose loud step coincides with a checkpoint must not be let
		// off.
		if n := g.Anomaly(now); n > 0 {
			m.log.Debug("anomaly voids the online-learning quarantine", zap.String("identity", t.identity), zap.Int("epochs", n))
		}
	case !marked && !e.Degraded:
		g.Offer(e, now)
	}
	n, err := g.Release(now, t.profile)
	if err != nil {
		m.log.Error("online learning failed", zap.String("identity", t.identity), zap.Error(err))
	}
	if n > 0 {
		t.taughtUnsaved = true
	}
	return n
}

// saveTaught saves t's profile when online learning changed it and the last
// such save is old enough (a minute); it runs outside the lock.
func (m *Monitor) saveTaught(t *tracked, now time.Time) {
	m.mu.Lock()
	due := t.taughtUnsaved && now.Sub(t.taughtSaved) >= m.cfg.onlineSaveEvery
	if due {
		t.taughtUnsaved, t.taughtSaved = false, now
	}
	p := t.profile
	m.mu.Unlock()
	if !due {
		return
	}
	if err := m.saveProfile(t.identity, p); err != nil {
		m.log.Warn("saving what online learning taught failed", zap.String("identity", t.identity), zap.Error(err))
	}
}
