package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/identifiers"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/internal/config"
	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/discovery"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
)

// runConfig is `escape-sensor run`'s configuration: the `sensor` section of
// the configuration file (docs/operations.md), then the flags, which win.
type runConfig struct {
	Window        int           `yaml:"window"`
	Epoch         int           `yaml:"epoch"`
	Flush         time.Duration `yaml:"flush"`
	MaxContainers int           `yaml:"max_containers"`
	RingSize      int           `yaml:"ring_size"`
	LearnEpochs   int           `yaml:"learn_epochs"`
	LearnFor      time.Duration `yaml:"learn_for"`
	// LearnMax is the ceiling of a calibrated learning phase.
	LearnMax time.Duration `yaml:"learn_max"`
	// Scorer is the default scoring rule ("" picks lm, or bosc when a
	// threshold is set: a threshold alone keeps its old meaning, T).
	Scorer string `yaml:"scorer"`
	// Threshold, when not 0, is every identity's threshold in its
	// scorer's unit instead of the calibrated one: an explicit override.
	Threshold         float64 `yaml:"threshold"`
	FalseAlarmsPerDay float64 `yaml:"false_alarms_per_day"`
	// LearnOnline keeps identities learning after their learning phase,
	// behind the poisoning guard (a container's escape.learn-online label
	// wins): a clean epoch teaches after LearnQuarantine if no anomaly
	// came meanwhile, at most LearnRate epochs a minute, with at most
	// LearnQueue epochs waiting per identity.
	LearnOnline     bool          `yaml:"learn_online"`
	LearnQuarantine time.Duration `yaml:"learn_quarantine"`
	LearnRate       float64       `yaml:"learn_rate"`
	LearnQueue      int           `yaml:"learn_queue"`
	EpochEvents     bool          `yaml:"epoch_events"`
	// InterventionSettle is how long after the agent's checkpoint, restore
	// or restart ends an epoch that begins is still marked as overlapping
	// it.
	InterventionSettle time.Duration `yaml:"intervention_settle"`
	Profiles           string        `yaml:"profiles"`
	Events             []string      `yaml:"events"`
	EventsMaxSize      int64         `yaml:"events_max_size"`
	EventsKeep         int           `yaml:"events_keep"`
	Listen             string        `yaml:"listen"`
	Control            string        `yaml:"control"`
	// Namespace is the agent's own containerd namespace: it is watched,
	// the agent runs its containers there, and only there is a
	// container's escape.identity label honoured.
	Namespace string `yaml:"namespace"`
	// Namespaces are further containerd namespaces to watch (default for
	// nerdctl, k8s.io for Kubernetes' CRI), one watcher each.
	Namespaces []string `yaml:"namespaces"`
	// Containerd is this host's containerd socket ("" for none: cgroups
	// only).
	Containerd string   `yaml:"containerd"`
	Cgroups    []string `yaml:"cgroups"` // raw cgroup2 dirs (no containerd)
	Host       string   `yaml:"host"`

	// The webhook targets' hardening (docs/operations.md, "Webhook sink").
	// WebhookAllowInsecureHTTP allows a plain http:// target.
	WebhookAllowInsecureHTTP bool `yaml:"webhook_allow_insecure_http"`
	// WebhookAuthHeaderFile holds the header sent with every request
	// ("Name: value", or a bare token sent as a Bearer token); re-read
	// when it changes.
	WebhookAuthHeaderFile string `yaml:"webhook_auth_header_file"`
	// WebhookCAFile holds the CA certificates the SIEM's certificate is
	// checked against instead of the system's roots.
	WebhookCAFile string `yaml:"webhook_ca_file"`
	// WebhookLabels are the container label keys sent (a key, or a prefix
	// and '*'); the others are stripped from the events sent.
	WebhookLabels []string `yaml:"webhook_labels"`
	// DropCapabilities drops, once the BPF programs are attached, every
	// capability but KeepCapabilities (caps.go).
	DropCapabilities bool     `yaml:"drop_capabilities"`
	KeepCapabilities []string `yaml:"keep_capabilities"`
}

