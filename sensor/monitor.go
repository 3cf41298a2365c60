package sensor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/internal/intervene"
	"github.com/escape-mtd/escape/sensor/events"
	"go.uber.org/zap"
)

// Container states shown by top.
const (
	StateLearning  = "learning"
	StateWatching  = "watching"
	StateAnomalous = "anomalous"
	StateDegraded  = "degraded"
	StateGone      = "gone"
)

// Monitor ties the probe to containers and their profiles: it watches the
// cgroups that discovery reports, trains each identity's profile for its
// first epochs, then scores every epoch and emits events.
type Monitor struct {
	cfg   monitorConfig
	probe *Probe
	col   *Collector
	sink  events.Sink
	log   *zap.Logger

	mu         sync.Mutex
	byCgroup   map[uint64]*watch
	bySlot     map[[2]uint32]*watch
	profiles   map[string]*tracked // by identity: survives restore
	dictSize   int                 // assembler's dictionary, copied on the collector goroutine
	collisions uint64
	// ignoredLabels counts watched containers whose IdentityLabel was
	// ignored: they are not the agent's, so they may not name an identity.
	ignoredLabels uint64
}

// IgnoredIdentityLabels counts the containers watched whose identity label
// was ignored because they are not in the agent's own namespace.
func (m *Monitor) IgnoredIdentityLabels() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ignoredLabels
}

// DictStats reports the bag dictionary's size and hash collisions seen.
func (m *Monitor) DictStats() (int, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dictSize, m.collisions
}

type watch struct {
	c       Container
	slot    uint32
	gen     uint32
	t       *tracked
	counted uint64 // calls of this slot generation already in t.stats.Calls
	// epochStart is when the next epoch began: the watch, then the end
	// of each epoch (the kernel's epochs of one slot are contiguous).
	epochStart time.Time
}

// tracked is one identity's profile and counters.
type tracked struct {
	identity string
	last     Container
	profile  *bags.Profile
	scorer   bags.Scorer
	// cal chooses the identity's threshold from its learning phase; nil
	// when the operator set one (WithThreshold).
	cal     *bags.Calibrator
	learned int // clean epochs trained
	// learnSince is when this daemon trained the identity's first epoch:
	// learn_for counts from it. Zero until then.
	learnSince time.Time
	trained    bool // learning is over: detection from the next epoch on
	// guard is the identity's online learning after its learning phase,
	// nil when off; taughtUnsaved says it changed the profile since
	// taughtSaved, the last save it caused.
	guard         *bags.Guard
	taughtUnsaved bool
	taughtSaved   time.Time
	state         string
	cur           *watch // the cgroup being watched now, nil when gone
	stats         ContainerStats
}

// ContainerStats are an identity's cumulative counters.
type ContainerStats struct {
	Calls, Epochs, Windows, Mismatches, Anomalies, Degraded uint64
	Drops, LostEpochs                                       uint64
	LastMismatches                                          uint64
	LastSeq                                                 uint32
	// Intervened counts the epochs marked as overlapping one of ESCAPE's
	// own interventions; IntervenedAnomalies those of them over the
	// threshold, which Anomalies does not count.
	Intervened, IntervenedAnomalies uint64
}

type monitorConfig struct {
	host        string
	learnEpochs int
	learnFor    time.Duration
	learnMax    time.Duration
	rule        string
	threshold   float64
	thresholdOn bool // the operator set the threshold: no calibration
	calibration bags.CalibrationConfig
	calibrate   bool
	epochEvents bool
	profileDir  string
	reporter    events.Sink
	ivs         Interventions
	online      bool
	onlineCfg   bags.OnlineConfig
	// onlineSaveEvery spaces the saves online learning causes (a test
	// shortens it).
	onlineSaveEvery time.Duration
	log             *zap.Logger
}

// Interventions says whether an epoch of container id (its containerd id)
// spanning [from, to] overlaps one of ESCAPE's own interventions on it
// (intervene.Log, fed by the node agent in the same process).
type Interventions interface {
	Overlap(id string, from, to time.Time) (intervene.Window, bool)
}

// MonitorOption configures NewMonitor.
type MonitorOption func(*monitorConfig)

// WithHost names the host in events (default: os.Hostname).
func WithHost(h string) MonitorOption { return func(c *monitorConfig) { c.host = h } }

// WithLearnEpochs sets how many clean epochs train a new identity's profile
// before detection starts (default 30).
func WithLearnEpochs(n int) MonitorOption { return func(c *monitorConfig) { c.learnEpochs = n } }

// WithLearnFor sets the least time a new identity learns, counted from its
// first trained epoch, besides WithLearnEpochs (default 0: epochs alone).
// Epochs fill at the workload's call rate, so a busy service can finish its
// epochs in seconds and never show the learner what it does every few
// seconds or minutes: memory purges, expiry cycles, health checks.
func WithLearnFor(d time.Duration) MonitorOption { return func(c *monitorConfig) { c.learnFor = d } }

