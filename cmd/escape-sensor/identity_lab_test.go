package main_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// A container on the victim's host, in nerdctl's namespace, with the
// victim's containerd id and its escape.identity label, turns anomalous:
// h1's real sensor (watching that namespace too) keeps it under its own
// identity, and the real plane, fed over h1's agent link, refuses to map
// its anomaly to the victim, which it keeps running untouched, while the
// victim's own epochs still reach it.
func TestLabIdentityLabelDoesNotRedirectAnomalies(t *testing.T) {
	inv := labtest.Ensure(t)
	h, ok := inv.Host("h1")
	if !ok {
		t.Fatal("no host h1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	restartSensor(t, ctx, inv, h, map[string]any{"namespaces": []string{"default"}, "learn_epochs": 10,
		"learn_for": "3s", "threshold": 50, "epoch_events": true, "profiles": ""})

	cfg, err := inv.PlaneConfigIn(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs, seen := observer.New(zapcore.WarnLevel)
	p, err := plane.New(cfg, plane.WithLogger(zap.New(logs)), plane.WithAgentDialer(labtest.PlaneDialer(inv)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopPlane := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- p.Run(runCtx) }()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := "idv-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.Remove(rctx, id, "test cleanup"); err != nil && !errors.Is(err, plane.ErrNotFound) {
			t.Errorf("remove the victim: %v", err)
		}
		stopPlane()
		<-ran
		p.Close()
	})
	const normal = `while true; do cat /proc/self/stat > /dev/null; usleep 2000; done`
	ip := serviceIP(t, inv, 91)
	if _, err := p.Deploy(ctx, plane.ContainerConfig{ID: id, Image: lab.ImageRef("busybox"), Host: "h1", IP: ip.Addr().String(),
		Args: []string{"/bin/sh", "-c", normal}}, "test"); err != nil {
		t.Fatalf("deploy the victim: %v", err)
	}
	agent := labtest.AgentClient(t, inv, "h1")
	before, err := agent.Status(ctx, id)
	if err != nil || before.PID == 0 {
		t.Fatalf("victim status: %+v %v", before, err)
	}

	// The imposter: same id, the victim's label, nerdctl's namespace;
	// normal for a while (it learns), then a burst of new calls.
	rootfs := labtest.BusyboxRootFS(t, inv)
	cli, err := client.New(h.Containerd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	dctx := namespaces.WithNamespace(ctx, "default")
	ctr, err := cli.NewContainer(dctx, id, client.WithContainerLabels(map[string]string{events.IdentityLabel: id}),
		client.WithNewSpec(oci.WithRootFSPath(rootfs), oci.WithRootFSReadonly(), oci.WithEnv([]string{"PATH=/bin"}),
			oci.WithCgroup("/"+inv.CgroupParent+"/h1/imposter-"+id),
			oci.WithProcessArgs("/bin/sh", "-c", `i=0; while [ $i -lt 3000 ]; do cat /proc/self/stat > /dev/null; usleep 2000; i=$((i+1)); done; `+
				`while true; do ls -lR /bin /etc > /dev/null; wc -c /bin/busybox > /dev/null; done`)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx := namespaces.WithNamespace(context.Background(), "default")
		if task, err := ctr.Task(cctx, nil); err == nil {
			task.Delete(cctx, client.WithProcessKill)
		}
		ctr.Delete(cctx)
	})
	task, err := ctr.NewTask(dctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(dctx); err != nil {
		t.Fatal(err)
	}

	// The plane hears the imposter's anomalies over h1's link and refuses
	// them.
	refused := func() bool {
		for _, e := range seen.FilterMessage("sensor event for a container the plane did not place").All() {
			m := e.ContextMap()
			if m["type"] == events.TypeAnomaly && strings.Contains(m["error"].(string), `identity "default/`+id+`"`) {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(3 * time.Minute); !refused(); time.Sleep(200 * time.Millisecond) {
		if ep, err := p.Store().Epoch(id); err == nil && ep.LastAnomaly != 0 {
			t.Fatalf("an anomaly reached the victim's record: %+v", ep)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the plane never refused an event of the imposter; warnings: %+v", seen.All())
		}
	}
	time.Sleep(3 * time.Second) // a few more of them
	ep, err := p.Store().Epoch(id)
	if err != nil {
		t.Fatal(err)
	}
	if ep.LastAnomaly != 0 || ep.LastEpoch == 0 {
		t.Fatalf("victim's epoch record %+v: want its own epochs reported and no anomaly", ep)
	}
	after, err := agent.Status(ctx, id)
	if err != nil || after.PID != before.PID || after.Status != before.Status {
		t.Fatalf("the victim was acted on: before %+v, after %+v (%v)", before, after, err)
	}
	evs, err := plane.ReadAudit(cfg.Audit)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Container == id && (e.Action == "rollback" || e.Action == "migrate" || e.Action == "restart") {
			t.Fatalf("audited action on the victim: %+v", e)
		}
	}
}