// flagKeys maps the YAML keys whose flag is not the key with "-" for "_".
var flagKeys = map[string]string{"cgroups": "cgroup"}

// applyFile loads the sensor section of the configuration file at path over
// c (which holds the flag defaults), then puts back every flag given on the
// command line: flags win over the file.
func (c *runConfig) applyFile(fs *pflag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	given := map[string][]string{}
	fs.Visit(func(f *pflag.Flag) {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			given[f.Name] = sv.GetSlice()
		} else {
			given[f.Name] = []string{f.Value.String()}
		}
	})
	if err := config.Load(path, "sensor", c); err != nil {
		return err
	}
	for name, vals := range given {
		f := fs.Lookup(name)
		var err error
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			err = sv.Replace(vals)
		} else {
			err = f.Value.Set(vals[0])
		}
		if err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
	}
	return nil
}

func flagName(key string) string {
	if f, ok := flagKeys[key]; ok {
		return f
	}
	return strings.ReplaceAll(key, "_", "-")
}

// validate answers bad values with clear errors before anything is loaded.
func (c *runConfig) validate() error {
	if c.Listen != "" {
		ap, err := netip.ParseAddrPort(c.Listen)
		if err != nil {
			host, _, herr := net.SplitHostPort(c.Listen)
			if herr != nil || host != "localhost" {
				return fmt.Errorf("listen (--listen) %q: want a loopback address:port such as 127.0.0.1:9464", c.Listen)
			}
		} else if !ap.Addr().IsLoopback() {
			return fmt.Errorf("listen (--listen) %q: metrics and health are served on loopback only", c.Listen)
		}
	}
	if c.Threshold < 0 || math.IsNaN(c.Threshold) || math.IsInf(c.Threshold, 0) {
		return fmt.Errorf("threshold (--threshold): %v: want 0 (calibrate per container) or a positive number", c.Threshold)
	}
	if c.Scorer != "" {
		if _, err := bags.ParseRule(c.Scorer); err != nil {
			return fmt.Errorf("scorer (--scorer): %w", err)
		}
	}
	if !(c.FalseAlarmsPerDay > 0) || c.FalseAlarmsPerDay > 1e6 {
		return fmt.Errorf("false_alarms_per_day (--false-alarms-per-day): %v is outside (0, 1e6]", c.FalseAlarmsPerDay)
	}
	if c.LearnQuarantine < 0 || c.LearnQuarantine > 24*time.Hour {
		return fmt.Errorf("learn_quarantine (--learn-quarantine): %v is outside 0..24h", c.LearnQuarantine)
	}
	// 0 takes the default, as in bags.OnlineConfig.
	if !(c.LearnRate >= 0) || c.LearnRate > 1e6 {
		return fmt.Errorf("learn_rate (--learn-rate): %v epochs a minute is outside 0..1e6 (0: the default)", c.LearnRate)
	}
	if c.LearnQueue < 0 || c.LearnQueue > bags.MaxQuarantineQueue {
		return fmt.Errorf("learn_queue (--learn-queue): %d is outside 0..%d (0: the default)", c.LearnQueue, bags.MaxQuarantineQueue)
	}
	if c.LearnMax < c.LearnFor || c.LearnMax > 30*24*time.Hour {
		return fmt.Errorf("learn_max (--learn-max): %v is not between learn_for (%v) and 720h", c.LearnMax, c.LearnFor)
	}
	for _, r := range []struct {
		key       string
		v, lo, hi int
	}{{"window", c.Window, 1, 16}, {"epoch", c.Epoch, max(c.Window, 1), 4096}, {"max_containers", c.MaxContainers, 1, 1 << 16},
		{"learn_epochs", c.LearnEpochs, 1, 1 << 30}, {"events_keep", c.EventsKeep, 0, 1000}} {
		if r.v < r.lo || r.v > r.hi {
			return fmt.Errorf("%s (--%s): %d is outside %d..%d", r.key, flagName(r.key), r.v, r.lo, r.hi)
		}
	}
	if c.RingSize < 4096 || c.RingSize&(c.RingSize-1) != 0 {
		return fmt.Errorf("ring_size (--ring-size): %d is not a power of two >= 4096", c.RingSize)
	}
	if c.LearnFor < 0 || c.LearnFor > 30*24*time.Hour {
		return fmt.Errorf("learn_for (--learn-for): %v is outside 0..720h", c.LearnFor)
	}
	if c.InterventionSettle < 0 || c.InterventionSettle > time.Hour {
		return fmt.Errorf("intervention_settle (--intervention-settle): %v is outside 0..1h", c.InterventionSettle)
	}
	if c.Flush < 0 {
		return fmt.Errorf("flush (--flush): %v is negative", c.Flush)
	}
	if c.EventsMaxSize < 4096 {
		return fmt.Errorf("events_max_size (--events-max-size): %d is below 4096 bytes", c.EventsMaxSize)
	}
	if !filepath.IsAbs(c.Control) {
		return fmt.Errorf("control (--control): %q must be an absolute path", c.Control)
	}
	if c.Profiles != "" && !filepath.IsAbs(c.Profiles) {
		return fmt.Errorf("profiles (--profiles): %q must be an absolute path, or empty for memory only", c.Profiles)
	}
	if c.Namespace == "" {
		return fmt.Errorf("namespace (--namespace): must not be empty")
	}
	if err := identifiers.Validate(c.Namespace); err != nil {
		return fmt.Errorf("namespace (--namespace) %q: %w", c.Namespace, err)
	}
	if c.Namespace == discovery.CRINamespace {
		// Identity labels are honoured in the agent's namespace because
		// only the agent creates containers there; the kubelet creates
		// every pod's there.
		return fmt.Errorf("namespace (--namespace) %q: the CRI plugin's namespace, where the kubelet creates containers, cannot be the agent's own; list it in namespaces", c.Namespace)
	}
	seen := map[string]bool{}
	for _, ns := range c.Namespaces {
		if err := identifiers.Validate(ns); err != nil {
			return fmt.Errorf("namespaces (--namespaces) %q: %w", ns, err)
		}
		if seen[ns] {
			return fmt.Errorf("namespaces (--namespaces): %q is listed twice", ns)
		}
		seen[ns] = true
	}

	if len(c.Events) == 0 {
		return fmt.Errorf("events (--events): at least one target (stdout, file:PATH or an http(s) URL)")
	}
	if _, err := parseCapabilities(c.KeepCapabilities); err != nil {
		return fmt.Errorf("keep_capabilities (--keep-capabilities): %w", err)
	}
	if err := c.validateWebhook(); err != nil {
		return err
	}
	if c.Containerd != "" && !filepath.IsAbs(c.Containerd) {
		return fmt.Errorf("containerd (--containerd) %q: want the absolute path of this host's containerd socket", c.Containerd)
	}
	return nil
}

