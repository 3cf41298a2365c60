package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
)

// Sentries: a probe of the segment that keeps listening while the source
// is dumped, so that the check costs no frozen time (55 ms of it when it
// ran between the dump and the restore). The plane starts one on the
// destination before it freezes the source and stops it once the dump is
// done; one it forgets (a crashed plane) is stopped by the node.

const (
	// sentryLife is how long a sentry runs if nobody stops it.
	sentryLife = 5 * time.Minute
	// maxSentries bounds the sentries running at once.
	maxSentries = 64
	// sweepEvery is how often forgotten sentries are looked for.
	sweepEvery = 10 * time.Second
)

type sentry struct {
	s       *arp.Sentry
	cancel  context.CancelFunc
	expires time.Time
}

type sentries struct {
	mu sync.Mutex
	m  map[migrate.SentryID]sentry
}

// StartSentry probes for ip from the host's own interface, disregarding
// ignoreMAC (the container's own), until StopSentry and for at least min.
func (n *Node) StartSentry(ctx context.Context, ip netip.Addr, ignoreMAC string, min time.Duration) (migrate.SentryID, error) {
	hw, err := parseIgnore(ignoreMAC)
	if err == nil && !ip.Is4() {
		err = fmt.Errorf("ip %v: want an IPv4 address", ip)
	}
	if err == nil && (min <= 0 || min > maxProbe) {
		err = fmt.Errorf("sentry for at least %v: want more than 0 and at most %v", min, maxProbe)
	}
	if err != nil {
		return "", n.fail("start sentry", "", err)
	}
	n.expireSentries()
	n.sentry.mu.Lock()
	defer n.sentry.mu.Unlock()
	if len(n.sentry.m) >= maxSentries {
		return "", n.fail("start sentry", "", fmt.Errorf("%d sentries running already", len(n.sentry.m)))
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := migrate.SentryID(hex.EncodeToString(b[:]))
	var o []arp.Option
	if hw != nil {
		o = append(o, arp.WithIgnore(hw))
	}
	// Not the call's context: the sentry outlives the call.
	sctx, cancel := context.WithCancel(n.bgCtx)
	s, err := arp.StartProbe(sctx, n.hostEndpoint(), ip, min, o...)
	if err != nil {
		cancel()
		return "", n.fail("start sentry", "", err)
	}
	if n.sentry.m == nil {
		n.sentry.m = map[migrate.SentryID]sentry{}
	}
	n.sentry.m[id] = sentry{s: s, cancel: cancel, expires: n.now().Add(sentryLife)}
	return id, nil
}

// StopSentry stops the sentry (once it has run for its minimum) and
// reports what it heard. An unknown sentry (stopped already, or forgotten
// and stopped by the node) is an error.
func (n *Node) StopSentry(ctx context.Context, id migrate.SentryID) (migrate.ProbeResult, error) {
	n.sentry.mu.Lock()
	s, ok := n.sentry.m[id]
	delete(n.sentry.m, id)
	n.sentry.mu.Unlock()
	if !ok {
		return migrate.ProbeResult{}, n.fail("stop sentry", "", fmt.Errorf("sentry %.16q: %w", string(id), errUnknownSentry))
	}
	mac, taken, err := s.s.Stop()
	s.cancel()
	if err != nil {
		return migrate.ProbeResult{}, n.fail("stop sentry", "", err)
	}
	return probeResult(mac, taken), nil
}

var errUnknownSentry = errors.New("no such sentry (stopped already, or expired)")

// expireSentries stops the sentries nobody stopped within sentryLife.
func (n *Node) expireSentries() {
	now := n.now()
	n.sentry.mu.Lock()
	var old []sentry
	for id, s := range n.sentry.m {
		if now.After(s.expires) {
			old = append(old, s)
			delete(n.sentry.m, id)
		}
	}
	n.sentry.mu.Unlock()
	for _, s := range old {
		s.cancel()
		_, _, _ = s.s.Stop()
	}
}

func (n *Node) sweepSentries() {
	defer n.bg.Done()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-t.C:
			n.expireSentries()
		}
	}
}

func (s *sentries) stopAll() {
	s.mu.Lock()
	all := s.m
	s.m = nil
	s.mu.Unlock()
	for _, x := range all {
		x.cancel()
		_, _, _ = x.s.Stop()
	}
}