// WithThreshold sets every identity's threshold, in its scorer's unit
// (mismatching windows per epoch for the papers' rule, mean nats for lm),
// instead of calibrating it: an explicit override.
func WithThreshold(t float64) MonitorOption {
	return func(c *monitorConfig) { c.threshold, c.thresholdOn = t, true }
}

// WithScorer sets the default scoring rule (bags.Rules; default the
// papers', bags.RuleBoSC). A container's ScorerLabel overrides it.
func WithScorer(rule string) MonitorOption { return func(c *monitorConfig) { c.rule = rule } }

// WithCalibration calibrates each identity's threshold from its own
// learning phase (bags.Calibrator; cfg's false-alarm target above all),
// unless WithThreshold is given. Without either, every identity has its
// scorer's default threshold (bags.DefaultThreshold mismatches for the
// papers' rule).
func WithCalibration(cfg bags.CalibrationConfig) MonitorOption {
	return func(c *monitorConfig) { c.calibration, c.calibrate = cfg, true }
}

// calibrating says whether identities get calibrated thresholds.
func (c *monitorConfig) calibrating() bool { return c.calibrate && !c.thresholdOn }

// WithLearnMax sets the ceiling of a calibrated learning phase: past this
// time from its first epoch it ends even if the scores are not stable, with
// a warning (default 10 minutes; at least the learning time).
func WithLearnMax(d time.Duration) MonitorOption { return func(c *monitorConfig) { c.learnMax = d } }

// WithEpochEvents emits a summary event for every epoch.
func WithEpochEvents(on bool) MonitorOption { return func(c *monitorConfig) { c.epochEvents = on } }

// WithProfileDir loads and saves profiles as <dir>/<identity>.bosc, so that a
// restarted daemon, or one on the host a container migrated to (sharing the
// directory), keeps learned profiles.
func WithProfileDir(d string) MonitorOption { return func(c *monitorConfig) { c.profileDir = d } }

// WithReporter sends every scored epoch (types epoch, anomaly and drops) to
// sink whatever WithEpochEvents says: the control plane needs the clean
// epochs too, to know when a checkpoint is safe.
func WithReporter(sink events.Sink) MonitorOption {
	return func(c *monitorConfig) { c.reporter = sink }
}

// WithInterventions marks the events of every epoch that overlaps one of
// ivs's interventions (a checkpoint, restore or restart by this host's
// agent): anomalies are still emitted, with the mark and severity warning
// instead of critical, and counted apart; such epochs do not train a
// learning profile.
func WithInterventions(ivs Interventions) MonitorOption {
	return func(c *monitorConfig) { c.ivs = ivs }
}

// WithMonitorLogger sets the logger.
func WithMonitorLogger(l *zap.Logger) MonitorOption { return func(c *monitorConfig) { c.log = l } }

// NewMonitor returns a monitor over a loaded probe, emitting to sink.
func NewMonitor(p *Probe, sink events.Sink, opts ...MonitorOption) (*Monitor, error) {
	cfg := monitorConfig{learnEpochs: 30, learnMax: DefaultLearnMax, rule: bags.RuleBoSC, onlineSaveEvery: defaultOnlineSaveEvery,
		log: zap.NewNop()}
	cfg.host, _ = os.Hostname()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.learnEpochs < 1 {
		return nil, fmt.Errorf("monitor: learn epochs %d < 1", cfg.learnEpochs)
	}
	if cfg.learnFor < 0 {
		return nil, fmt.Errorf("monitor: learn for %v < 0", cfg.learnFor)
	}
	if cfg.learnMax < cfg.learnFor {
		return nil, fmt.Errorf("monitor: learning ceiling %v below the learning time %v", cfg.learnMax, cfg.learnFor)
	}
	rule, err := bags.ParseRule(cfg.rule)
	if err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	cfg.rule = rule
	if cfg.thresholdOn && (cfg.threshold < 0 || math.IsNaN(cfg.threshold) || math.IsInf(cfg.threshold, 0)) {
		return nil, fmt.Errorf("monitor: threshold %v: want a finite number >= 0", cfg.threshold)
	}
	if _, err := bags.NewCalibrator(cfg.calibration); err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	if err := cfg.onlineCfg.Validate(); err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o700); err != nil {
			return nil, fmt.Errorf("monitor: profile dir: %w", err)
		}
	}
	m := &Monitor{cfg: cfg, probe: p, sink: sink, log: cfg.log,
		byCgroup: make(map[uint64]*watch), bySlot: make(map[[2]uint32]*watch), profiles: make(map[string]*tracked)}
	m.col = NewCollector(p, m.handle, cfg.log)
	return m, nil
}

