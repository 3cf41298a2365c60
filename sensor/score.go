package sensor

import (
	"context"
	"fmt"
	"time"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/bags/syscalls"
	"github.com/escape-mtd/escape/sensor/events"
	"go.uber.org/zap"
)

// handle scores one epoch; it runs on the collector goroutine.
func (m *Monitor) handle(e Epoch) {
	m.mu.Lock()
	m.dictSize, m.collisions = m.col.asm.DictSize(), m.col.asm.Collisions
	key := [2]uint32{e.Slot, e.Gen}
	w, ok := m.bySlot[key]
	if e.Final {
		delete(m.bySlot, key)
	}
	if !ok {
		m.mu.Unlock()
		m.log.Debug("epoch of an unknown slot", zap.Uint32("slot", e.Slot), zap.Uint32("gen", e.Gen))
		return
	}
	t := w.t
	st := &t.stats
	st.Calls += uint64(e.Calls)
	w.counted += uint64(e.Calls)
	if e.Final && t.cur == w {
		t.cur = nil
	}
	st.Drops += uint64(e.NewDrops)
	st.LostEpochs += uint64(e.Lost)
	if e.Final && e.Calls == 0 {
		t.state = StateGone
		c := w.c
		m.mu.Unlock()
		m.emit(context.Background(), events.TypeUnwatched, events.SevInfo, c, nil, nil, "")
		return
	}
	st.Epochs++
	st.Windows += e.Bags.Windows
	st.LastSeq = e.Seq
	now := time.Now().UTC()
	ep := &events.Epoch{Seq: e.Seq, Start: w.epochStart, Calls: e.Calls, Windows: e.Bags.Windows, Bags: len(e.Bags.Bags),
		Degraded: e.Bags.Degraded, Flushed: e.Flushed, Final: e.Final, Scorer: t.scorer.Rule()}
	mark := m.intervention(w.c.ID, w.epochStart, now)
	w.epochStart = now
	anomalous := false
	if mark != nil {
		st.Intervened++
	}
	if !t.trained {
		ep.Mode = StateLearning
		if mark == nil {
			res, err := m.learnEpochLocked(t, e.Bags, now)
			if err != nil {
				m.log.Error("training failed", zap.String("identity", t.identity), zap.Error(err))
			}
			ep.NewBags = res.NewBags
		}
		// An epoch that CRIU's code ran in is not the workload's: it
		// teaches the profile nothing.
		t.state = m.modeLocked(t)
	} else {
		ep.Mode = "detecting"
		v := t.scorer.Score(e.Bags)
		ep.Mismatches, ep.NewBags, ep.Score, ep.Value = v.Mismatches, v.NewBags, v.Score, v.Value
		st.Mismatches += v.Mismatches
		st.LastMismatches = v.Mismatches
		anomalous = v.Anomalous
		t.state = StateWatching
		switch {
		case anomalous && mark != nil:
			st.IntervenedAnomalies++
			ep.Unseen = evidence(t.profile, e.Bags)
		case anomalous:
			st.Anomalies++
			t.state = StateAnomalous
			ep.Unseen = evidence(t.profile, e.Bags)
		}
		m.onlineLocked(t, e.Bags, anomalous, mark != nil, now)
	}
	if e.Bags.Degraded {
		st.Degraded++
		t.state = StateDegraded
	}
	ep.Database = t.profile.Stats().Bags
	// Read after learning, which may just have calibrated them.
	ep.Limit, ep.Calibrated = t.scorer.Threshold(), m.cfg.calibrating() && t.trained
	ep.Threshold = t.profile.Threshold()
	if e.Final {
		t.state = StateGone
	}
	c := w.c
	total := st.Drops
	m.mu.Unlock()

	ctx := context.Background()
	marked := func(ev events.Event) events.Event {
		ev.Intervention = mark
		return ev
	}
	if e.Bags.Degraded {
		m.send(ctx, m.sink, marked(m.event(events.TypeDrops, events.SevWarning, c, ep, &events.Drops{Records: e.NewDrops,
			LostEpochs: e.Lost, Unresolved: e.Unresolved, Collisions: e.Collisions, Total: total},
			"epoch lost data; not treated as clean")))
	}
	switch {
	case anomalous:
		what := "mismatches exceed threshold"
		if ep.Scorer != bags.RuleBoSC {
			what = ep.Scorer + " score exceeds threshold"
		}
		sev, msg := events.SevCritical, what
		if mark != nil {
			// Kept as evidence, but not a page: the calls are ESCAPE's
			// own (CRIU's parasite, a restore's first calls).
			sev, msg = events.SevWarning, what+" during the "+mark.By+"'s "+mark.Kind+" of the container"
		}
		ev := marked(m.event(events.TypeAnomaly, sev, c, ep, nil, msg))
		m.send(ctx, m.sink, ev)
		m.send(ctx, m.cfg.reporter, ev)
	case m.cfg.epochEvents:
		ev := marked(m.event(events.TypeEpoch, events.SevInfo, c, ep, nil, ""))
		m.send(ctx, m.sink, ev)
		m.send(ctx, m.cfg.reporter, ev)
	case m.cfg.reporter != nil:
		m.send(ctx, m.cfg.reporter, marked(m.event(events.TypeEpoch, events.SevInfo, c, ep, nil, "")))
	}
	if e.Final {
		m.emit(ctx, events.TypeUnwatched, events.SevInfo, c, nil, nil, "")
	}
	m.saveTaught(t, now)
}

