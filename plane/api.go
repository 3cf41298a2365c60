package plane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/model"
	"github.com/escape-mtd/escape/sensor/events"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Peer is the identity of the process at the other end of the socket, as
// the kernel reports it (SO_PEERCRED): it cannot be forged by the client.
type Peer struct {
	PID int32
	UID uint32
	GID uint32
}

func (p Peer) String() string { return fmt.Sprintf("uid=%d pid=%d", p.UID, p.PID) }

type peerKey struct{}

func peerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return Peer{}, err
	}
	if serr != nil {
		return Peer{}, serr
	}
	return Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

// maxBody bounds a request body.
const maxBody = 1 << 20

// API serves the plane over a unix socket. Only root and the configured
// uids get through; the socket itself is 0600 in a 0700 directory.
type API struct {
	p       *Plane
	allowed []uint32
	log     *zap.Logger
}

// NewAPI returns the API of p.
func NewAPI(p *Plane) *API {
	return &API{p: p, allowed: append([]uint32{0}, p.cfg.AllowedUIDs...), log: p.log}
}

// Listen creates the socket at path with strict permissions. A stale
// socket file from a dead plane is replaced; a live one is an error.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another plane is listening", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Serve answers requests on l until ctx ends.
func (a *API) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			peer, err := peerOf(c)
			if err != nil {
				return context.WithValue(ctx, peerKey{}, err)
			}
			return context.WithValue(ctx, peerKey{}, peer)
		},
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		// Requests under way (an operator's migration) finish first.
		sctx, cancel := context.WithTimeout(context.Background(), actionTimeout)
		defer cancel()
		return srv.Shutdown(sctx)
	case err := <-errc:
		return err
	}
}

// Handler is the API's HTTP handler (every route authenticated).
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/reports", a.report)
	mux.HandleFunc("POST /v1/events", a.sensorEvent)
	mux.HandleFunc("GET /v1/status", a.status)
	mux.HandleFunc("POST /v1/checkpoint", a.checkpoint)
	mux.HandleFunc("POST /v1/rollback", a.rollback)
	mux.HandleFunc("POST /v1/migrate", a.migrate)
	mux.HandleFunc("POST /v1/drain", a.drain)
	mux.HandleFunc("POST /v1/undrain", a.undrain)
	mux.HandleFunc("POST /v1/flag", a.flag)
	mux.HandleFunc("POST /v1/deploy", a.deploy)
	mux.HandleFunc("POST /v1/remove", a.remove)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, ok := r.Context().Value(peerKey{}).(Peer)
		if !ok || !slices.Contains(a.allowed, peer.UID) {
			who := "unknown peer"
			if ok {
				who = peer.String()
			} else if err, isErr := r.Context().Value(peerKey{}).(error); isErr {
				who = "peer credentials unavailable: " + err.Error()
			}
			a.p.event(AuditEvent{Kind: "auth", Actor: who, Outcome: "refused", Action: r.Method + " " + r.URL.Path,
				Reasons: []string{"peer not allowed"}})
			writeErr(w, http.StatusForbidden, errors.New("forbidden: peer not allowed"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func actor(r *http.Request) string {
	if p, ok := r.Context().Value(peerKey{}).(Peer); ok {
		return p.String()
	}
	return "unknown"
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// APIError is the body of every error response.
type APIError struct {
	Error string `json:"error"`
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, APIError{Error: err.Error()})
}

// decode reads a JSON body strictly: unknown fields, trailing data and
// oversize bodies are errors.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("bad request body: %w", err))
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeErr(w, http.StatusBadRequest, errors.New("bad request body: trailing data after the JSON object"))
		return false
	}
	return true
}

func codeFor(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrStaleReport), errors.Is(err, ErrNotSafe), errors.Is(err, ErrNoCheckpoint),
		errors.Is(err, ErrIneligible), errors.Is(err, model.ErrNoEligibleHost):
		return http.StatusConflict
	default:
		return http.StatusInternalServerError
	}
}

// ContainerRequest names a container.
type ContainerRequest struct {
	Container string `json:"container"`
	Force     bool   `json:"force,omitempty"`
	To        string `json:"to,omitempty"`
}

