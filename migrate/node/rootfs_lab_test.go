package node

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/migrate"
)

// A container that wrote to its root filesystem, deleted a file of its
// image, and holds what it wrote open, moves with its changes: restored
// fresh on h2 (Restore) and then staged on h3 (StartStaged). Without them
// CRIU cannot restore it. The hosts are the lab's agents, on its shared
// storage; the test looks into the copies from the root namespace.
func TestNodeMigrateRootFSChanges(t *testing.T) {
	l := newTestLab(t)
	h1, h2, h3 := l.agent(t, "h1"), l.agent(t, "h2"), l.agent(t, "h3")
	s := redisSpec(t, "nd-rootfs", 159, h1, h2, h3)
	g := seenGen(t, s.ID, h1, h2, h3)
	s.Image = "escape.local/busybox:latest"
	s.Args = []string{"/bin/sh", "-c", "echo written-on-h1 > /data/state; rm /etc/hostname; exec 3</data/state; while true; do sleep 1; done"}
	ctx := testCtx(t)
	if _, err := h1.Start(ctx, s, migrate.StartOptions{Address: true, Lease: lease(s.IP, g+1)}); err != nil {
		t.Fatal(err)
	}
	st := wantStatus(t, h1, s.ID, migrate.Running)
	waitFile(t, st.PID, "/data/state")

	// Without the changes the copy cannot come back on another host.
	bare := migrate.MigrationImage(s.ID, "bare")
	freshImage(t, bare, h1, h2, h3)
	if _, err := h1.Checkpoint(ctx, s.ID, bare, migrate.CheckpointOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.PrepareNetwork(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.Restore(ctx, s, bare, migrate.RestoreOptions{Fresh: true}); err == nil || !strings.Contains(err.Error(), "Can't open file data/state") {
		t.Fatalf("a dump without its root filesystem changes on another host: %v; want CRIU's failure to open /data/state", err)
	} else {
		t.Logf("without the changes: %v", err)
	}
	if _, err := h2.Remove(ctx, s.ID); err != nil {
		t.Fatal(err)
	}

	img := migrate.MigrationImage(s.ID, "m1")
	freshImage(t, img, h1, h2, h3)
	ck, err := h1.Checkpoint(ctx, s.ID, img, migrate.CheckpointOptions{Exit: true, RootFS: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(imageDirOf(t, h1, img) + "/" + rootfsDiffName); err != nil || ck.Did != "dumped" {
		t.Fatalf("dump %+v without its root filesystem changes: %v", ck, err)
	}
	if _, err := h2.PrepareNetwork(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	res, err := h2.Restore(ctx, s, img, migrate.RestoreOptions{Fresh: true})
	if err != nil || res.Did != "restored" {
		t.Fatalf("restore on h2: %+v, %v", res, err)
	}
	res, err = h2.Restore(ctx, s, img, migrate.RestoreOptions{Fresh: true})
	if err != nil || res.Did != "already restored" {
		t.Fatalf("fresh restore again: %+v, %v", res, err)
	}
	checkChanges(t, h2, s.ID)
	if _, err := h1.Remove(ctx, s.ID); err != nil {
		t.Fatal(err)
	}

	img2 := migrate.MigrationImage(s.ID, "m2")
	freshImage(t, img2, h1, h2, h3)
	if _, err := h3.Stage(ctx, s, img2, migrate.StageOptions{Guards: migrate.GuardResets}); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.Checkpoint(ctx, s.ID, img2, migrate.CheckpointOptions{Exit: true, RootFS: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := h3.StartStaged(ctx, s, img2, migrate.StartStagedOptions{Guards: migrate.GuardResets}); err != nil {
		t.Fatal(err)
	}
	checkChanges(t, h3, s.ID)
}

func waitFile(t *testing.T, pid uint32, path string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root%s", pid, path)); err == nil {
			return
		}
		sleepBriefly()
	}
	t.Fatalf("%s never appeared in the container", path)
}

func checkChanges(t *testing.T, n migrate.Host, id string) {
	t.Helper()
	st := wantStatus(t, n, id, migrate.Running)
	root := fmt.Sprintf("/proc/%d/root", st.PID)
	b, err := os.ReadFile(root + "/data/state")
	if err != nil || strings.TrimSpace(string(b)) != "written-on-h1" {
		t.Fatalf("on %s /data/state is %q (%v)", n.Name(), b, err)
	}
	if _, err := os.Stat(root + "/etc/hostname"); !os.IsNotExist(err) {
		t.Fatalf("on %s the deleted /etc/hostname is back (%v)", n.Name(), err)
	}
	if _, err := os.Stat(root + "/etc/passwd"); err != nil {
		t.Fatalf("on %s the image's files are gone: %v", n.Name(), err)
	}
}
