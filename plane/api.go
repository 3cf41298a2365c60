package plane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/internal/unixsock"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/model"
	"github.com/escape-mtd/escape/sensor/events"
	"go.uber.org/zap"
)

// Callers of the API, as the transport authenticates them: root on the
// plane's local socket (SO_PEERCRED: it cannot be forged), or a client
// certificate over mutual TLS whose identity names a role. Operators (root
// locally, or an operator certificate) may do everything; an agent may
// only post its own host's sensor events.

// caller is who sent a request.
type caller struct {
	// actor names the caller in the audit log.
	actor string
	role  mtls.Role
	// host is an agent's host name.
	host string
}

type callerKey struct{}

// maxBody bounds a request body.
const maxBody = 1 << 20

// API serves the plane's operator API.
type API struct {
	p   *Plane
	log *zap.Logger
}

// NewAPI returns the API of p.
func NewAPI(p *Plane) *API { return &API{p: p, log: p.log} }

// Listen creates the plane's local socket at path: root only
// (internal/unixsock).
func Listen(path string) (net.Listener, error) { return unixsock.Listen(path) }

// Serve answers requests on l (the local socket, or a listener that
// completes mutual TLS, mtls.Source.Listener) until ctx ends.
func (a *API) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, callerKey{}, c)
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

// who authenticates r's caller.
func who(r *http.Request) (caller, error) {
	if r.TLS != nil {
		id, _, err := mtls.IdentityFromTLS(r.TLS)
		if err != nil {
			return caller{}, err
		}
		c := caller{actor: id.String(), role: id.Role}
		if id.Role == mtls.RoleAgent {
			c.host = id.Name
		}
		return c, nil
	}
	conn, _ := r.Context().Value(callerKey{}).(net.Conn)
	if conn == nil {
		return caller{}, errors.New("no connection")
	}
	cred, err := unixsock.PeerCred(conn)
	if err != nil {
		return caller{}, fmt.Errorf("peer credentials unavailable: %w", err)
	}
	if cred.UID != 0 {
		return caller{actor: fmt.Sprintf("uid=%d pid=%d", cred.UID, cred.PID)}, fmt.Errorf("uid=%d pid=%d: the local socket is root's (other operators use an operator certificate)", cred.UID, cred.PID)
	}
	return caller{actor: fmt.Sprintf("root pid=%d", cred.PID), role: mtls.RoleOperator}, nil
}

// agentRoutes are what an agent may call; everything else is an
// operator's.
var agentRoutes = map[string]bool{"POST /v1/events": true}

// Handler is the API's HTTP handler (every route authenticated and
// authorised by role).
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
	mux.HandleFunc("POST /v1/pods/checkpoint", a.checkpointPod)
	mux.HandleFunc("POST /v1/pods/replace", a.replacePod)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := r.Method + " " + r.URL.Path
		c, err := who(r)
		if err == nil && c.role != mtls.RoleOperator && !(c.role == mtls.RoleAgent && agentRoutes[route]) {
			err = fmt.Errorf("%s: role %s may not call %s", c.actor, c.role, route)
		}
		if err != nil {
			a.p.event(AuditEvent{Kind: "auth", Actor: c.actor, Outcome: "refused", Action: route, Reasons: []string{err.Error()}})
			writeErr(w, http.StatusForbidden, fmt.Errorf("forbidden: %w", err))
			return
		}
		if r.Method != http.MethodGet {
			// A follower acts on nothing: the caller asks the leader.
			if err := a.p.mayAct(); err != nil {
				a.p.event(AuditEvent{Kind: "action", Actor: c.actor, Outcome: "refused", Action: route, Reasons: []string{err.Error()}})
				writeErr(w, http.StatusServiceUnavailable, err)
				return
			}
		}
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

// actionContext detaches an accepted action from its request: a CLI that
// times out or is interrupted must not leave a migration half done. The
// action runs to a settled state within actionTimeout, and Close waits
// for it.
func (a *API) actionContext(r *http.Request) (context.Context, func()) {
	a.p.actions.Add(1)
	ctx, cancel := a.p.actionContext(r.Context())
	return ctx, func() { cancel(); a.p.actions.Done() }
}

func actor(r *http.Request) string {
	if c, ok := r.Context().Value(callerKey{}).(caller); ok {
		return c.actor
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
	case errors.Is(err, ErrNotLeader):
		return http.StatusServiceUnavailable
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
	ctx, done := a.actionContext(r)
	defer done()
	d, err := a.p.HandleReport(ctx, rep, actor(r))
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
	if c, _ := r.Context().Value(callerKey{}).(caller); c.role == mtls.RoleAgent {
		if ev.Container == nil || (ev.Container.Host != "" && ev.Container.Host != c.host) {
			err := fmt.Errorf("%s may only report its own host's events", c.actor)
			a.p.event(AuditEvent{Kind: "auth", Actor: c.actor, Outcome: "refused", Action: "POST /v1/events", Reasons: []string{err.Error()}})
			writeErr(w, http.StatusForbidden, err)
			return
		}
		ev.Container.Host = c.host
	}
	switch err := a.p.EnqueueSensorEvent(ev, int(r.ContentLength)); {
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
	ctx, done := a.actionContext(r)
	defer done()
	ck, err := a.p.Checkpoint(ctx, req.Container, req.Force, actor(r))
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
	ctx, done := a.actionContext(r)
	defer done()
	res, err := a.p.Rollback(ctx, req.Container, []string{"operator request"}, actor(r))
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
	ctx, done := a.actionContext(r)
	defer done()
	res, err := a.p.Migrate(ctx, req.Container, req.To, []string{"operator request"}, actor(r))
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
	if _, ok := a.p.hostConfig(req.Host); !ok {
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
	ctx, done := a.actionContext(r)
	defer done()
	ds, err := a.p.Drain(ctx, req.Host, actor(r))
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
	ctx, done := a.actionContext(r)
	defer done()
	rec, err := a.p.Deploy(ctx, cc, actor(r))
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
	ctx, done := a.actionContext(r)
	defer done()
	if err := a.p.Remove(ctx, req.Container, actor(r)); err != nil {
		writeErr(w, codeFor(err), err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": req.Container})
}
