package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// DefaultReloadCheck is the least time between two looks at a Source's
// files.
const DefaultReloadCheck = time.Second

// Source holds a process's own certificate, key and CA pool, loaded from
// Files, and hands out TLS configurations and gRPC credentials that use
// the current material. When a file changes on disk the next handshake
// (or Reload) loads it again; a bad reload keeps the last good material.
// A Source is safe for concurrent use.
type Source struct {
	files       Files
	log         *zap.Logger
	now         func() time.Time
	reloadCheck time.Duration
	metrics     *metrics

	cur atomic.Pointer[material]

	mu        sync.Mutex // serialises looks at the files and reloads
	lastLook  time.Time  // wall-clock monotonic reading, not the injected clock
	attempted stamps     // the files as the last reload, good or bad, saw them
}

// material is one consistent load of the three files.
type material struct {
	cert tls.Certificate
	leaf *x509.Certificate
	id   Identity
	pool *x509.CertPool
	cas  []*x509.Certificate
}

// NewSource loads f and checks it: the key is the certificate's, the
// certificate chains to one of the CAs, and carries an identity. An own
// certificate outside its validity window loads with a warning: the peers
// will refuse it, and say so.
func NewSource(f Files, opts ...SourceOption) (*Source, error) {
	cfg := sourceConfig{log: zap.NewNop(), now: time.Now, reloadCheck: DefaultReloadCheck}
	for _, o := range opts {
		o.applySource(&cfg)
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	s := &Source{
		files:       f,
		log:         cfg.log,
		now:         cfg.now,
		reloadCheck: cfg.reloadCheck,
		metrics:     newMetrics(cfg.reg),
	}
	st := statFiles(f)
	m, err := load(f, s.now())
	if err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	s.attempted = st
	s.lastLook = time.Now()
	s.install(m, "mtls: loaded certificate")
	return s, nil
}

// Identity is who the own certificate says this process is.
func (s *Source) Identity() Identity { return s.cur.Load().id }

// NotAfter is when the own certificate in use expires.
func (s *Source) NotAfter() time.Time { return s.cur.Load().leaf.NotAfter }

// Reload loads the files now, whether or not they changed. On error the
// material in use stays; the error is logged and counted too.
func (s *Source) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastLook = time.Now()
	return s.reloadLocked(statFiles(s.files))
}

// current is the material for a handshake about to start, after a look at
// the files if the last one is old enough.
func (s *Source) current() *material {
	s.maybeReload()
	return s.cur.Load()
}

func (s *Source) maybeReload() {
	// A handshake never waits for another's reload: it uses what is
	// loaded, and the reload serves the handshakes after it.
	if !s.mu.TryLock() {
		return
	}
	defer s.mu.Unlock()
	if time.Since(s.lastLook) < s.reloadCheck {
		return
	}
	s.lastLook = time.Now()
	st := statFiles(s.files)
	// Files that look as they did at the last attempt are not read again:
	// a bad rotation is reported once, not at every handshake.
	if st == s.attempted {
		return
	}
	_ = s.reloadLocked(st) // logged and counted there
}

func (s *Source) reloadLocked(st stamps) error {
	s.attempted = st
	old := s.cur.Load()
	m, err := load(s.files, s.now())
	if err == nil && m.id != old.id {
		err = fmt.Errorf("the new certificate is %s, this process is %s: an identity changes only with a restart", m.id, old.id)
	}
	if err != nil {
		s.metrics.reloadErrors.Inc()
		s.log.Error("mtls: reload failed, keeping the certificate in use",
			zap.String("cert", s.files.Cert), zap.String("key", s.files.Key), zap.String("ca", s.files.CA),
			zap.Stringer("identity", old.id), zap.Time("not_after", old.leaf.NotAfter), zap.Error(err))
		return fmt.Errorf("mtls: reload: %w", err)
	}
	s.install(m, "mtls: reloaded certificate")
	return nil
}

func (s *Source) install(m *material, msg string) {
	if old := s.cur.Load(); old != nil && old.id != m.id {
		s.metrics.notAfter.DeleteLabelValues(old.id.String())
	}
	s.cur.Store(m)
	s.metrics.notAfter.WithLabelValues(m.id.String()).Set(float64(m.leaf.NotAfter.Unix()))
	s.log.Info(msg, zap.Stringer("identity", m.id), zap.String("serial", m.leaf.SerialNumber.Text(16)),
		zap.Time("not_before", m.leaf.NotBefore), zap.Time("not_after", m.leaf.NotAfter), zap.Int("cas", len(m.cas)))
	if err := CheckPeer(tls.ConnectionState{PeerCertificates: []*x509.Certificate{m.leaf}}, s.now()); err != nil {
		s.log.Warn("mtls: own certificate is not valid now; peers will refuse it", zap.Error(errors.Unwrap(err)))
	}
}

// load reads and checks the three files at time now.
func load(f Files, now time.Time) (*material, error) {
	caData, err := readBounded(f.CA)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	cas, err := ParseCertificatePEM(caData)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", f.CA, err)
	}
	pool := x509.NewCertPool()
	for i, c := range cas {
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("CA file %s: certificate %d (%q) is not a CA certificate", f.CA, i+1, c.Subject.CommonName)
		}
		pool.AddCert(c)
	}
	certData, err := readBounded(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	chain, err := ParseCertificatePEM(certData)
	if err != nil {
		return nil, fmt.Errorf("certificate file %s: %w", f.Cert, err)
	}
	keyData, err := readBounded(f.Key)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	key, err := ParseKeyPEM(keyData)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", f.Key, err)
	}
	leaf := chain[0]
	if !samePublicKey(leaf, key) {
		return nil, fmt.Errorf("key %s is not the key of certificate %s (a rotation half done?)", f.Key, f.Cert)
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("certificate file %s: %w", f.Cert, err)
	}
	if err := chainsTo(leaf, chain[1:], pool, now); err != nil {
		return nil, fmt.Errorf("certificate file %s (%s) does not chain to CA file %s: %w", f.Cert, id, f.CA, err)
	}
	ders := make([][]byte, len(chain))
	for i, c := range chain {
		ders[i] = c.Raw
	}
	return &material{
		cert: tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: leaf},
		leaf: leaf,
		id:   id,
		pool: pool,
		cas:  cas,
	}, nil
}

// chainsTo verifies leaf's signatures up to pool. Time is left out on
// purpose: it is checked at each handshake, and a process must be able to
// hold an expired certificate (and say so) rather than not start. So the
// chain is verified at now moved into the leaf's validity window.
func chainsTo(leaf *x509.Certificate, intermediates []*x509.Certificate, pool *x509.CertPool, now time.Time) error {
	at := now
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}
	if at.After(leaf.NotAfter) {
		at = leaf.NotAfter
	}
	inter := x509.NewCertPool()
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}
