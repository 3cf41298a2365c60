package bags

import (
	"fmt"

	"go.uber.org/zap"
)

// DefaultThreshold is the mismatch threshold T used when none is set; it is
// the low end of the papers' sweep (10-100).
const DefaultThreshold = 10

// DefaultMaxBags caps a profile's database when no cap is given. At about
// 60 bytes per entry in a Go map this bounds one container to ~60 MiB even
// under an attack that manufactures novel bags.
const DefaultMaxBags = 1 << 20

type config struct {
	window    int
	epoch     int
	threshold uint64
	autoStop  int
	online    bool
	maxBags   int
	sequence  bool
	workload  string
	arch      string
	log       *zap.Logger
}

func defaultConfig() config {
	return config{
		window:    DefaultWindow,
		epoch:     DefaultEpoch,
		threshold: DefaultThreshold,
		maxBags:   DefaultMaxBags,
		arch:      "x86_64",
		log:       zap.NewNop(),
	}
}

func (c *config) validate() error {
	if c.window < 1 || c.window > MaxWindow {
		return fmt.Errorf("window %d not in 1..%d: %w", c.window, MaxWindow, ErrConfig)
	}
	if c.epoch < 1 {
		return fmt.Errorf("epoch %d calls < 1: %w", c.epoch, ErrConfig)
	}
	if c.maxBags < 1 {
		return fmt.Errorf("max bags %d < 1: %w", c.maxBags, ErrConfig)
	}
	if c.autoStop < 0 {
		return fmt.Errorf("auto-stop %d epochs < 0: %w", c.autoStop, ErrConfig)
	}
	if len(c.workload) > maxNameLen || len(c.arch) > maxNameLen {
		return fmt.Errorf("workload or arch name longer than %d bytes: %w", maxNameLen, ErrConfig)
	}
	return c.validateSequence()
}

// Option configures a Profile.
type Option func(*config)

// WithWindow sets the window size W (1..MaxWindow, default 10).
func WithWindow(w int) Option { return func(c *config) { c.window = w } }

// WithEpoch sets the epoch length E in calls (default 1000). The profile
// itself works on delivered epochs; E is recorded so that offline replays and
// the sensor use the same value.
func WithEpoch(e int) Option { return func(c *config) { c.epoch = e } }

// WithThreshold sets T: an epoch is anomalous when its mismatches exceed T.
func WithThreshold(t uint64) Option { return func(c *config) { c.threshold = t } }

// WithAutoStop ends training on its own once the database has not changed
// (no new bag) for n consecutive non-empty epochs, as the reference
// implementation does with n = 1. Zero (the default) disables it.
func WithAutoStop(n int) Option { return func(c *config) { c.autoStop = n } }

// WithOnlineLearning makes Detect commit the new bags of an epoch that has
// mismatches but stays at or below the threshold (the reference
// implementation's behaviour). Degraded epochs are never learned.
func WithOnlineLearning(on bool) Option { return func(c *config) { c.online = on } }

// WithMaxBags caps the number of distinct bags stored. New bags beyond the
// cap are not stored; they are counted (Stats.OverflowBags/OverflowWindows)
// and still count as mismatches in detection. Counting instead of evicting
// means an attacker flooding novel bags cannot push learned behaviour out.
func WithMaxBags(n int) Option { return func(c *config) { c.maxBags = n } }

// WithWorkload names the workload the profile belongs to; it is stored in the
// file so that an import on another host can be checked.
func WithWorkload(name string) Option { return func(c *config) { c.workload = name } }

// WithArch records the syscall-number space of the profile ("x86_64" for the
// live sensor, "i386" for ADFA-LD). Bags of different archs never match.
func WithArch(arch string) Option { return func(c *config) { c.arch = arch } }

// WithLogger sets the zap logger (default: no-op).
func WithLogger(l *zap.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}
