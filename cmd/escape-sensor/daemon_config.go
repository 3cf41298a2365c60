package main

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/events"
	"go.uber.org/zap"
)

// runConfig is `escape-sensor run`'s configuration, from flags.
type runConfig struct {
	window, epoch, maxContainers, ringSize, learnEpochs int
	flush                                               time.Duration
	threshold                                           uint64
	epochEvents                                         bool
	profiles                                            string
	sinks                                               []string
	fileMax                                             int64
	fileKeep                                            int
	listen, control                                     string
	labRoot, namespace                                  string
	containerd                                          []string // host=socket
	cgroups                                             []string // raw cgroup2 dirs (no containerd)
	host                                                string
}

// validate answers bad values with clear errors before anything is loaded.
func (c *runConfig) validate() error {
	if c.listen != "" {
		ap, err := netip.ParseAddrPort(c.listen)
		if err != nil {
			host, _, herr := net.SplitHostPort(c.listen)
			if herr != nil || host != "localhost" {
				return fmt.Errorf("--listen %q: want a loopback address:port such as 127.0.0.1:9464", c.listen)
			}
		} else if !ap.Addr().IsLoopback() {
			return fmt.Errorf("--listen %q: metrics and health are served on loopback only", c.listen)
		}
	}
	if c.threshold == 0 {
		return fmt.Errorf("--threshold must be >= 1")
	}
	if len(c.sinks) == 0 {
		return fmt.Errorf("--events: at least one target (stdout, file:PATH or an http(s) URL)")
	}
	for _, s := range c.containerd {
		if h, a, ok := strings.Cut(s, "="); !ok || h == "" || a == "" {
			return fmt.Errorf("--containerd %q: want host=/path/to/containerd.sock", s)
		}
	}
	return nil
}

func (c *runConfig) probeOptions(log *zap.Logger) []sensor.ProbeOption {
	return []sensor.ProbeOption{sensor.WithWindow(c.window), sensor.WithEpoch(c.epoch), sensor.WithFlush(c.flush),
		sensor.WithMaxContainers(c.maxContainers), sensor.WithRingSize(c.ringSize), sensor.WithLogger(log)}
}

// openSinks builds the event targets: "stdout", "file:PATH", or a URL.
func (c *runConfig) openSinks(out interface{ Write([]byte) (int, error) }, log *zap.Logger) (events.Multi, error) {
	var m events.Multi
	for _, s := range c.sinks {
		var sink events.Sink
		var err error
		switch {
		case s == "stdout":
			sink = events.NewStreamSink(out)
		case strings.HasPrefix(s, "file:"):
			sink, err = events.NewFileSink(strings.TrimPrefix(s, "file:"), c.fileMax, c.fileKeep)
		case strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://"):
			sink, err = events.NewWebhookSink(s, events.WithWebhookLogger(log))
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
