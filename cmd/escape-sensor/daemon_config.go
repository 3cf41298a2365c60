package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/escape-mtd/escape/internal/config"
	"github.com/escape-mtd/escape/sensor"
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
	Threshold     uint64        `yaml:"threshold"`
	EpochEvents   bool          `yaml:"epoch_events"`
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
	Namespace          string        `yaml:"namespace"`
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
	if c.Threshold == 0 {
		return fmt.Errorf("threshold (--threshold): must be >= 1")
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