// rule is the default scoring rule: the scorer key, else lm, except that a
// threshold set without a scorer keeps its old meaning (the papers' T).
func (c *runConfig) rule() string {
	switch {
	case c.Scorer != "":
		r, _ := bags.ParseRule(c.Scorer)
		return r
	case c.Threshold > 0:
		return bags.RuleBoSC
	}
	return bags.RuleLM
}

// scoringOptions configure the monitor's scorers and calibration.
func (c *runConfig) scoringOptions() []sensor.MonitorOption {
	opts := []sensor.MonitorOption{sensor.WithScorer(c.rule()), sensor.WithLearnMax(c.LearnMax),
		sensor.WithCalibration(bags.CalibrationConfig{FalseAlarmsPerDay: c.FalseAlarmsPerDay})}
	if c.Threshold > 0 {
		opts = append(opts, sensor.WithThreshold(c.Threshold))
	}
	// A quarantine of 0 is honoured as such (teach at the next epoch):
	// bags.OnlineConfig would read it as "default", so it is 1 ns.
	opts = append(opts, sensor.WithOnlineLearning(c.LearnOnline, bags.OnlineConfig{
		Quarantine: max(c.LearnQuarantine, time.Nanosecond), Rate: c.LearnRate, Queue: c.LearnQueue}))
	return opts
}

