package agentapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Client is one host's agent as the plane reaches it: migrate.Host over
// the network.
type Client struct {
	name    string
	address string
	conn    *redialConn
	api     agentpb.AgentClient
	log     *zap.Logger
}

var _ migrate.Host = (*Client)(nil)

// Dialer opens the connection to an agent's address (tests dial from inside
// a lab namespace).
type Dialer func(ctx context.Context, address string) (net.Conn, error)

type clientConfig struct {
	creds  credentials.TransportCredentials
	dialer Dialer
	log    *zap.Logger
	extra  []grpc.DialOption
}

// ClientOption tunes a Client.
type ClientOption func(*clientConfig)

// WithClientCredentials sets the transport credentials (required: mutual
// TLS expecting the host's identity, internal/mtls).
func WithClientCredentials(c credentials.TransportCredentials) ClientOption {
	return func(o *clientConfig) { o.creds = c }
}

// WithDialer replaces the TCP dialer.
func WithDialer(d Dialer) ClientOption { return func(o *clientConfig) { o.dialer = d } }

// WithClientLogger sets the logger.
func WithClientLogger(l *zap.Logger) ClientOption { return func(o *clientConfig) { o.log = l } }

// WithDialOptions adds gRPC dial options, such as interceptors that check
// the agent's certificate after every call.
func WithDialOptions(d ...grpc.DialOption) ClientOption {
	return func(o *clientConfig) { o.extra = append(o.extra, d...) }
}

// NewClient returns the client of host name's agent at address. It
// connects lazily and reconnects by itself; a call made while the agent
// cannot be reached fails with migrate.ErrUnreachable.
func NewClient(name, address string, opts ...ClientOption) (*Client, error) {
	cfg := clientConfig{log: zap.NewNop()}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.creds == nil {
		return nil, fmt.Errorf("agent client %s: transport credentials are required", name)
	}
	if name == "" {
		return nil, errors.New("agent client: host name required")
	}
	if _, _, err := net.SplitHostPort(address); err != nil {
		return nil, fmt.Errorf("agent client %s: address %q: want host:port: %w", name, address, err)
	}
	dopts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(cfg.creds),
		// A down agent is found out within a few seconds, and a call
		// never waits for a reconnection: it fails at once (ErrUnreachable).
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6,
			Jitter: 0.2, MaxDelay: 3 * time.Second}, MinConnectTimeout: 3 * time.Second}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		// Every unary request carries its absolute deadline, which the
		// agent refuses it after (deadline.go).
		grpc.WithChainUnaryInterceptor(DeadlineClientInterceptor(0)),
	}, cfg.extra...)
	if cfg.dialer != nil {
		d := cfg.dialer
		dopts = append(dopts, grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d(ctx, a) }))
	}
	dial := func() (*grpc.ClientConn, error) { return grpc.NewClient("passthrough:///"+address, dopts...) }
	cc, err := dial()
	if err != nil {
		return nil, fmt.Errorf("agent client %s at %s: %w", name, address, err)
	}
	conn := &redialConn{cc: cc, dial: dial, log: cfg.log}
	return &Client{name: name, address: address, conn: conn, api: agentpb.NewAgentClient(conn), log: cfg.log}, nil
}

// Name is the host's name.
func (c *Client) Name() string { return c.name }

// Address is the agent's address.
func (c *Client) Address() string { return c.address }

// Close drops the connection.
func (c *Client) Close() error { return c.conn.close() }

// redialConn is the connection to the agent, dialed anew when a call is
// refused for a certificate (Unauthenticated): a connection keeps the
// certificates of its handshake, so after an expired certificate was
// renewed, on either end, calls on it would be refused until the agent's
// maximum connection age (minutes) closed it; a new handshake presents
// and checks the current ones. At most one redial a second.
type redialConn struct {
	dial func() (*grpc.ClientConn, error)
	log  *zap.Logger

	mu     sync.Mutex
	cc     *grpc.ClientConn
	last   time.Time
	closed bool
}

func (r *redialConn) current() *grpc.ClientConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cc
}

func (r *redialConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	cc := r.current()
	err := cc.Invoke(ctx, method, args, reply, opts...)
	r.refused(cc, err)
	return err
}

func (r *redialConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cc := r.current()
	s, err := cc.NewStream(ctx, desc, method, opts...)
	r.refused(cc, err)
	return s, err
}

