package agentapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// recordingPods is a recording fake of the node's pod actions: the API
// layer's test (migrate/kube's lab test runs the real ones).
type recordingPods struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (r *recordingPods) record(call string, p migrate.Pod) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call+" "+p.Namespace+"/"+p.Name+"/"+p.Container)
	return r.err
}

func (r *recordingPods) CheckpointPod(_ context.Context, p migrate.Pod) (migrate.PodCheckpoint, error) {
	if err := r.record("checkpoint", p); err != nil {
		return migrate.PodCheckpoint{}, err
	}
	return migrate.PodCheckpoint{Archive: "/var/lib/escape/kube/x.tar", Bytes: 3 << 20, CheckpointedAt: time.Date(2026, 12, 3, 13, 33, 8, 5, time.UTC)}, nil
}

func (r *recordingPods) ReplacePod(_ context.Context, p migrate.Pod) (string, error) {
	if err := r.record("replace", p); err != nil {
		return "", err
	}
	return p.Name + "-r1", nil
}

func (r *recordingPods) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func TestPodActionsRoundTripForThePlaneOnly(t *testing.T) {
	p := newPKI(t)
	pods := &recordingPods{}
	a := startAgent(t, p, idH1, agentOpts{pods: pods})
	plane := dial(t, newSource(t, p.files(t, idPlane, nil)), a)
	pod := migrate.Pod{Namespace: "default", Name: "redis", Container: "redis"}

	ck, err := plane.CheckpointPod(testCtx(t), pod)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Archive != "/var/lib/escape/kube/x.tar" || ck.Bytes != 3<<20 || !ck.CheckpointedAt.Equal(time.Date(2026, 12, 3, 13, 33, 8, 5, time.UTC)) {
		t.Errorf("checkpoint reply %+v", ck)
	}
	if name, err := plane.ReplacePod(testCtx(t), pod); err != nil || name != "redis-r1" {
		t.Errorf("replace: %q, %v", name, err)
	}
	// The refusals keep their identity across the wire.
	for _, sentinel := range []error{migrate.ErrPodOwned, migrate.ErrPodNotFound, migrate.ErrPodForbidden, migrate.ErrBadCheckpoint} {
		pods.mu.Lock()
		pods.err = fmt.Errorf("replace pod default/redis/redis: %w", sentinel)
		pods.mu.Unlock()
		if _, err := plane.ReplacePod(testCtx(t), pod); !errors.Is(err, sentinel) || !strings.Contains(err.Error(), "default/redis/redis") {
			t.Errorf("want %v from the agent, got %v", sentinel, err)
		}
	}
	// Bad names are refused before the node is asked.
	before := len(pods.seen())
	if _, err := plane.CheckpointPod(testCtx(t), migrate.Pod{Namespace: "default", Name: "", Container: "redis"}); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Errorf("empty pod name: %v", err)
	}
	if _, err := plane.ReplacePod(testCtx(t), migrate.Pod{Namespace: "default", Name: strings.Repeat("x", 300), Container: "redis"}); err == nil {
		t.Error("a 300-character pod name was accepted")
	}
	if n := len(pods.seen()); n != before {
		t.Errorf("the node saw %d calls with bad names", n-before)
	}

	// Another agent may not ask.
	agent := dial(t, newSource(t, p.files(t, idH2, nil)), a)
	before = len(pods.seen())
	if _, err := agent.ReplacePod(testCtx(t), pod); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("an agent replacing a pod: %v, want PermissionDenied", err)
	}
	if _, err := agent.CheckpointPod(testCtx(t), pod); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("an agent checkpointing a pod: %v, want PermissionDenied", err)
	}
	if n := len(pods.seen()); n != before {
		t.Errorf("the node saw %d calls of an agent", n-before)
	}
}

func TestPodActionsUnimplementedOffKubernetes(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	plane := dial(t, newSource(t, p.files(t, idPlane, nil)), a)
	_, err := plane.ReplacePod(testCtx(t), migrate.Pod{Namespace: "default", Name: "redis", Container: "redis"})
	if err == nil || !strings.Contains(err.Error(), "Unimplemented") || !strings.Contains(err.Error(), "no kubernetes node") {
		t.Errorf("replace on an agent without pods: %v", err)
	}
}