// validateWebhook checks the webhook keys and every http(s) target
// against them: a plain http target is refused here, at start, unless
// allowed.
func (c *runConfig) validateWebhook() error {
	for key, p := range map[string]string{"webhook_auth_header_file": c.WebhookAuthHeaderFile, "webhook_ca_file": c.WebhookCAFile} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("%s (--%s): %q must be an absolute path (or empty)", key, flagName(key), p)
		}
	}
	if _, err := events.NewLabelFilter(c.WebhookLabels); err != nil {
		return fmt.Errorf("webhook_labels (--webhook-labels): %w", err)
	}
	for _, s := range c.Events {
		if !isWebhookTarget(s) {
			continue
		}
		if _, err := events.CheckWebhookURL(s, c.WebhookAllowInsecureHTTP); errors.Is(err, events.ErrPlainHTTP) {
			return fmt.Errorf("events (--events): %w (webhook_allow_insecure_http: true, or --webhook-allow-insecure-http)", err)
		} else if err != nil {
			return fmt.Errorf("events (--events): %w", err)
		}
	}
	return nil
}

func isWebhookTarget(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// webhookOptions are the sink options the webhook keys give.
func (c *runConfig) webhookOptions(log *zap.Logger) []events.WebhookOption {
	opts := []events.WebhookOption{events.WithWebhookLogger(log), events.WithLabels(c.WebhookLabels)}
	if c.WebhookAllowInsecureHTTP {
		opts = append(opts, events.WithInsecureHTTP())
	}
	if c.WebhookAuthHeaderFile != "" {
		opts = append(opts, events.WithAuthHeaderFile(c.WebhookAuthHeaderFile))
	}
	if c.WebhookCAFile != "" {
		opts = append(opts, events.WithCAFile(c.WebhookCAFile))
	}
	return opts
}

func (c *runConfig) probeOptions(log *zap.Logger) []sensor.ProbeOption {
	return []sensor.ProbeOption{sensor.WithWindow(c.Window), sensor.WithEpoch(c.Epoch), sensor.WithFlush(c.Flush),
		sensor.WithMaxContainers(c.MaxContainers), sensor.WithRingSize(c.RingSize), sensor.WithLogger(log)}
}

// openSinks builds the event targets: "stdout", "file:PATH", or a URL.
func (c *runConfig) openSinks(out interface{ Write([]byte) (int, error) }, log *zap.Logger) (events.Multi, error) {
	var m events.Multi
	for _, s := range c.Events {
		var sink events.Sink
		var err error
		switch {
		case s == "stdout":
			sink = events.NewStreamSink(out)
		case strings.HasPrefix(s, "file:"):
			sink, err = events.NewFileSink(strings.TrimPrefix(s, "file:"), c.EventsMaxSize, c.EventsKeep)
		case isWebhookTarget(s):
			sink, err = events.NewWebhookSink(s, c.webhookOptions(log)...)
		default:
			err = fmt.Errorf("--events %q: want stdout, file:PATH or an http(s) URL", s)
		}
		if err != nil {
			m.Close()
			return nil, err
		}
		m = append(m, sink)
	}
	return m, nil
}

// endpoints lists the containerd namespaces to follow on this host: the
// agent's own first (its identity labels honoured), then the others, the
// CRI plugin's marked as such. None without a containerd socket.
func (c *runConfig) endpoints() []discovery.Endpoint {
	if c.Containerd == "" {
		return nil
	}
	out := []discovery.Endpoint{{Host: c.Host, Address: c.Containerd, Namespace: c.Namespace, Own: true}}
	for _, ns := range c.Namespaces {
		if ns == c.Namespace {
			continue
		}
		out = append(out, discovery.Endpoint{Host: c.Host, Address: c.Containerd, Namespace: ns,
			CRI: ns == discovery.CRINamespace})
	}
	return out
}
