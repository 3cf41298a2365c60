package mtls

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// A CAOption configures NewCA or LoadCA.
type CAOption interface{ applyCA(*caConfig) }

// An IssueOption configures (*CA).Issue.
type IssueOption interface{ applyIssue(*issueConfig) }

// A SourceOption configures NewSource.
type SourceOption interface{ applySource(*sourceConfig) }

type caConfig struct{ now func() time.Time }

type issueConfig struct {
	now                 func() time.Time
	dns                 []string
	ips                 []netip.Addr
	notBefore, notAfter time.Time
}

type sourceConfig struct {
	log         *zap.Logger
	now         func() time.Time
	reg         prometheus.Registerer
	reloadCheck time.Duration
}

// ClockOption sets the clock a CA issues by, or a Source checks
// certificates against: it is a CAOption, an IssueOption and a SourceOption.
type ClockOption struct{ now func() time.Time }

// WithClock makes now the time of day; nil means time.Now.
func WithClock(now func() time.Time) ClockOption { return ClockOption{now: now} }

func (o ClockOption) applyCA(c *caConfig)         { c.now = o.orNow() }
func (o ClockOption) applyIssue(c *issueConfig)   { c.now = o.orNow() }
func (o ClockOption) applySource(c *sourceConfig) { c.now = o.orNow() }

func (o ClockOption) orNow() func() time.Time {
	if o.now == nil {
		return time.Now
	}
	return o.now
}

type issueFunc func(*issueConfig)

func (f issueFunc) applyIssue(c *issueConfig) { f(c) }

// WithDNSNames adds DNS SANs. An agent's certificate always carries its
// name as one; an operator's carries none.
func WithDNSNames(names ...string) IssueOption {
	return issueFunc(func(c *issueConfig) { c.dns = append(c.dns, names...) })
}

// WithIPs adds IP SANs: an agent's listen addresses, so that a client
// dialing the address without a server name still verifies it.
func WithIPs(ips ...netip.Addr) IssueOption {
	return issueFunc(func(c *issueConfig) { c.ips = append(c.ips, ips...) })
}

// WithValidity sets the certificate's validity window exactly, which may
// lie wholly in the past or the future. Without it a certificate is valid
// from a minute before now (for clocks a little behind) for
// DefaultValidity.
func WithValidity(notBefore, notAfter time.Time) IssueOption {
	return issueFunc(func(c *issueConfig) { c.notBefore, c.notAfter = notBefore, notAfter })
}

type sourceFunc func(*sourceConfig)

func (f sourceFunc) applySource(c *sourceConfig) { f(c) }

// WithLogger sets where a Source logs reloads and refusals.
func WithLogger(log *zap.Logger) SourceOption {
	return sourceFunc(func(c *sourceConfig) {
		if log != nil {
			c.log = log
		}
	})
}

// WithMetrics registers the Source's metrics on reg. Without it they live
// in a registry of the Source's own, which nothing scrapes.
func WithMetrics(reg prometheus.Registerer) SourceOption {
	return sourceFunc(func(c *sourceConfig) { c.reg = reg })
}

// WithReloadCheck sets the least time between two looks at the files'
// size, mtime and inode (default DefaultReloadCheck); 0 looks at every
// handshake.
func WithReloadCheck(d time.Duration) SourceOption {
	return sourceFunc(func(c *sourceConfig) {
		if d >= 0 {
			c.reloadCheck = d
		}
	})
}
