package plane

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap/zaptest"
)

// podLink is an offline host whose agent acts on pods (a recording fake:
// the plane's wiring under test; migrate/kube's lab test runs the real
// actions).
type podLink struct {
	offlineHost
	replaceErr error
	calls      *[]string
}

func (l podLink) CheckpointPod(_ context.Context, p migrate.Pod) (migrate.PodCheckpoint, error) {
	*l.calls = append(*l.calls, "checkpoint "+l.name+" "+p.Namespace+"/"+p.Name+"/"+p.Container)
	return migrate.PodCheckpoint{Archive: "/kept/1.tar", Bytes: 42}, nil
}

func (l podLink) ReplacePod(_ context.Context, p migrate.Pod) (string, error) {
	*l.calls = append(*l.calls, "replace "+l.name+" "+p.Namespace+"/"+p.Name+"/"+p.Container)
	if l.replaceErr != nil {
		return "", l.replaceErr
	}
	return p.Name + "-r1", nil
}

func TestPodActionsThroughTheOperatorAPI(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Socket = filepath.Join(dir, "run", "plane.sock")
	cfg.State = filepath.Join(dir, "state.db")
	cfg.Audit = filepath.Join(dir, "audit.jsonl")
	cfg.ServiceRange, cfg.ServicePrefix = "198.18.1.0/24", 15
	for _, n := range []string{"h1", "h2", "h3"} {
		cfg.Hosts = append(cfg.Hosts, HostConfig{Name: n, Agent: "127.0.0.1:1"})
	}
	var calls []string
	p, err := New(cfg, WithLogger(zaptest.NewLogger(t)), WithHostLinks(func(h HostConfig) (migrate.Host, error) {
		switch h.Name {
		case "h1":
			return podLink{offlineHost{name: h.Name}, nil, &calls}, nil
		case "h2":
			return podLink{offlineHost{name: h.Name}, fmt.Errorf("replace pod default/web/web: %w: ReplicaSet web-7d", migrate.ErrPodOwned), &calls}, nil
		}
		return offlineHost{name: h.Name}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	serveAPI(t, p, cfg)
	cl := NewClient(cfg.Socket) // root on the local socket: an operator
	ctx := context.Background()

	var ck migrate.PodCheckpoint
	if err := cl.Do(ctx, "POST", "/v1/pods/checkpoint", PodRequest{Host: "h1", Namespace: "default", Pod: "redis", Container: "redis"}, &ck); err != nil {
		t.Fatal(err)
	}
	if ck.Archive != "/kept/1.tar" || ck.Bytes != 42 {
		t.Errorf("checkpoint answer %+v", ck)
	}
	var res PodReplaceResult
	if err := cl.Do(ctx, "POST", "/v1/pods/replace", PodRequest{Host: "h1", Namespace: "default", Pod: "redis", Container: "redis", Reason: "shell spawned"}, &res); err != nil {
		t.Fatal(err)
	}
	if res.Replacement != "redis-r1" {
		t.Errorf("replace answer %+v", res)
	}
	err = cl.Do(ctx, "POST", "/v1/pods/replace", PodRequest{Host: "h2", Namespace: "default", Pod: "web", Container: "web"}, nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(http.StatusConflict)) || !strings.Contains(err.Error(), "controller") {
		t.Errorf("replace of an owned pod: %v, want 409 naming the controller", err)
	}
	for _, bad := range []PodRequest{{Host: "h3", Namespace: "default", Pod: "redis", Container: "redis"}, {Host: "h9", Namespace: "d", Pod: "p", Container: "c"}, {Host: "h1", Pod: "p"}} {
		if err := cl.Do(ctx, "POST", "/v1/pods/replace", bad, nil); err == nil {
			t.Errorf("replace %+v was accepted", bad)
		}
	}
	want := []string{"checkpoint h1 default/redis/redis", "replace h1 default/redis/redis", "replace h2 default/web/web"}
	if strings.Join(calls, "|") != strings.Join(want, "|") {
		t.Errorf("agent calls %q, want %q", calls, want)
	}
	evs, err := ReadAudit(cfg.Audit)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		if strings.HasPrefix(e.Action, "pod-") {
			got = append(got, e.Kind+" "+e.Action+" "+e.Host+" "+e.Container+" "+e.Decision+e.Outcome)
		}
	}
	wantEv := []string{
		"action pod-checkpoint h1 default/redis/redis ok",
		"decision pod-replace h1 default/redis/redis alert",
		"action pod-replace h1 default/redis/redis ok",
		"decision pod-replace h2 default/web/web alert",
		"action pod-replace h2 default/web/web refused",
	}
	if len(got) < len(wantEv) || strings.Join(got[:len(wantEv)], "|") != strings.Join(wantEv, "|") {
		t.Errorf("audit:\n%s\nwant first:\n%s", strings.Join(got, "\n"), strings.Join(wantEv, "\n"))
	}
}
