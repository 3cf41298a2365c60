package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ServerCredentials are gRPC server credentials over ServerConfig: a failed
// handshake is classified, logged and counted before gRPC drops it.
func (s *Source) ServerCredentials(allow ...Role) credentials.TransportCredentials {
	return &observedCreds{TransportCredentials: credentials.NewTLS(s.ServerConfig(allow...)), src: s}
}

// ClientCredentials are gRPC client credentials over ClientConfig(expect).
// The dial target's host does not matter to verification: expect does.
func (s *Source) ClientCredentials(expect Identity) credentials.TransportCredentials {
	return &observedCreds{TransportCredentials: credentials.NewTLS(s.ClientConfig(expect)), src: s}
}

type observedCreds struct {
	credentials.TransportCredentials
	src *Source
}

func (c *observedCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err == nil {
		conn, err = awaitVerdict(ctx, conn)
	}
	if err != nil {
		c.src.refused(sideClient, raw.RemoteAddr(), err)
		return nil, nil, err
	}
	return conn, info, nil
}

// verdictWait bounds awaitVerdict's wait for a server that stays silent.
const verdictWait = 2 * time.Second

// awaitVerdict waits for the server's first record. In TLS 1.3 a client's
// handshake is over before the server has judged the client's
// certificate, and a refusal arrives as an alert that, left unread, turns
// into a "broken pipe" on the client's first write. A gRPC server speaks
// first (its HTTP/2 SETTINGS), so its first record is the verdict: data,
// kept for gRPC to read, or the alert, which says why. A server that waits
// for the client to speak is given the benefit of the doubt.
func awaitVerdict(ctx context.Context, conn net.Conn) (net.Conn, error) {
	deadline := time.Now().Add(verdictWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetReadDeadline(deadline); err != nil {
		conn.Close()
		return nil, fmt.Errorf("mtls: await the server's verdict: %w", err)
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	var ne net.Error
	switch {
	case n > 0:
		err = nil // an error after data comes back on the next read
	case errors.As(err, &ne) && ne.Timeout():
		err = nil
	case err != nil && peerRefusedUs(err):
		err = fmt.Errorf("mtls: the server refused this client's certificate: %w", err)
	case err != nil:
		err = fmt.Errorf("mtls: the server closed the connection after the handshake: %w", err)
	}
	if err == nil {
		err = conn.SetReadDeadline(time.Time{})
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &prefixConn{Conn: conn, pending: buf[:n]}, nil
}

// prefixConn gives back what awaitVerdict read before reading on.
type prefixConn struct {
	net.Conn
	pending []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *observedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		c.src.refused(sideServer, raw.RemoteAddr(), err)
	}
	return conn, info, err
}

func (c *observedCreds) Clone() credentials.TransportCredentials {
	return &observedCreds{TransportCredentials: c.TransportCredentials.Clone(), src: c.src}
}

// PeerIdentity is the identity of the client of a gRPC server call, from
// the certificate its connection was verified with.
func PeerIdentity(ctx context.Context) (Identity, *x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, nil, errors.New("mtls: the context carries no gRPC peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Identity{}, nil, fmt.Errorf("mtls: peer %s did not connect over TLS (serve with ServerCredentials)", addrString(p.Addr))
	}
	return IdentityFromTLS(&info.State)
}

// IdentityFromTLS is the identity of a server-side TLS connection's
// client (net/http's r.TLS), from the certificate its connection was
// verified with. A certificate that was not verified is refused.
func IdentityFromTLS(cs *tls.ConnectionState) (Identity, *x509.Certificate, error) {
	if cs == nil {
		return Identity{}, nil, errors.New("mtls: not a TLS connection")
	}
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, nil, errors.New("mtls: the peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	if len(cs.VerifiedChains) == 0 {
		return Identity{}, leaf, errors.New("mtls: the peer's certificate was not verified (serve with ServerConfig)")
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return Identity{}, leaf, fmt.Errorf("mtls: %w", err)
	}
	return id, leaf, nil
}

// Authorizer decides whether id may call fullMethod
// ("/package.Service/Method"). An error refuses the call: with its own gRPC
// status if it has one, PermissionDenied otherwise.
type Authorizer func(ctx context.Context, fullMethod string, id Identity) error

// UnaryServerInterceptor refuses, with Unauthenticated, a call whose
// client's certificate is no longer (or not yet) valid, however old its
// connection, then asks authorize (nil: every verified identity may call).
func UnaryServerInterceptor(src *Source, authorize Authorizer) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := src.admit(ctx, info.FullMethod, authorize); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams, checked
// when the stream opens.
func StreamServerInterceptor(src *Source, authorize Authorizer) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := src.admit(ss.Context(), info.FullMethod, authorize); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func (s *Source) admit(ctx context.Context, method string, authorize Authorizer) error {
	p, _ := peer.FromContext(ctx)
	var addr net.Addr
	var info credentials.TLSInfo
	ok := false
	if p != nil {
		addr = p.Addr
		info, ok = p.AuthInfo.(credentials.TLSInfo)
	}
	if !ok {
		return status.Errorf(codes.Unauthenticated, "%s: mtls: the call did not come over mutual TLS", method)
	}
	if err := CheckPeer(info.State, s.now()); err != nil {
		s.refused(sideServer, addr, err)
		return status.Errorf(codes.Unauthenticated, "%s: %v", method, err)
	}
	id, _, err := IdentityFromTLS(&info.State)
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "%s: %v", method, err)
	}
	if authorize == nil {
		return nil
	}
	if err := authorize(ctx, method, id); err != nil {
		s.log.Warn("mtls: call refused", zap.String("method", method), zap.Stringer("peer", id),
			zap.String("remote", addrString(addr)), zap.Error(err))
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
			return err
		}
		return status.Errorf(codes.PermissionDenied, "mtls: %s may not call %s: %v", id, method, err)
	}
	return nil
}

// UnaryClientInterceptor checks, after each call, that the server's
// certificate is still valid, and turns the call's outcome into
// Unauthenticated when it is not: a server whose certificate expired is
// not trusted however long its connection has been up. (The call has
// reached it by then; the Host calls it guards are idempotent.)
func UnaryClientInterceptor(src *Source) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		var p peer.Peer
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Peer(&p))...)
		if cerr := src.checkServer(&p, method); cerr != nil {
			return cerr
		}
		return err
	}
}

// StreamClientInterceptor is UnaryClientInterceptor for streams, checked
// once the stream is open on a connection.
func StreamClientInterceptor(src *Source) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		ctx, cancel := context.WithCancel(ctx)
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			cancel()
			return nil, err
		}
		if p, ok := peer.FromContext(cs.Context()); ok {
			if cerr := src.checkServer(p, method); cerr != nil {
				cancel()
				return nil, cerr
			}
		}
		return &cancelOnEnd{ClientStream: cs, cancel: cancel}, nil
	}
}

// cancelOnEnd releases the stream's context once the stream has ended.
type cancelOnEnd struct {
	grpc.ClientStream
	cancel context.CancelFunc
}

func (s *cancelOnEnd) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.cancel()
	}
	return err
}

func (s *Source) checkServer(p *peer.Peer, method string) error {
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil // no TLS connection reached: the call's own error says why
	}
	if err := CheckPeer(info.State, s.now()); err != nil {
		s.refused(sideClient, p.Addr, err)
		return status.Errorf(codes.Unauthenticated, "%s: server %s no longer trusted: %v", method, addrString(p.Addr), err)
	}
	return nil
}
