package agentapi

import (
	"context"
	"errors"
	"fmt"
	"google.golang.org/grpc"
	"io"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
	"google.golang.org/grpc/credentials"
)

// Peers opens, for one agent, the offers other agents made to it: the
// destination of a migration fetches the source's dump (or a container
// image) straight from the source's agent, over mutual TLS, with the
// ticket the plane had the source issue.
type Peers struct {
	creds  func(peer string) credentials.TransportCredentials
	dialer Dialer
	extra  []grpc.DialOption
}

// NewPeers returns the opener; creds gives the credentials that expect a
// peer's identity.
func NewPeers(creds func(peer string) credentials.TransportCredentials, opts ...ClientOption) (*Peers, error) {
	if creds == nil {
		return nil, errors.New("agent peers: credentials are required")
	}
	var cfg clientConfig
	for _, o := range opts {
		o(&cfg)
	}
	return &Peers{creds: creds, dialer: cfg.dialer, extra: cfg.extra}, nil
}

// Open streams what peer offered under its ticket. Closing the reader
// ends the transfer and the connection.
func (p *Peers) Open(ctx context.Context, peer migrate.Peer) (io.ReadCloser, error) {
	// A dial that fails once (seen in the lab: a connect timeout between
	// two hosts, cause unknown) is tried again a few times, within the
	// caller's deadline; a peer that stays unreachable fails the fetch.
	var err error
	for attempt := range openAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
			}
		}
		var rc io.ReadCloser
		if rc, err = p.open(ctx, peer); err == nil || !errors.Is(err, migrate.ErrUnreachable) {
			return rc, err
		}
	}
	return nil, err
}

// openAttempts bounds Open's tries.
const openAttempts = 3

func (p *Peers) open(ctx context.Context, peer migrate.Peer) (io.ReadCloser, error) {
	c, err := NewClient(peer.Name, peer.Address, WithClientCredentials(p.creds(peer.Name)), WithDialer(p.dialer), WithDialOptions(p.extra...))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.api.Transfer(ctx, &agentpb.TransferRequest{Ticket: string(peer.Ticket)})
	if err != nil {
		cancel()
		c.Close()
		return nil, c.err("transfer", err)
	}
	return &chunkReader{stream: stream, close: func() { cancel(); c.Close() }, host: peer.Name, c: c}, nil
}

// chunkReader reads a Transfer stream as bytes.
type chunkReader struct {
	stream agentpb.Agent_TransferClient
	buf    []byte
	close  func()
	host   string
	c      *Client
	err    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		ch, err := r.stream.Recv()
		if errors.Is(err, io.EOF) {
			r.err = io.EOF
			continue
		}
		if err != nil {
			r.err = fmt.Errorf("transfer from %s: %w", r.host, r.c.err("transfer", err))
			continue
		}
		r.buf = ch.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *chunkReader) Close() error {
	r.close()
	return nil
}
