package plane

// Kubernetes pods: the plane alerts, has the pod's node agent checkpoint
// it while it is judged safe, and has the agent replace a compromised pod
// with one restored from its last safe checkpoint. The agent does both
// through the kubelet and the API server (migrate/kube); the plane only
// decides, authorises (operators alone may ask, api.go) and audits.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// PodRequest names a pod's container and the node (a configured host)
// whose agent acts on it; Reason is the operator's or detector's, audited.
type PodRequest struct {
	Host      string `json:"host"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Container string `json:"container"`
	Reason    string `json:"reason,omitempty"`
}

// PodReplaceResult is a replacement's outcome.
type PodReplaceResult struct {
	Replacement string  `json:"replacement"`
	DurationMS  float64 `json:"duration_ms"`
}

func (r PodRequest) pod() migrate.Pod {
	return migrate.Pod{Namespace: r.Namespace, Name: r.Pod, Container: r.Container}
}

func (r PodRequest) String() string { return r.Namespace + "/" + r.Pod + "/" + r.Container }

// podHost is the agent of r's node, if it acts on pods.
func (p *Plane) podHost(r PodRequest) (migrate.PodHost, error) {
	if r.Host == "" || r.Namespace == "" || r.Pod == "" || r.Container == "" {
		return nil, fmt.Errorf("pod request: host, namespace, pod and container are all required")
	}
	h, err := p.Host(r.Host)
	if err != nil {
		return nil, fmt.Errorf("pod %s: %w", r, err)
	}
	ph, ok := h.(migrate.PodHost)
	if !ok {
		return nil, fmt.Errorf("pod %s: the agent of %s acts on no pods", r, r.Host)
	}
	return ph, nil
}

// CheckpointPod has the node's agent checkpoint the pod's container and
// keep it as its newest safe checkpoint.
func (p *Plane) CheckpointPod(ctx context.Context, r PodRequest, actor string) (migrate.PodCheckpoint, error) {
	start := time.Now()
	ev := AuditEvent{Kind: "action", Action: "pod-checkpoint", Container: r.String(), Host: r.Host, Actor: actor, Reasons: reasonsOf(r)}
	ph, err := p.podHost(r)
	if err == nil {
		var ck migrate.PodCheckpoint
		ck, err = ph.CheckpointPod(ctx, r.pod())
		if err == nil {
			ev.Outcome, ev.Duration = "ok", msSince(start)
			ev.Details = map[string]any{"archive": ck.Archive, "bytes": ck.Bytes}
			p.event(ev)
			return ck, nil
		}
	}
	ev.Outcome, ev.Error, ev.Duration = "failed", err.Error(), msSince(start)
	p.event(ev)
	return migrate.PodCheckpoint{}, err
}

// ReplacePod alerts that the pod is compromised and has its node's agent
// replace it with one restored from its newest safe checkpoint. A refusal
// (a pod with a controller, no safe checkpoint) leaves the alert and the
// pod as it is: the operator decides then.
func (p *Plane) ReplacePod(ctx context.Context, r PodRequest, actor string) (PodReplaceResult, error) {
	start := time.Now()
	p.event(AuditEvent{Kind: "decision", Decision: "alert", Action: "pod-replace", Container: r.String(), Host: r.Host, Actor: actor,
		Reasons: append(reasonsOf(r), "pod reported compromised")})
	ev := AuditEvent{Kind: "action", Action: "pod-replace", Container: r.String(), Host: r.Host, Actor: actor, Reasons: reasonsOf(r)}
	ph, err := p.podHost(r)
	if err == nil {
		var name string
		name, err = ph.ReplacePod(ctx, r.pod())
		if err == nil {
			res := PodReplaceResult{Replacement: name, DurationMS: msSince(start)}
			ev.Outcome, ev.Duration, ev.Details = "ok", res.DurationMS, map[string]any{"replacement": name}
			p.event(ev)
			return res, nil
		}
	}
	ev.Outcome, ev.Error, ev.Duration = "failed", err.Error(), msSince(start)
	if errors.Is(err, migrate.ErrPodOwned) || errors.Is(err, migrate.ErrPodNotFound) {
		ev.Outcome = "refused"
	}
	p.event(ev)
	return PodReplaceResult{}, err
}

func reasonsOf(r PodRequest) []string {
	if r.Reason == "" {
		return []string{"operator request"}
	}
	return []string{r.Reason}
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// podCode is the HTTP status of a pod action's error.
func podCode(err error) int {
	switch {
	case errors.Is(err, migrate.ErrPodNotFound):
		return http.StatusNotFound
	case errors.Is(err, migrate.ErrPodOwned), errors.Is(err, migrate.ErrBadCheckpoint):
		return http.StatusConflict
	case errors.Is(err, migrate.ErrPodForbidden):
		return http.StatusBadGateway // the agent's credential, not the caller's
	default:
		return codeFor(err)
	}
}

func (a *API) checkpointPod(w http.ResponseWriter, r *http.Request) {
	var req PodRequest
	if !decode(w, r, &req) {
		return
	}
	ctx, done := a.actionContext(r)
	defer done()
	ck, err := a.p.CheckpointPod(ctx, req, actor(r))
	if err != nil {
		writeErr(w, podCode(err), err)
		return
	}
	writeJSON(w, http.StatusOK, ck)
}

func (a *API) replacePod(w http.ResponseWriter, r *http.Request) {
	var req PodRequest
	if !decode(w, r, &req) {
		return
	}
	ctx, done := a.actionContext(r)
	defer done()
	res, err := a.p.ReplacePod(ctx, req, actor(r))
	if err != nil {
		writeErr(w, podCode(err), err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
