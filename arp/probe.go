package arp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/packet"
)

// Probe asks the endpoint's segment who has ip (an RFC 5227 probe, sender
// address 0.0.0.0) and waits up to timeout for an answer. It returns the
// answering MAC, if any.
func Probe(ctx context.Context, ep Endpoint, ip netip.Addr, timeout time.Duration, opts ...Option) (net.HardwareAddr, bool, error) {
	s, err := StartProbe(ctx, ep, ip, timeout, opts...)
	if err != nil {
		return nil, false, err
	}
	return s.Stop()
}

// Sentry is a probe that keeps listening in the background: a migration
// starts one on the destination's segment when it freezes the source and
// stops it when the dump is done, so that the check costs no frozen time.
type Sentry struct {
	earliest time.Time
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	mac   net.HardwareAddr
	taken bool
	err   error
}

// StartProbe sends the probe of Probe every min/2 and listens for an
// answer until Stop, and at least for min: a station that takes the address
// while the sentry runs is asked, and answers, within min/2. Answers from
// the endpoint's own MAC and from WithIgnore's are disregarded.
func StartProbe(ctx context.Context, ep Endpoint, ip netip.Addr, min time.Duration, opts ...Option) (*Sentry, error) {
	o := newOptions(opts)
	c, li, err := listen(ep)
	if err != nil {
		return nil, fmt.Errorf("probe %v: %w", ip, err)
	}
	req := Packet{Op: opRequest, SenderMAC: li.MAC, SenderIP: netip.IPv4Unspecified(), TargetMAC: make(net.HardwareAddr, 6), TargetIP: ip}
	f, err := req.Frame(broadcast)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("probe %v: %w", ip, err)
	}
	s := &Sentry{earliest: time.Now().Add(min), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer c.Close()
		s.mac, s.taken, s.err = s.listen(ctx, c, f, li.MAC, ip, min, o.ignore)
		if s.err != nil {
			s.err = fmt.Errorf("probe %v on %s: %w", ip, ep, s.err)
		}
	}()
	return s, nil
}

// Stop waits until the sentry has listened for its minimum (or has heard
// an answer), stops it, and reports the answering MAC, if any.
func (s *Sentry) Stop() (net.HardwareAddr, bool, error) {
	if d := time.Until(s.earliest); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.done:
		}
		t.Stop()
	}
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	return s.mac, s.taken, s.err
}

// pollEvery bounds how late a Stop is noticed.
const pollEvery = 10 * time.Millisecond

func (s *Sentry) listen(ctx context.Context, c *packet.Conn, frame []byte, own net.HardwareAddr, ip netip.Addr, min time.Duration, ignore net.HardwareAddr) (net.HardwareAddr, bool, error) {
	next := time.Now()
	buf := make([]byte, 1500)
	for {
		if !time.Now().Before(next) {
			if _, err := c.WriteTo(frame, &packet.Addr{HardwareAddr: broadcast}); err != nil {
				return nil, false, err
			}
			next = time.Now().Add(min / 2)
		}
		select {
		case <-s.stop:
			return nil, false, nil
		default:
		}
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		wait := time.Now().Add(pollEvery)
		if next.Before(wait) {
			wait = next
		}
		if err := c.SetReadDeadline(wait); err != nil {
			return nil, false, err
		}
		n, _, err := c.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		p, err := ParseFrame(buf[:n])
		if err != nil || p.SenderIP != ip || p.SenderMAC.String() == own.String() ||
			(ignore != nil && p.SenderMAC.String() == ignore.String()) {
			continue
		}
		// A reply, or a gratuitous announcement of ip by another station.
		return p.SenderMAC, true, nil
	}
}