// refused replaces cc after a call on it was refused for a certificate.
func (r *redialConn) refused(cc *grpc.ClientConn, err error) {
	if status.Code(err) != codes.Unauthenticated {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.cc != cc || time.Since(r.last) < time.Second {
		return
	}
	n, derr := r.dial()
	if derr != nil {
		r.log.Warn("redial after a certificate refusal", zap.Error(derr))
		return
	}
	r.last = time.Now()
	r.cc = n
	r.log.Info("agent refused a certificate: connecting again with the current ones", zap.Error(err))
	go cc.Close()
}

func (r *redialConn) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.cc.Close()
}

func (c *Client) err(call string, err error) error { return fromStatus(c.name, call, err) }

func (c *Client) Hello(ctx context.Context) (migrate.HostInfo, error) {
	r, err := c.api.Hello(ctx, &agentpb.HelloRequest{})
	if err != nil {
		return migrate.HostInfo{}, c.err("hello", err)
	}
	return migrate.HostInfo{Name: r.GetName(), Version: r.GetVersion(), SharedStorage: r.GetSharedStorage(), LazyRestore: r.GetLazyRestore(), BootID: r.GetBootId()}, nil
}

func (c *Client) Status(ctx context.Context, id string) (migrate.ContainerStatus, error) {
	r, err := c.api.Status(ctx, &agentpb.ContainerRef{Id: id})
	if err != nil {
		return migrate.ContainerStatus{}, c.err("status of "+id, err)
	}
	st := migrate.ContainerStatus{Status: migrate.Status(r.GetStatus()), PID: r.GetPid(), MemoryBytes: r.GetMemoryBytes(),
		Network: r.GetNetwork(), NetworkLocks: r.GetNetworkLocks(), Lease: leaseStateFromPB(r.GetLease())}
	for _, a := range r.GetAddresses() {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return migrate.ContainerStatus{}, fmt.Errorf("status of %s on %s: address %q: %w", id, c.name, a, err)
		}
		st.Addresses = append(st.Addresses, p)
	}
	return st, nil
}

func stepResult(r *agentpb.StepReply) migrate.StepResult { return migrate.StepResult{Did: r.GetDid()} }

func (c *Client) Start(ctx context.Context, s migrate.Spec, opts migrate.StartOptions) (migrate.StepResult, error) {
	req := &agentpb.StartRequest{Spec: specToPB(s), Address: opts.Address}
	if opts.Address {
		req.Lease = leaseToPB(opts.Lease)
	}
	r, err := c.api.Start(ctx, req)
	if err != nil {
		return migrate.StepResult{}, c.err("start "+s.ID, err)
	}
	return stepResult(r), nil
}

func (c *Client) Restart(ctx context.Context, s migrate.Spec) (migrate.StepResult, error) {
	r, err := c.api.Restart(ctx, &agentpb.SpecRequest{Spec: specToPB(s)})
	if err != nil {
		return migrate.StepResult{}, c.err("restart "+s.ID, err)
	}
	return stepResult(r), nil
}

func (c *Client) Kill(ctx context.Context, id string) (migrate.StepResult, error) {
	r, err := c.api.Kill(ctx, &agentpb.ContainerRef{Id: id})
	if err != nil {
		return migrate.StepResult{}, c.err("kill "+id, err)
	}
	return stepResult(r), nil
}

func (c *Client) Remove(ctx context.Context, id string) (migrate.StepResult, error) {
	r, err := c.api.Remove(ctx, &agentpb.ContainerRef{Id: id})
	if err != nil {
		return migrate.StepResult{}, c.err("remove "+id, err)
	}
	return stepResult(r), nil
}

func (c *Client) Checkpoint(ctx context.Context, id string, image migrate.ImageName, opts migrate.CheckpointOptions) (migrate.CheckpointResult, error) {
	r, err := c.api.Checkpoint(ctx, &agentpb.CheckpointRequest{Id: id, Image: string(image), Exit: opts.Exit, Paused: opts.Paused, Rootfs: opts.RootFS})
	if err != nil {
		return migrate.CheckpointResult{}, c.err("checkpoint "+id, err)
	}
	return migrate.CheckpointResult{Did: r.GetDid(), Bytes: r.GetBytes(), Took: time.Duration(r.GetTookNs()), CRIU: statsFromPB(r.GetCriu())}, nil
}

func restoreResult(r *agentpb.RestoreReply) migrate.RestoreResult {
	return migrate.RestoreResult{Did: r.GetDid(), Lazy: r.GetLazy(), Took: time.Duration(r.GetTookNs()), CRIU: statsFromPB(r.GetCriu())}
}

