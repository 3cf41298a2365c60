package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Reason is why a handshake failed or a peer was refused: a small closed
// set, the label of escape_tls_refusals_total.
type Reason string

// The reasons.
const (
	// ReasonPlaintext: the client spoke something other than TLS.
	ReasonPlaintext Reason = "plaintext"
	// ReasonUnknownCA: the certificate does not chain to a trusted CA.
	ReasonUnknownCA Reason = "unknown-ca"
	// ReasonExpired: a certificate's NotAfter has passed.
	ReasonExpired Reason = "expired"
	// ReasonNotYetValid: a certificate's NotBefore is still to come.
	ReasonNotYetValid Reason = "not-yet-valid"
	// ReasonNameMismatch: the server is not who the client dialed.
	ReasonNameMismatch Reason = "name-mismatch"
	// ReasonNoCertificate: the peer sent no certificate.
	ReasonNoCertificate Reason = "no-certificate"
	// ReasonRole: the peer's role may not use this listener, or its
	// certificate's key usage does not allow what it did.
	ReasonRole Reason = "role"
	// ReasonOther: anything else (a reset, a timeout, a protocol error, a
	// certificate without an identity).
	ReasonOther Reason = "other"
)

// Reasons lists every Reason.
func Reasons() []Reason {
	return []Reason{ReasonPlaintext, ReasonUnknownCA, ReasonExpired, ReasonNotYetValid,
		ReasonNameMismatch, ReasonNoCertificate, ReasonRole, ReasonOther}
}

// Sides of a refusal: who saw it.
const (
	sideServer = "server"
	sideClient = "client"
)

// RefusalError is a peer refused by this package's own checks (identity,
// role, validity on a live connection).
type RefusalError struct {
	Reason Reason
	// Peer is the certificate the peer presented, if any.
	Peer *x509.Certificate
	Err  error
}

func (e *RefusalError) Error() string { return fmt.Sprintf("mtls: %s: %v", e.Reason, e.Err) }

func (e *RefusalError) Unwrap() error { return e.Err }

func refusal(r Reason, peer *x509.Certificate, format string, args ...any) *RefusalError {
	return &RefusalError{Reason: r, Peer: peer, Err: fmt.Errorf(format, args...)}
}

// Texts crypto/tls gives no type to; the tests provoke each one, so a Go
// release that rewords them fails there rather than here unnoticed.
const (
	noClientCertText = "client didn't provide a certificate"
	remoteErrorText  = "remote error: tls: "
)

// remoteAlerts maps the alert a peer sent (its text after "remote error:
// tls: ") to the reason the peer refused us for.
var remoteAlerts = map[string]Reason{
	"unknown certificate authority": ReasonUnknownCA,
	"expired certificate":           ReasonExpired,
	"certificate required":          ReasonNoCertificate,
}

// Classify says why err, from a TLS handshake, a refused peer or an RPC
// that failed on one, happened. nil is "".
func Classify(err error) Reason {
	if err == nil {
		return ""
	}
	var re *RefusalError
	if errors.As(err, &re) {
		return re.Reason
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return ReasonPlaintext
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return ReasonUnknownCA
	}
	var he x509.HostnameError
	if errors.As(err, &he) {
		return ReasonNameMismatch
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		switch ci.Reason {
		case x509.Expired:
			// x509 gives both ends of the window one reason; only the
			// detail tells them apart ("current time T is before/after").
			if strings.Contains(ci.Detail, " is before ") {
				return ReasonNotYetValid
			}
			return ReasonExpired
		case x509.IncompatibleUsage:
			return ReasonRole
		default:
			return ReasonOther
		}
	}
	msg := err.Error()
	if strings.Contains(msg, noClientCertText) {
		return ReasonNoCertificate
	}
	if i := strings.Index(msg, remoteErrorText); i >= 0 {
		alert := msg[i+len(remoteErrorText):]
		for text, r := range remoteAlerts {
			if strings.HasPrefix(alert, text) {
				return r
			}
		}
	}
	return ReasonOther
}

// peerRefusedUs reports whether err is the peer's alert rather than our
// own verdict.
func peerRefusedUs(err error) bool {
	var re *RefusalError
	return !errors.As(err, &re) && strings.Contains(err.Error(), remoteErrorText)
}

// peerCertificate digs the peer's certificate out of a handshake error.
func peerCertificate(err error) *x509.Certificate {
	var re *RefusalError
	if errors.As(err, &re) && re.Peer != nil {
		return re.Peer
	}
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) && len(cv.UnverifiedCertificates) > 0 {
		return cv.UnverifiedCertificates[0]
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) && ci.Cert != nil {
		return ci.Cert
	}
	var he x509.HostnameError
	if errors.As(err, &he) && he.Certificate != nil {
		return he.Certificate
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) && ua.Cert != nil {
		return ua.Cert
	}
	return nil
}

// refused logs and counts one failed handshake or refused peer, and says
// why. A handshake given up because the caller went away is no refusal.
func (s *Source) refused(side string, remote net.Addr, err error) Reason {
	if errors.Is(err, context.Canceled) {
		return ""
	}
	reason := Classify(err)
	s.metrics.refusals.WithLabelValues(side, string(reason)).Inc()
	fields := []zap.Field{
		zap.String("side", side),
		zap.String("remote", addrString(remote)),
		zap.String("reason", string(reason)),
		zap.Error(err),
	}
	if c := peerCertificate(err); c != nil {
		if id, ierr := IdentityOf(c); ierr == nil {
			fields = append(fields, zap.Stringer("peer", id))
		} else {
			fields = append(fields, zap.String("peer_subject", c.Subject.String()))
		}
		fields = append(fields, zap.Time("peer_not_before", c.NotBefore), zap.Time("peer_not_after", c.NotAfter))
	}
	msg := "mtls: refused peer"
	if peerRefusedUs(err) {
		msg = "mtls: peer refused the handshake"
	}
	s.log.Warn(msg, fields...)
	return reason
}

func addrString(a net.Addr) string {
	if a == nil {
		return "unknown"
	}
	return a.String()
}

// CheckPeer checks, at now, the validity window of every certificate the
// peer's connection was verified with: per call, so that a connection kept
// alive past the peer's NotAfter stops being trusted.
func CheckPeer(state tls.ConnectionState, now time.Time) error {
	certs := state.PeerCertificates
	if len(state.VerifiedChains) > 0 {
		certs = state.VerifiedChains[0]
	}
	if len(certs) == 0 {
		return refusal(ReasonNoCertificate, nil, "the peer presented no certificate")
	}
	leaf := certs[0]
	// Named only on failure: this runs on every call.
	what := func(c *x509.Certificate) string {
		if c == leaf {
			return "certificate of " + describe(leaf)
		}
		return fmt.Sprintf("CA %q of %s", c.Subject.CommonName, describe(leaf))
	}
	for _, c := range certs {
		if now.Before(c.NotBefore) {
			return refusal(ReasonNotYetValid, leaf, "%s is not valid before %s (now %s)",
				what(c), c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		if now.After(c.NotAfter) {
			return refusal(ReasonExpired, leaf, "%s expired at %s (now %s)",
				what(c), c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// describe names a certificate's holder for a message.
func describe(c *x509.Certificate) string {
	if id, err := IdentityOf(c); err == nil {
		return id.String()
	}
	return fmt.Sprintf("%q", c.Subject.CommonName)
}
