package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/escape-mtd/escape/internal/unixsock"
	"github.com/escape-mtd/escape/sensor"
)

// DefaultPath is where the daemon listens.
const DefaultPath = "/run/escape-sensor/control.sock"

// maxRequest bounds one request line.
const maxRequest = 4096

// Request is one line from a client.
type Request struct {
	Op string `json:"op"` // "rows", "ping" or "retrain"
	// Identity is the container identity a retrain applies to.
	Identity string `json:"identity,omitempty"`
}

// Response is the answer line.
type Response struct {
	Error string       `json:"error,omitempty"`
	Host  string       `json:"host,omitempty"`
	Time  time.Time    `json:"time"`
	Rows  []sensor.Row `json:"rows,omitempty"`
}

// Source provides rows.
type Source interface{ Rows() []sensor.Row }

// Retrainer is a Source that can make one identity learn again
// (sensor.Monitor.Retrain). Retraining changes what the sensor reports, so
// it is served only to the peers the socket accepts at all: root.
type Retrainer interface {
	Retrain(identity string) error
}

// Server serves a Source.
type Server struct {
	ln   net.Listener
	src  Source
	host string
	log  *zap.Logger
	wg   sync.WaitGroup
}

// Listen creates the control socket at path, root only (internal/unixsock:
// a missing directory is made 0700, the socket is 0600, and anything at
// path other than a dead socket is refused and left alone).
func Listen(path string, src Source, host string, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	ln, err := unixsock.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &Server{ln: ln, src: src, host: host, log: log}, nil
}

// Serve answers clients until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		s.ln.Close()
	}()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			s.wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("control accept: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, conn)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	// An idle client would otherwise hold Serve's return (it waits for
	// every connection) until the read deadline.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	enc := json.NewEncoder(conn)
	if err := unixsock.RootOnly(conn); err != nil {
		s.log.Warn("control connection refused", zap.Error(err))
		_ = enc.Encode(Response{Time: time.Now(), Error: "permission denied: root only"})
		return
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 512), maxRequest)
	for ctx.Err() == nil {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Minute))
		if !sc.Scan() {
			if err := sc.Err(); err != nil {
				_ = enc.Encode(Response{Time: time.Now(), Error: "bad request: " + err.Error()})
			}
			return
		}
		if err := enc.Encode(s.answer(sc.Bytes())); err != nil {
			return
		}
	}
}

func (s *Server) answer(line []byte) Response {
	r := Response{Time: time.Now(), Host: s.host}
	var req Request
	dec := json.NewDecoder(bytesReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		r.Error = fmt.Sprintf("bad request: want {\"op\":\"rows\"|\"ping\"|\"retrain\",\"identity\":...}: %v", err)
		return r
	}
	switch req.Op {
	case "rows":
		r.Rows = s.src.Rows()
	case "ping":
	case "retrain":
		rt, ok := s.src.(Retrainer)
		switch {
		case !ok:
			r.Error = "retrain: this daemon cannot retrain"
		case req.Identity == "":
			r.Error = "bad request: retrain needs an identity"
		default:
			if err := rt.Retrain(req.Identity); err != nil {
				r.Error = err.Error()
			} else {
				s.log.Info("retrain requested over the control socket", zap.String("identity", req.Identity))
			}
		}
	default:
		r.Error = fmt.Sprintf("bad request: unknown op %q (want rows, ping or retrain)", req.Op)
	}
	return r
}

// Client talks to a daemon.
type Client struct {
	conn net.Conn
	sc   *bufio.Scanner
}

// Dial connects to the daemon's socket.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to the sensor daemon at %s (is `escape-sensor run` up, and are you root?): %w", path, err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	return &Client{conn: conn, sc: sc}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Do sends one request and reads its answer.
func (c *Client) Do(ctx context.Context, req Request) (Response, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(dl)
	} else {
		_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	b, _ := json.Marshal(req)
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return Response{}, fmt.Errorf("control request: %w", err)
	}
	if !c.sc.Scan() {
		return Response{}, fmt.Errorf("control answer: %w", errors.Join(c.sc.Err(), errors.New("connection closed")))
	}
	var r Response
	if err := json.Unmarshal(c.sc.Bytes(), &r); err != nil {
		return Response{}, fmt.Errorf("control answer: %w", err)
	}
	if r.Error != "" {
		return r, fmt.Errorf("sensor daemon: %s", r.Error)
	}
	return r, nil
}