// Run drains epochs until ctx ends, then saves the profiles.
func (m *Monitor) Run(ctx context.Context) error {
	err := m.col.Run(ctx)
	return errors.Join(err, m.SaveAll())
}

// Add watches a container (idempotent per cgroup). c.CgroupPath is
// required; c.CgroupID is filled in from it.
func (m *Monitor) Add(ctx context.Context, c Container) error {
	id, err := CgroupID(c.CgroupPath)
	if err != nil {
		return fmt.Errorf("add container %s: %w", c.ID, err)
	}
	c.CgroupID = id
	m.mu.Lock()
	if _, ok := m.byCgroup[c.CgroupID]; ok {
		m.mu.Unlock()
		return nil
	}
	t, err := m.trackedLocked(c)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	slot, gen, err := m.probe.Watch(c.CgroupPath)
	if err != nil {
		m.mu.Unlock()
		m.emit(ctx, events.TypeError, events.SevWarning, c, nil, nil, err.Error())
		return fmt.Errorf("add container %s: %w", c.ID, err)
	}
	claimed, ignored := c.IgnoredIdentity()
	if ignored {
		m.ignoredLabels++
	}
	w := &watch{c: c, slot: slot, gen: gen, t: t, epochStart: time.Now().UTC()}
	m.byCgroup[c.CgroupID], m.bySlot[[2]uint32{slot, gen}] = w, w
	t.last, t.cur = c, w
	if t.state == StateGone {
		t.state = m.modeLocked(t)
	}
	m.mu.Unlock()
	if ignored {
		// Anyone who may run a container outside the agent's namespace
		// could name another container's identity and train its profile.
		m.log.Warn("identity label ignored: the container is not in the agent's namespace",
			zap.String("id", c.ID), zap.String("namespace", c.Namespace), zap.String("claimed", claimed),
			zap.String("identity", c.Identity()))
	}
	m.log.Info("watching container", zap.String("identity", c.Identity()), zap.Uint64("cgroup", c.CgroupID),
		zap.Uint32("slot", slot))
	m.emit(ctx, events.TypeWatched, events.SevInfo, c, nil, nil, "")
	return nil
}

// Remove stops watching a cgroup; its partial epoch is still scored. The
// identity's profile stays (a restored container resumes it).
func (m *Monitor) Remove(ctx context.Context, cgid uint64) error {
	m.mu.Lock()
	w, ok := m.byCgroup[cgid]
	if ok {
		delete(m.byCgroup, cgid)
	}
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("remove cgroup %d: %w", cgid, ErrNotWatched)
	}
	// The unwatched event follows the container's last epoch (handle).
	if err := m.col.Unwatch(ctx, cgid); err != nil {
		return fmt.Errorf("remove container %s: %w", w.c.ID, err)
	}
	return m.save(w.t)
}

func (m *Monitor) profilePath(identity string) string {
	if m.cfg.profileDir == "" {
		return ""
	}
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 || r == ':' {
			return '_'
		}
		return r
	}, identity)
	return filepath.Join(m.cfg.profileDir, safe+".bosc")
}

func (m *Monitor) save(t *tracked) error {
	m.mu.Lock()
	p := t.profile
	m.mu.Unlock()
	return m.saveProfile(t.identity, p)
}

func (m *Monitor) saveProfile(identity string, p *bags.Profile) error {
	path := m.profilePath(identity)
	if path == "" {
		return nil
	}
	if err := p.SaveFile(path); err != nil {
		return fmt.Errorf("save profile of %s: %w", identity, err)
	}
	return nil
}

// SaveAll writes every profile to the profile directory.
func (m *Monitor) SaveAll() error {
	m.mu.Lock()
	ts := make([]*tracked, 0, len(m.profiles))
	for _, t := range m.profiles {
		ts = append(ts, t)
	}
	m.mu.Unlock()
	var errs []error
	for _, t := range ts {
		errs = append(errs, m.save(t))
	}
	return errors.Join(errs...)
}

func (m *Monitor) emit(ctx context.Context, typ, sev string, c Container, ep *events.Epoch, d *events.Drops, msg string) {
	m.send(ctx, m.sink, m.event(typ, sev, c, ep, d, msg))
}

func (m *Monitor) event(typ, sev string, c Container, ep *events.Epoch, d *events.Drops, msg string) events.Event {
	return events.Event{Schema: events.SchemaVersion, Time: time.Now().UTC(), Type: typ, Severity: sev,
		Sensor: m.cfg.host, Epoch: ep, Drops: d, Message: msg, Container: c.event()}
}

func (m *Monitor) send(ctx context.Context, sink events.Sink, e events.Event) {
	if sink == nil {
		return
	}
	if err := sink.Emit(ctx, e); err != nil {
		m.log.Warn("event sink failed", zap.String("type", e.Type), zap.Error(err))
	}
}
