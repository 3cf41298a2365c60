package migrate

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/escape-mtd/escape/arp"
)

// Checks of the destination's segment and of the staged copy. The address
// is probed from the destination host's own interface, never from the
// container's: the staged copy has the container's MAC, and frames from it
// would teach the segment's bridge to send the live source's traffic to the
// destination.

// preflightProbe runs before anything is frozen: does a stranger already
// answer for the address on the destination's segment?
func (m *Migrator) preflightProbe(ctx context.Context, dest string, spec Spec) error {
	s, err := m.startSentry(ctx, dest, spec, m.preflight)
	if err != nil {
		return fmt.Errorf("preflight probe: %w", err)
	}
	other, taken, err := s.Stop()
	if err != nil {
		return fmt.Errorf("preflight probe: %w", err)
	}
	if taken {
		return fmt.Errorf("preflight probe: %w: %v answers from %v", arp.ErrAddressTaken, spec.IP.Addr(), other)
	}
	return nil
}

// startSentry probes for the container's address from dest's interface,
// disregarding the container's own answers.
func (m *Migrator) startSentry(ctx context.Context, dest string, spec Spec, min time.Duration) (*arp.Sentry, error) {
	h, ok := m.rt.host(dest)
	if !ok {
		return nil, fmt.Errorf("unknown host %q", dest)
	}
	mac, err := net.ParseMAC(spec.MAC)
	if err != nil {
		return nil, err
	}
	return arp.StartProbe(ctx, arp.Endpoint{Netns: h.Netns, Link: h.Bridge}, spec.IP.Addr(), min, arp.WithIgnore(mac))
}

// destChecks is a staged migration's probe of the destination's segment,
// run while the source is dumped so that it costs no frozen time (55 ms of
// it when it ran between the dump and the restore): nobody but the
// container may answer for its address there. A sentry probes and listens
// for the whole dump, and at least WithProbe's duration; step 3 then only
// takes a last look (WithLastLook).
type destChecks struct {
	sentry *arp.Sentry
	err    error
	ip     string
}

func (m *Migrator) startDestChecks(ctx context.Context, dest string, spec Spec) *destChecks {
	d := &destChecks{ip: spec.IP.Addr().String()}
	if m.probe > 0 {
		if d.sentry, d.err = m.startSentry(ctx, dest, spec, m.probe); d.err != nil {
			d.err = fmt.Errorf("probe %s on %s: %w", d.ip, dest, d.err)
		}
	}
	return d
}

// wait stops the sentry and returns what it found.
func (d *destChecks) wait() error {
	if d.sentry == nil {
		return d.err
	}
	other, taken, err := d.sentry.Stop()
	if err != nil {
		return err
	}
	if taken {
		return fmt.Errorf("%w: %s answers from %v", arp.ErrAddressTaken, d.ip, other)
	}
	return nil
}
