package plane

import (
	"fmt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// hostDialer opens the link to one host's agent.
type hostDialer struct {
	dialer agentapi.Dialer
	links  func(HostConfig) (migrate.Host, error)
	tlsReg prometheus.Registerer
}

// WithTLSMetrics registers the plane certificate's metrics (refused
// handshakes by reason, reload errors, expiry) with reg.
func WithTLSMetrics(reg prometheus.Registerer) Option { return func(p *Plane) { p.dial.tlsReg = reg } }

// WithAgentDialer opens the connections to agents with d, over the plane's
// own mutual TLS (tests reach the lab's fabric from its plane namespace).
func WithAgentDialer(d agentapi.Dialer) Option { return func(p *Plane) { p.dial.dialer = d } }

// WithHostLinks replaces the links to the agents (unit tests of the
// plane's decisions against hosts in memory).
func WithHostLinks(f func(HostConfig) (migrate.Host, error)) Option {
	return func(p *Plane) { p.dial.links = f }
}

// connectHosts prepares a link to every configured host: mutual TLS with
// the plane's certificate, expecting each agent's own identity.
func (p *Plane) connectHosts() (*hostSet, error) {
	s := &hostSet{m: map[string]migrate.Host{}, cfgs: map[string]HostConfig{}, dial: p.dial.links}
	if p.dial.links == nil {
		src, err := mtls.NewSource(mtls.Files{CA: p.cfg.TLS.CA, Cert: p.cfg.TLS.Cert, Key: p.cfg.TLS.Key}, mtls.WithLogger(p.log.Named("tls")), mtls.WithMetrics(p.dial.tlsReg))
		if err != nil {
			return nil, fmt.Errorf("plane certificate: %w", err)
		}
		if id := src.Identity(); id.Role != mtls.RolePlane {
			return nil, fmt.Errorf("plane certificate %s: names %s, want the plane role", p.cfg.TLS.Cert, id)
		}
		s.tls = src
		s.dial = func(h HostConfig) (migrate.Host, error) {
			return agentapi.NewClient(h.Name, h.Agent,
				agentapi.WithClientCredentials(src.ClientCredentials(mtls.Identity{Role: mtls.RoleAgent, Name: h.Name})),
				agentapi.WithDialer(p.dial.dialer), agentapi.WithClientLogger(p.log.Named("agent").With(zap.String("host", h.Name))),
				agentapi.WithDialOptions(grpc.WithChainUnaryInterceptor(mtls.UnaryClientInterceptor(src)),
					grpc.WithChainStreamInterceptor(mtls.StreamClientInterceptor(src))))
		}
	}
	if _, _, _, err := s.set(p.cfg.Hosts); err != nil {
		_ = s.close()
		return nil, err
	}
	return s, nil
}

// TLS is the plane's certificate source (nil with WithHostLinks), for the
// operator API's listener.
func (p *Plane) TLS() *mtls.Source { return p.hosts.tls }
