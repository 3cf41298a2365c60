package probe

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// Event is one line of the probe's JSON output.
type Event struct {
	Time  time.Time `json:"time"`
	Event string    `json:"event"` // connected, outage, summary
	// Outage: when the last answered request before it and the first
	// answered request after it were sent, and the gap between them.
	Start  time.Time `json:"start,omitzero"`
	End    time.Time `json:"end,omitzero"`
	GapMS  float64   `json:"gap_ms,omitempty"`
	Reset  bool      `json:"reset,omitempty"` // the connection broke; the probe reconnected
	Error  string    `json:"error,omitempty"` // what broke it
	Intact *bool     `json:"data_intact,omitempty"`
	// State: "kept" (the counter went on by one), "rolled back" (it went
	// back), "lost" (the key is gone).
	State   string `json:"state,omitempty"`
	Counter int64  `json:"counter,omitempty"`
	// Summary.
	Requests    uint64  `json:"requests,omitempty"`
	Connections int     `json:"connections,omitempty"`
	Outages     int     `json:"outages,omitempty"`
	MaxGapMS    float64 `json:"max_gap_ms,omitempty"`
}

// Probe watches one redis service.
type Probe struct {
	addr     string
	interval time.Duration
	timeout  time.Duration
	dialMax  time.Duration
	dial     func(ctx context.Context, addr string) (net.Conn, error)
	out      io.Writer
	now      func() time.Time

	mu  sync.Mutex
	enc *json.Encoder
}

// Option configures a Probe.
type Option func(*Probe)

// WithInterval sets the time between requests (default 50 ms). An outage is
// a gap between answered requests longer than 3 intervals.
func WithInterval(d time.Duration) Option { return func(p *Probe) { p.interval = d } }

// WithTimeout bounds one request (default 30 s: a migration freezes the
// service for seconds and the request must wait it out, not fail).
func WithTimeout(d time.Duration) Option { return func(p *Probe) { p.timeout = d } }

// WithDialTimeout bounds one connection attempt (default 250 ms). A SYN sent
// while the service's address is away (a rollback or a migration in
// progress) is lost, and the kernel would resend it only after a second, then
// three: a short attempt and a fresh SYN on the next tick measure the
// service's outage, not TCP's backoff.
func WithDialTimeout(d time.Duration) Option { return func(p *Probe) { p.dialMax = d } }

// WithDialer replaces the dialer (e.g. one that enters a network namespace).
func WithDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) Option {
	return func(p *Probe) { p.dial = dial }
}

// New returns a probe of the redis server at addr (host:port) that writes
// its events to out.
func New(addr string, out io.Writer, opts ...Option) (*Probe, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("probe address %q: %w", addr, err)
	}
	var d net.Dialer
	p := &Probe{addr: addr, interval: 50 * time.Millisecond, timeout: 30 * time.Second, dialMax: 250 * time.Millisecond, out: out, now: time.Now,
		dial: func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp4", a) }}
	for _, o := range opts {
		o(p)
	}
	if p.interval <= 0 || p.timeout <= 0 || p.dialMax <= 0 {
		return nil, errors.New("probe: interval, timeout and dial timeout must be positive")
	}
	p.enc = json.NewEncoder(out)
	return p, nil
}

func (p *Probe) emit(e Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.enc.Encode(e)
}

// Keys the probe owns on the server.
const (
	keyData    = "escape:probe:data"
	keyCounter = "escape:probe:counter"
)

// Run probes until ctx ends, then emits a summary. It returns an error only
// if the service could never be reached.
func (p *Probe) Run(ctx context.Context) error {
	stamp := strconv.FormatInt(p.now().UnixNano(), 10)
	var (
		c                       *conn
		lastOK                  time.Time
		counter                 int64
		requests                uint64
		conns, outages          int
		maxGap                  float64
		broken                  bool
		breakErr                string
		everConnected, seededUp bool
	)
	connect := func() error {
		cctx, cancel := context.WithTimeout(ctx, p.dialMax)
		defer cancel()
		nc, err := p.dial(cctx, p.addr)
		if err != nil {
			return err
		}
		c = &conn{c: nc, r: bufio.NewReader(nc)}
		conns++
		p.emit(Event{Time: p.now(), Event: "connected", Connections: conns})
		return nil
	}
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	defer func() {
		if c != nil {
			c.c.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			p.emit(Event{Time: p.now(), Event: "summary", Requests: requests, Connections: conns, Outages: outages, MaxGapMS: maxGap})
			if !everConnected {
				return fmt.Errorf("probe: %s never answered", p.addr)
			}
			return nil
		case <-tick.C:
		}
		if c == nil {
			if err := connect(); err != nil {
				if !broken && everConnected {
					broken, breakErr = true, err.Error()
				}
				continue
			}
		}
		sent := p.now()
		if !seededUp {
			if _, err := c.do(p.timeout, "SET", keyData, stamp); err != nil {
				c.c.Close()
				c = nil
				continue
			}
			v, err := c.do(p.timeout, "SET", keyCounter, "0")
			if err != nil || v != "OK" {
				c.c.Close()
				c = nil
				continue
			}
			seededUp, everConnected, lastOK = true, true, sent
			continue
		}
		reply, err := c.do(p.timeout, "INCR", keyCounter)
		requests++
		if err != nil {
			var er errReply
			if !errors.As(err, &er) {
				broken, breakErr = true, err.Error()
				c.c.Close()
				c = nil
			}
			continue
		}
		n, _ := strconv.ParseInt(reply, 10, 64)
		gap := sent.Sub(lastOK)
		if broken || gap > 3*p.interval {
			outages++
			ev := Event{Time: p.now(), Event: "outage", Start: lastOK, End: sent, GapMS: float64(gap.Microseconds()) / 1000,
				Reset: broken, Error: breakErr, Counter: n}
			switch {
			case n == counter+1:
				ev.State = "kept"
			case n == 1:
				ev.State = "lost"
			default:
				ev.State = "rolled back"
			}
			data, derr := c.do(p.timeout, "GET", keyData)
			intact := derr == nil && data == stamp
			ev.Intact = &intact
			maxGap = max(maxGap, ev.GapMS)
			p.emit(ev)
			broken, breakErr = false, ""
		}
		counter, lastOK = n, sent
	}
}
