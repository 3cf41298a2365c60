package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"github.com/escape-mtd/escape/bags"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/escape-mtd/escape/internal/intervene"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// checkpoints is how many checkpoints the acceptance asks for.
const checkpoints = 50

// TestCheckpointsUnderLoadAreMarked is issue 25's acceptance for marked
// interventions: a busy redis started through h1's agent, under a steady
// INCR load from the client namespace, learned by h1's sensor, then
// checkpointed 50 times through the agent (the container keeps running).
// h1's own event file, as a SIEM reads it, must hold no unmarked anomaly
// whose epoch overlaps a checkpoint, and must hold marked epochs.
func TestCheckpointsUnderLoadAreMarked(t *testing.T) {
	inv := labtest.Ensure(t)
	h, ok := inv.Host("h1")
	if !ok {
		t.Fatal("no host h1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// h1's sensor: a short learning phase, every epoch in the event file
	// (the marked clean ones too), profiles in memory only.
	restartSensor(t, ctx, inv, h, map[string]any{"learn_epochs": 150, "learn_for": "20s", "epoch_events": true, "profiles": ""})
	agent := labtest.AgentClient(t, inv, "h1")

	id := fmt.Sprintf("mark-redis-%d", time.Now().Unix()%1_000_000)
	ip := serviceIP(t, inv, 77)
	spec := migrate.Spec{ID: id, Image: lab.ImageRef("redis"), IP: ip, MAC: macOf(ip.Addr()), NetworkLock: "nftables",
		Args: []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"}}
	t.Cleanup(func() { _, _ = agent.Remove(context.Background(), id) })
	if _, err := agent.EnsureImage(ctx, spec.Image, nil); err != nil {
		t.Fatalf("image: %v", err)
	}
	lease := migrate.Lease{IP: ip.Addr(), Generation: uint64(time.Now().UnixNano()), NotAfter: time.Now().Add(time.Hour)}
	if _, err := agent.Start(ctx, spec, migrate.StartOptions{Address: true, Lease: lease}); err != nil {
		t.Fatalf("start through the agent: %v", err)
	}

	// Load: two connections INCR in a loop; a dump stalls them (CRIU's
	// network lock), it never resets them.
	var incrs, errs atomic.Int64
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for c := range 2 {
		r := labtest.DialRedis(t, inv, ip.Addr(), 30*time.Second)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				if _, err := r.Incr(fmt.Sprintf("k%d", c), 10*time.Second); err != nil {
					errs.Add(1)
					return
				}
				incrs.Add(1)
			}
		}()
	}
	defer func() { stopLoad(); wg.Wait() }()

	path := filepath.Join(h.LogDir, "events.jsonl")
	waitEvents(t, ctx, path, id, 90*time.Second, func(evs []events.Event) bool {
		n := 0
		for _, e := range evs {
			if e.Epoch != nil && e.Epoch.Mode == "detecting" {
				n++
			}
		}
		return n >= 100 // learned, and detecting for a while
	})
	t.Logf("learned after %d INCRs", incrs.Load())

	type window struct{ start, end time.Time }
	var wins []window
	var last migrate.ImageName
	for i := range checkpoints {
		img := migrate.ImageName(fmt.Sprintf("lab-test/%s-%02d", id, i))
		start := time.Now()
		res, err := agent.Checkpoint(ctx, id, img, migrate.CheckpointOptions{})
		end := time.Now()
		if err != nil || res.Did != "dumped" {
			t.Fatalf("checkpoint %d: %+v %v", i, res, err)
		}
		wins = append(wins, window{start, end})
		if i == checkpoints-1 {
			last = img // restored below
			t.Cleanup(func() { _, _ = agent.DropImage(context.Background(), img) })
		} else if _, err := agent.DropImage(ctx, img); err != nil {
			t.Errorf("drop %s: %v", img, err)
		}
		// Past the sensor's settle margin, so that the epochs between
		// checkpoints are unmarked ones.
		time.Sleep(intervene.DefaultSettle + time.Second)
	}
	stopLoad()
	wg.Wait()
	// The clients' closing calls (close, a last read) are new to the
	// profile: what follows is not the steady load any more.
	loadEnd := time.Now()
	if errs.Load() > 0 {
		t.Errorf("%d load connections failed across the checkpoints", errs.Load())
	}
	time.Sleep(time.Second) // the last epochs reach the file

	evs := readEvents(t, path, id)
	first := wins[0].start
	overlaps := func(e events.Event) (bool, bool) {
		from, to := e.Epoch.Start, e.Time
		for _, w := range wins {
			if !to.Before(w.start) && !from.After(w.end) {
				return true, false
			}
			if !to.Before(w.end) && !from.After(w.end.Add(intervene.DefaultSettle)) {
				return false, true
			}
		}
		return false, false
	}
	var unmarkedOverlap, marked, markedAnoms, unmarkedOver, unmarkedSettle, unmarkedElse, epochs, overlapping int
	for _, e := range evs {
		if e.Epoch == nil || e.Time.Before(first) || e.Epoch.Start.After(loadEnd) {
			continue
		}
		epochs++
		// The lab's configuration sets no threshold: the daemon's default
		// scorer, calibrated per container, is the one under test.
		if e.Epoch.Scorer != bags.RuleLM || !e.Epoch.Calibrated {
			t.Fatalf("epoch %d scored by %q (calibrated %v), want the default lm, calibrated", e.Epoch.Seq, e.Epoch.Scorer, e.Epoch.Calibrated)
		}
		over, settling := overlaps(e)
		if over {
			overlapping++
		}
		if e.Intervention != nil {
			marked++
			if e.Intervention.Kind != intervene.Checkpoint || e.Intervention.By != intervene.ByAgent {
				t.Errorf("mark %+v", *e.Intervention)
			}
			if e.Type == events.TypeAnomaly {
				markedAnoms++
				if e.Severity != events.SevWarning {
					t.Errorf("marked anomaly of severity %s", e.Severity)
				}
			}
			continue
		}
		if over {
			// The call's span here begins before the agent's window: the
			// request's way over the fabric and the agent's checks before
			// the dump. Clean epochs there are the workload's own.
			unmarkedOverlap++
		}
		if e.Type != events.TypeAnomaly {
			continue
		}
		switch {
		case over:
			unmarkedOver++
		case settling:
			unmarkedSettle++
		default:
			unmarkedElse++
		}
	}
	// A rollback's restore is marked too: the restored copy's first
	// epochs carry kind restore.
	restoredAt := time.Now()
	if _, err := agent.Restore(ctx, spec, last, migrate.RestoreOptions{ClearLocks: true, TCPClose: true}); err != nil {
		t.Fatalf("restore %s: %v", last, err)
	}
	waitEvents(t, ctx, path, id, 30*time.Second, func(evs []events.Event) bool {
		for _, e := range evs {
			if e.Epoch != nil && e.Time.After(restoredAt) && e.Intervention != nil && e.Intervention.Kind == intervene.Restore {
				return true
			}
		}
		return false
	})
	t.Logf("%d checkpoints under load (%d INCRs): %d epochs, %d overlapping a checkpoint call (%d of them unmarked, all clean, before the agent's dump began); %d marked (%d of them anomalous, as warnings); "+
		"unmarked anomalies: %d overlapping a checkpoint, %d in the %v after one, %d elsewhere",
		checkpoints, incrs.Load(), epochs, overlapping, unmarkedOverlap, marked, markedAnoms, unmarkedOver, unmarkedSettle, intervene.DefaultSettle, unmarkedElse)
	if unmarkedOver != 0 || unmarkedSettle != 0 {
		t.Errorf("%d unmarked anomalies overlap a checkpoint and %d its settle margin: want 0", unmarkedOver, unmarkedSettle)
	}
	if marked < checkpoints {
		t.Errorf("%d marked epochs for %d checkpoints: the mark does not happen", marked, checkpoints)
	}
}

// restartSensor restarts host's agent with extra sensor settings, and puts
// its configuration back, restarting it again, when the test ends.
func restartSensor(t *testing.T, ctx context.Context, inv *lab.Inventory, h lab.Host, extra map[string]any) {
	t.Helper()
	orig, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]any
	if err := yaml.Unmarshal(orig, &doc); err != nil {
		t.Fatal(err)
	}
	for k, v := range extra {
		doc["sensor"][k] = v
	}
	changed, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	restart := func(ctx context.Context, data []byte) error {
		if err := os.WriteFile(h.Config, data, 0o644); err != nil {
			return err
		}
		if err := lab.StopAgent(ctx, inv, h.Name); err != nil {
			return err
		}
		return lab.StartAgent(ctx, inv, h.Name, nil)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := restart(ctx, orig); err != nil {
			t.Errorf("put %s's agent back: %v", h.Name, err)
		}
	})
	if err := restart(ctx, changed); err != nil {
		t.Fatalf("restart %s's agent with %v: %v", h.Name, extra, err)
	}
}

// serviceIP is the nth address of the lab's service range, with the
// fabric's prefix length.
func serviceIP(t *testing.T, inv *lab.Inventory, n int) netip.Prefix {
	a := inv.ServiceRange.Addr()
	for range n {
		a = a.Next()
	}
	if !inv.ServiceRange.Contains(a) {
		t.Fatalf("%v is outside the service range %v", a, inv.ServiceRange)
	}
	return netip.PrefixFrom(a, inv.Subnet.Bits())
}

func macOf(ip netip.Addr) string {
	b := ip.As4()
	return fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// readEvents reads the sensor's event file (and its rotated backups) for
// the container's events.
func readEvents(t *testing.T, path, id string) []events.Event {
	t.Helper()
	var out []events.Event
	for _, p := range []string{path + ".2", path + ".1", path} {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e events.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				f.Close()
				t.Fatalf("%s: %q: %v", p, sc.Text(), err)
			}
			if e.Container != nil && e.Container.ID == id {
				out = append(out, e)
			}
		}
		f.Close()
	}
	return out
}

func waitEvents(t *testing.T, ctx context.Context, path, id string, d time.Duration, cond func([]events.Event) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if cond(readEvents(t, path, id)) {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: condition not met within %v", path, d)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
