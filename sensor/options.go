package sensor

import (
	"fmt"
	"time"

	"github.com/escape-mtd/escape/bags"
	"go.uber.org/zap"
)

// Limits of the kernel program (bpf/escape.h).
const (
	MaxEpoch       = 4096 // MAX_EPOCH: largest epoch length E
	nrKeys         = 512  // NR_KEYS
	nrUnknownKey   = nrKeys - 1
	defaultRing    = 4 << 20
	defaultMaxCont = 128
)

type probeConfig struct {
	window   int
	epoch    int
	flush    time.Duration
	maxCont  int
	ringSize int
	log      *zap.Logger
}

func defaultProbeConfig() probeConfig {
	return probeConfig{
		window:   bags.DefaultWindow,
		epoch:    bags.DefaultEpoch,
		flush:    5 * time.Second,
		maxCont:  defaultMaxCont,
		ringSize: defaultRing,
		log:      zap.NewNop(),
	}
}

func (c *probeConfig) validate() error {
	switch {
	case c.window < 1 || c.window > bags.MaxWindow:
		return fmt.Errorf("window %d not in 1..%d", c.window, bags.MaxWindow)
	case c.epoch < c.window || c.epoch > MaxEpoch:
		// E >= W keeps every epoch but the first at E windows and the
		// epoch buffer within MAX_EPOCH hashes.
		return fmt.Errorf("epoch %d calls not in %d..%d", c.epoch, c.window, MaxEpoch)
	case c.flush < 0:
		return fmt.Errorf("flush interval %v < 0", c.flush)
	case c.maxCont < 1 || c.maxCont > 4096:
		return fmt.Errorf("max containers %d not in 1..4096", c.maxCont)
	case c.ringSize < 4096 || c.ringSize&(c.ringSize-1) != 0:
		return fmt.Errorf("ring buffer size %d is not a power of two >= 4096", c.ringSize)
	}
	return nil
}

// ProbeOption configures LoadProbe.
type ProbeOption func(*probeConfig)

// WithWindow sets W, the window size (1..16, default 10).
func WithWindow(w int) ProbeOption { return func(c *probeConfig) { c.window = w } }

// WithEpoch sets E, the epoch length in calls (W..4096, default 1000).
func WithEpoch(e int) ProbeOption { return func(c *probeConfig) { c.epoch = e } }

// WithFlush sets the idle flush: an epoch is closed this long after its first
// call even if it has fewer than E calls. Zero disables it.
func WithFlush(d time.Duration) ProbeOption { return func(c *probeConfig) { c.flush = d } }

// WithMaxContainers sets how many containers can be watched at once. Each
// costs about 100 KiB of kernel memory (epoch double buffer and bag cache).
func WithMaxContainers(n int) ProbeOption { return func(c *probeConfig) { c.maxCont = n } }

// WithRingSize sets the ring buffer size in bytes (a power of two >= 4096).
func WithRingSize(n int) ProbeOption { return func(c *probeConfig) { c.ringSize = n } }

// WithLogger sets the zap logger.
func WithLogger(l *zap.Logger) ProbeOption {
	return func(c *probeConfig) {
		if l != nil {
			c.log = l
		}
	}
}
