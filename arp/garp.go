package arp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/packet"
	"go.uber.org/zap"
)

const (
	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
	opRequest     = 1
	opReply       = 2
	frameLen      = 14 + 28
)

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Packet is an Ethernet/IPv4 ARP packet.
type Packet struct {
	Op        uint16
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr
	TargetMAC net.HardwareAddr
	TargetIP  netip.Addr
}

// Frame marshals p into an Ethernet frame addressed to dst.
func (p Packet) Frame(dst net.HardwareAddr) ([]byte, error) {
	if len(dst) != 6 || len(p.SenderMAC) != 6 || len(p.TargetMAC) != 6 {
		return nil, fmt.Errorf("arp frame: hardware addresses must be 6 bytes")
	}
	if !p.SenderIP.Is4() || !p.TargetIP.Is4() {
		return nil, fmt.Errorf("arp frame: protocol addresses must be IPv4")
	}
	b := make([]byte, frameLen)
	copy(b[0:6], dst)
	copy(b[6:12], p.SenderMAC)
	binary.BigEndian.PutUint16(b[12:14], etherTypeARP)
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:4], etherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], p.Op)
	copy(a[8:14], p.SenderMAC)
	sip := p.SenderIP.As4()
	copy(a[14:18], sip[:])
	copy(a[18:24], p.TargetMAC)
	tip := p.TargetIP.As4()
	copy(a[24:28], tip[:])
	return b, nil
}

// ParseFrame decodes an Ethernet frame carrying an IPv4 ARP packet.
func ParseFrame(b []byte) (Packet, error) {
	if len(b) < frameLen {
		return Packet{}, fmt.Errorf("arp frame: %d bytes, want at least %d", len(b), frameLen)
	}
	if binary.BigEndian.Uint16(b[12:14]) != etherTypeARP {
		return Packet{}, errors.New("arp frame: not an ARP ethertype")
	}
	a := b[14:]
	if binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != etherTypeIPv4 || a[4] != 6 || a[5] != 4 {
		return Packet{}, errors.New("arp frame: not Ethernet/IPv4 ARP")
	}
	sip, _ := netip.AddrFromSlice(a[14:18])
	tip, _ := netip.AddrFromSlice(a[24:28])
	return Packet{
		Op:        binary.BigEndian.Uint16(a[6:8]),
		SenderMAC: net.HardwareAddr(append([]byte(nil), a[8:14]...)),
		SenderIP:  sip,
		TargetMAC: net.HardwareAddr(append([]byte(nil), a[18:24]...)),
		TargetIP:  tip,
	}, nil
}

// Gratuitous returns the two announcements MetalLB sends for ip at mac: a
// request and a reply, both with sender and target address ip.
func Gratuitous(mac net.HardwareAddr, ip netip.Addr) [2]Packet {
	return [2]Packet{
		{Op: opRequest, SenderMAC: mac, SenderIP: ip, TargetMAC: make(net.HardwareAddr, 6), TargetIP: ip},
		{Op: opReply, SenderMAC: mac, SenderIP: ip, TargetMAC: broadcast, TargetIP: ip},
	}
}

// Option tunes announcing and moving.
type Option func(*options)

type options struct {
	count    int
	interval time.Duration
	probe    time.Duration
	ignore   net.HardwareAddr
	log      *zap.Logger
}

func newOptions(opts []Option) options {
	o := options{count: 3, interval: 1100 * time.Millisecond, log: zap.NewNop()}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithRepeats sets how many rounds of announcements are sent (default 3).
func WithRepeats(n int) Option { return func(o *options) { o.count = n } }

// WithInterval sets the gap between rounds (default 1.1 s). Linux ignores
// updates to a neighbour entry younger than its locktime (1 s by default),
// so the gap must exceed it for a later round to land.
func WithInterval(d time.Duration) Option { return func(o *options) { o.interval = d } }

// WithProbe makes MoveAddress probe the destination segment for the
// address for d before adding it, failing with ErrAddressTaken if anyone
// answers.
func WithProbe(d time.Duration) Option { return func(o *options) { o.probe = d } }

// WithIgnore makes a probe disregard answers from mac (the address's
// rightful owner, when probing for intruders before a move).
func WithIgnore(mac net.HardwareAddr) Option { return func(o *options) { o.ignore = mac } }

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.log = l } }

func listen(ep Endpoint) (*packet.Conn, LinkInfo, error) {
	li, err := Link(ep)
	if err != nil {
		return nil, LinkInfo{}, err
	}
	if !li.Up {
		return nil, li, fmt.Errorf("link %s is down", ep)
	}
	var c *packet.Conn
	err = Do(ep.Netns, func() error {
		var err error
		c, err = packet.Listen(&net.Interface{Index: li.Index, Name: li.Name, HardwareAddr: li.MAC}, packet.Raw, etherTypeARP, nil)
		return err
	})
	if err != nil {
		return nil, li, fmt.Errorf("packet socket on %s: %w", ep, err)
	}
	return c, li, nil
}

// Announcement is a running series of gratuitous ARP rounds.
type Announcement struct {
	done chan struct{}
	err  error
}

// Wait blocks until every round was sent or the context ended.
func (a *Announcement) Wait() error {
	<-a.done
	return a.err
}

// Announce sends gratuitous ARP for ip from the endpoint's interface, as a
// request and as a reply. The first round is sent before Announce returns;
// the remaining rounds follow in the background, one interval apart, until
// done or ctx ends.
func Announce(ctx context.Context, ep Endpoint, ip netip.Addr, opts ...Option) (*Announcement, error) {
	o := newOptions(opts)
	if o.count < 1 {
		return nil, fmt.Errorf("announce %v: repeats must be at least 1, got %d", ip, o.count)
	}
	if o.count > 1 && o.interval <= time.Second {
		return nil, fmt.Errorf("announce %v: interval %v must exceed the 1s neighbour locktime", ip, o.interval)
	}
	c, li, err := listen(ep)
	if err != nil {
		return nil, fmt.Errorf("announce %v: %w", ip, err)
	}
	var frames [][]byte
	for _, p := range Gratuitous(li.MAC, ip) {
		f, err := p.Frame(broadcast)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("announce %v: %w", ip, err)
		}
		frames = append(frames, f)
	}
	send := func() error {
		for _, f := range frames {
			if _, err := c.WriteTo(f, &packet.Addr{HardwareAddr: broadcast}); err != nil {
				return fmt.Errorf("announce %v on %s: %w", ip, ep, err)
			}
		}
		return nil
	}
	if err := send(); err != nil {
		c.Close()
		return nil, err
	}
	o.log.Debug("gratuitous arp", zap.Stringer("ip", ip), zap.Stringer("endpoint", ep), zap.Int("round", 1))
	a := &Announcement{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		defer c.Close()
		t := time.NewTicker(o.interval)
		defer t.Stop()
		for round := 2; round <= o.count; round++ {
			select {
			case <-ctx.Done():
				a.err = ctx.Err()
				return
			case <-t.C:
			}
			if err := send(); err != nil {
				a.err = err
				return
			}
			o.log.Debug("gratuitous arp", zap.Stringer("ip", ip), zap.Stringer("endpoint", ep), zap.Int("round", round))
		}
	}()
	return a, nil
}