func (c *Client) Restore(ctx context.Context, s migrate.Spec, image migrate.ImageName, opts migrate.RestoreOptions) (migrate.RestoreResult, error) {
	r, err := c.api.Restore(ctx, &agentpb.RestoreRequest{Spec: specToPB(s), Image: string(image), Lazy: opts.Lazy,
		ClearLocks: opts.ClearLocks, TcpClose: opts.TCPClose, Fresh: opts.Fresh})
	if err != nil {
		return migrate.RestoreResult{}, c.err("restore "+s.ID, err)
	}
	return restoreResult(r), nil
}

func (c *Client) Stage(ctx context.Context, s migrate.Spec, image migrate.ImageName, opts migrate.StageOptions) (migrate.StepResult, error) {
	r, err := c.api.Stage(ctx, &agentpb.StageRequest{Spec: specToPB(s), Image: string(image), Guards: uint32(opts.Guards)})
	if err != nil {
		return migrate.StepResult{}, c.err("stage "+s.ID, err)
	}
	return stepResult(r), nil
}

func (c *Client) StartStaged(ctx context.Context, s migrate.Spec, image migrate.ImageName, opts migrate.StartStagedOptions) (migrate.RestoreResult, error) {
	r, err := c.api.StartStaged(ctx, &agentpb.StartStagedRequest{Spec: specToPB(s), Image: string(image), Lazy: opts.Lazy, Guards: uint32(opts.Guards)})
	if err != nil {
		return migrate.RestoreResult{}, c.err("start staged "+s.ID, err)
	}
	return restoreResult(r), nil
}

func (c *Client) VerifyImage(ctx context.Context, image migrate.ImageName) (int64, error) {
	r, err := c.api.VerifyImage(ctx, &agentpb.ImageRef{Image: string(image)})
	if err != nil {
		return 0, c.err("verify image "+string(image), err)
	}
	return r.GetBytes(), nil
}

func (c *Client) DropImage(ctx context.Context, image migrate.ImageName) (migrate.StepResult, error) {
	r, err := c.api.DropImage(ctx, &agentpb.ImageRef{Image: string(image)})
	if err != nil {
		return migrate.StepResult{}, c.err("drop image "+string(image), err)
	}
	return stepResult(r), nil
}

func (c *Client) EnsureImage(ctx context.Context, ref string, from *migrate.Peer) (migrate.ImageResult, error) {
	r, err := c.api.EnsureImage(ctx, &agentpb.EnsureImageRequest{Ref: ref, From: peerToPB(from)})
	if err != nil {
		return migrate.ImageResult{}, c.err("ensure image "+ref, err)
	}
	return migrate.ImageResult{Did: r.GetDid(), Bytes: r.GetBytes()}, nil
}

func (c *Client) Offer(ctx context.Context, what migrate.Offer) (migrate.Ticket, error) {
	r, err := c.api.Offer(ctx, &agentpb.OfferRequest{Kind: string(what.Kind), Name: what.Name, To: what.To})
	if err != nil {
		return "", c.err(fmt.Sprintf("offer %s %s to %s", what.Kind, what.Name, what.To), err)
	}
	return migrate.Ticket(r.GetTicket()), nil
}

func (c *Client) Fetch(ctx context.Context, image migrate.ImageName, from migrate.Peer) (migrate.TransferResult, error) {
	r, err := c.api.Fetch(ctx, &agentpb.FetchRequest{Image: string(image), From: peerToPB(&from)})
	if err != nil {
		return migrate.TransferResult{}, c.err(fmt.Sprintf("fetch %s from %s", image, from.Name), err)
	}
	return migrate.TransferResult{Did: r.GetDid(), Bytes: r.GetBytes(), Wire: r.GetWireBytes(), Files: int(r.GetFiles()), Took: time.Duration(r.GetTookNs())}, nil
}

func (c *Client) PrepareNetwork(ctx context.Context, s migrate.Spec, withAddress bool) (migrate.StepResult, error) {
	r, err := c.api.PrepareNetwork(ctx, &agentpb.NetworkRequest{Spec: specToPB(s), Address: withAddress})
	if err != nil {
		return migrate.StepResult{}, c.err("prepare network of "+s.ID, err)
	}
	return stepResult(r), nil
}