// intervention is the mark of an epoch of container id spanning [from,
// to], nil if it overlaps none of ESCAPE's interventions.
func (m *Monitor) intervention(id string, from, to time.Time) *events.Intervention {
	if m.cfg.ivs == nil {
		return nil
	}
	w, ok := m.cfg.ivs.Overlap(id, from, to)
	if !ok {
		return nil
	}
	return &events.Intervention{Kind: w.Kind, By: w.By}
}

// evidenceCalls is how many system calls an anomaly event names: enough to
// show an attack's execve or connect beside the workload's own calls, few
// enough to keep the event small for a SIEM.
const evidenceCalls = 8

// evidence names the system calls of an anomalous epoch's unseen windows.
func evidence(p *bags.Profile, e bags.Epoch) []events.Syscall {
	arch, archErr := syscalls.ParseArch(p.Arch())
	ev := p.Explain(e, evidenceCalls)
	out := make([]events.Syscall, len(ev))
	for i, x := range ev {
		name, ok := "", false
		if archErr == nil {
			name, ok = arch.Name(x.Syscall)
		}
		switch {
		case x.Syscall == bags.Unknown:
			name = "unknown"
		case !ok:
			name = fmt.Sprintf("nr_%d", x.Syscall)
		}
		out[i] = events.Syscall{Name: name, Nr: x.Syscall, Windows: x.Windows, Novel: x.Novel}
	}
	return out
}

// Row is one container's line in top and the metrics.
type Row struct {
	Identity, ID, Namespace, Host, Image string
	CgroupID                             uint64
	State                                string
	Epoch                                uint32
	Database                             int
	Learned                              int
	// Scorer is the identity's rule and Threshold its threshold in that
	// rule's unit (calibrated once learning ends, unless set).
	Scorer    string
	Threshold float64
	Stats     ContainerStats
	// Online says the identity learns online after its learning phase;
	// Guard is then its poisoning guard's counters.
	Online bool
	Guard  bags.GuardStats
}

// Rows snapshots every identity the monitor knows. Calls include the open
// epoch, read from the kernel's slot counters.
func (m *Monitor) Rows() []Row {
	m.mu.Lock()
	defer m.mu.Unlock()
	rows := make([]Row, 0, len(m.profiles))
	for _, t := range m.profiles {
		live := t.stats
		if w := t.cur; w != nil {
			if total, _, err := m.probe.SlotCounters(w.slot); err == nil && total > w.counted {
				live.Calls += total - w.counted
			}
		}
		rows = append(rows, Row{Identity: t.identity, ID: t.last.ID, Namespace: t.last.Namespace, Host: t.last.Host,
			Image: t.last.Image, CgroupID: t.last.CgroupID, State: t.state, Epoch: t.stats.LastSeq,
			Database: t.profile.Stats().Bags, Learned: t.learned, Scorer: t.scorer.Rule(), Threshold: t.scorer.Threshold(),
			Stats: live})
		if t.guard != nil {
			rows[len(rows)-1].Online, rows[len(rows)-1].Guard = true, t.guard.Stats()
		}
	}
	return rows
}

// Probe returns the monitor's probe.
func (m *Monitor) Probe() *Probe { return m.probe }