// HostRequest names a host.
type HostRequest struct {
	Host        string `json:"host"`
	Compromised *bool  `json:"compromised,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

func (a *API) containerReq(w http.ResponseWriter, r *http.Request) (ContainerRequest, bool) {
	var req ContainerRequest
	if !decode(w, r, &req) {
		return req, false
	}
	if err := migrate.ValidID(req.Container); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("container: %w", err))
		return req, false
	}
	return req, true
}

func (a *API) report(w http.ResponseWriter, r *http.Request) {
	var rep Report
	if !decode(w, r, &rep) {
		return
	}
	if err := rep.Validate(); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	d, err := a.p.HandleReport(r.Context(), rep, actor(r))
	if err != nil {
		writeErr(w, codeFor(err), err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// sensorEvent takes one JSON event of a sensor (sensor/events) and queues
// it: the answer does not wait for the decision.
func (a *API) sensorEvent(w http.ResponseWriter, r *http.Request) {
	var ev events.Event
	if !decode(w, r, &ev) {
		return
	}
	switch err := a.p.EnqueueSensorEvent(ev); {
	case errors.Is(err, ErrFeedFull):
		writeErr(w, http.StatusServiceUnavailable, err)
	case err != nil:
		writeErr(w, http.StatusBadRequest, err)
	default:
		writeJSON(w, http.StatusAccepted, struct {
			Queued bool `json:"queued"`
		}{true})
	}
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	st, err := a.p.Status(r.Context())
	if err != nil {
		writeErr(w, codeFor(err), err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *API) checkpoint(w http.ResponseWriter, r *http.Request) {
	req, ok := a.containerReq(w, r)
	if !ok {
		return
	}
	ck, err := a.p.Checkpoint(r.Context(), req.Container, req.Force, actor(r))
	if err != nil {
		writeErr(w, codeFor(err), err)
		return
	}
	writeJSON(w, http.StatusOK, ck)
}

func (a *API) rollback(w http.ResponseWriter, r *http.Request) {
	req, ok := a.containerReq(w, r)
	if !ok {
		return
	}
	res, err := a.p.Rollback(r.Context(), req.Container, []string{"operator request"}, actor(r))
	if err != nil {
		writeErr(w, codeFor(err), err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *API) migrate(w http.ResponseWriter, r *http.Request) {
	req, ok := a.containerReq(w, r)
	if !ok {
		return
	}
	res, err := a.p.Migrate(r.Context(), req.Container, req.To, []string{"operator request"}, actor(r))
	if err != nil {
		writeJSON(w, codeFor(err), struct {
			Error  string         `json:"error"`
			Result migrate.Result `json:"result"`
		}{err.Error(), res})
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *API) hostReq(w http.ResponseWriter, r *http.Request) (HostRequest, bool) {
	var req HostRequest
	if !decode(w, r, &req) {
		return req, false
	}
	if _, ok := a.p.hostEnv(req.Host); !ok {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("host: unknown host %q", req.Host))
		return req, false
	}
	return req, true
}

func (a *API) drain(w http.ResponseWriter, r *http.Request) {
	req, ok := a.hostReq(w, r)
	if !ok {
		return
	}
	ds, err := a.p.Drain(r.Context(), req.Host, actor(r))
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, struct {
			Error     string     `json:"error"`
			Decisions []Decision `json:"decisions"`
		}{err.Error(), ds})
		return
	}
	writeJSON(w, http.StatusOK, ds)
}

func (a *API) undrain(w http.ResponseWriter, r *http.Request) {
	req, ok := a.hostReq(w, r)
	if !ok {
		return
	}
	if err := a.p.Undrain(req.Host, actor(r)); err != nil {
		writeErr(w, codeFor(err), err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"host": req.Host, "draining": "false"})
}

func (a *API) flag(w http.ResponseWriter, r *http.Request) {
	req, ok := a.hostReq(w, r)
	if !ok {
		return
	}
	if req.Compromised == nil {
		writeErr(w, http.StatusBadRequest, errors.New("compromised: required (true or false)"))
		return
	}
	hr, err := a.p.Flag(req.Host, *req.Compromised, req.Reason, actor(r))
	if err != nil {
		writeErr(w, codeFor(err), err)
		return
	}
	writeJSON(w, http.StatusOK, hr)
}

func (a *API) deploy(w http.ResponseWriter, r *http.Request) {
	var cc ContainerConfig
	if !decode(w, r, &cc) {
		return
	}
	rec, err := a.p.Deploy(r.Context(), cc)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (a *API) remove(w http.ResponseWriter, r *http.Request) {
	req, ok := a.containerReq(w, r)
	if !ok {
		return
	}
	if err := a.p.Remove(r.Context(), req.Container); err != nil {
		writeErr(w, codeFor(err), err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": req.Container})
}

// Client talks to a plane's API socket.
type Client struct {
	hc   *http.Client
	path string
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{hc: &http.Client{Transport: tr}, path: path}
}

// Do sends a request and decodes the answer into out (if not nil). A non-200
// answer is returned as an error carrying the plane's message.
func (c *Client) Do(ctx context.Context, method, route string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://plane"+route, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("plane at %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e APIError
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("plane: %s (HTTP %s)", e.Error, strconv.Itoa(resp.StatusCode))
		}
		return fmt.Errorf("plane: HTTP %d: %s", resp.StatusCode, data)
	}
	if out != nil {
		if raw, ok := out.(*json.RawMessage); ok {
			*raw = append((*raw)[:0], data...)
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("plane answer: %w", err)
		}
	}
	return nil
}