func (c *Client) RemoveNetwork(ctx context.Context, id string) (migrate.StepResult, error) {
	r, err := c.api.RemoveNetwork(ctx, &agentpb.ContainerRef{Id: id})
	if err != nil {
		return migrate.StepResult{}, c.err("remove network of "+id, err)
	}
	return stepResult(r), nil
}

func (c *Client) ReleaseAddress(ctx context.Context, id string, ip netip.Prefix) (migrate.StepResult, error) {
	r, err := c.api.ReleaseAddress(ctx, &agentpb.AddressRequest{Id: id, Ip: ip.String()})
	if err != nil {
		return migrate.StepResult{}, c.err(fmt.Sprintf("release %v of %s", ip, id), err)
	}
	return stepResult(r), nil
}

func (c *Client) ClaimAddress(ctx context.Context, id string, ip netip.Prefix, opts migrate.ClaimOptions) (migrate.StepResult, error) {
	r, err := c.api.ClaimAddress(ctx, &agentpb.ClaimRequest{Id: id, Ip: ip.String(), LastLookNs: int64(opts.LastLook), Lease: leaseToPB(opts.Lease)})
	if err != nil {
		return migrate.StepResult{}, c.err(fmt.Sprintf("claim %v for %s", ip, id), err)
	}
	return stepResult(r), nil
}

func (c *Client) Announce(ctx context.Context, id string, ip netip.Addr, opts migrate.AnnounceOptions) (migrate.StepResult, error) {
	r, err := c.api.Announce(ctx, &agentpb.AnnounceRequest{Id: id, Ip: ip.String(), Rounds: int32(opts.Rounds), IntervalNs: int64(opts.Interval)})
	if err != nil {
		return migrate.StepResult{}, c.err(fmt.Sprintf("announce %v for %s", ip, id), err)
	}
	return stepResult(r), nil
}

func (c *Client) Probe(ctx context.Context, ip netip.Addr, ignoreMAC string, d time.Duration) (migrate.ProbeResult, error) {
	r, err := c.api.Probe(ctx, &agentpb.ProbeRequest{Ip: ip.String(), IgnoreMac: ignoreMAC, DurationNs: int64(d)})
	if err != nil {
		return migrate.ProbeResult{}, c.err(fmt.Sprintf("probe %v", ip), err)
	}
	return migrate.ProbeResult{Taken: r.GetTaken(), By: r.GetBy()}, nil
}

func (c *Client) StartSentry(ctx context.Context, ip netip.Addr, ignoreMAC string, min time.Duration) (migrate.SentryID, error) {
	r, err := c.api.StartSentry(ctx, &agentpb.ProbeRequest{Ip: ip.String(), IgnoreMac: ignoreMAC, DurationNs: int64(min)})
	if err != nil {
		return "", c.err(fmt.Sprintf("start sentry for %v", ip), err)
	}
	return migrate.SentryID(r.GetId()), nil
}

func (c *Client) StopSentry(ctx context.Context, id migrate.SentryID) (migrate.ProbeResult, error) {
	r, err := c.api.StopSentry(ctx, &agentpb.SentryRef{Id: string(id)})
	if err != nil {
		return migrate.ProbeResult{}, c.err("stop sentry "+string(id), err)
	}
	return migrate.ProbeResult{Taken: r.GetTaken(), By: r.GetBy()}, nil
}

func (c *Client) SetGuards(ctx context.Context, id string, g migrate.Guards, on bool) (migrate.StepResult, error) {
	r, err := c.api.SetGuards(ctx, &agentpb.GuardRequest{Id: id, Guards: uint32(g), On: on})
	if err != nil {
		return migrate.StepResult{}, c.err("guards of "+id, err)
	}
	return stepResult(r), nil
}

func (c *Client) NetworkLocks(ctx context.Context, id string, remove bool) ([]string, error) {
	r, err := c.api.NetworkLocks(ctx, &agentpb.NetworkLocksRequest{Id: id, Remove: remove})
	if err != nil {
		return nil, c.err("network locks of "+id, err)
	}
	return r.GetTables(), nil
}

func (c *Client) Lease(ctx context.Context, id string, l migrate.Lease) (migrate.LeaseState, error) {
	r, err := c.api.Lease(ctx, &agentpb.LeaseRequest{Id: id, Lease: leaseToPB(l)})
	if err != nil {
		return migrate.LeaseState{}, c.err("lease of "+id, err)
	}
	return leaseStateFromPB(r.GetState()), nil
}
