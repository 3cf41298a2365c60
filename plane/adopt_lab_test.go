package plane_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// TestPlaneAdoptsUserContainers: containers a user started with ctr, in
// containerd's default namespace, labelled escape.mtd/protect=true, are
// taken under protection without any ESCAPE deploy: one with its own
// address on the bridge is checkpointed, rolled back and migrated with
// its address, MAC and an established connection; one with a host bind
// mount is refused the move and rolled back in place; removing a label
// or the container ends protection and never touches the container.
func TestPlaneAdoptsUserContainers(t *testing.T) {
	inv := labtest.Ensure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	for _, h := range []string{"h1", "h2"} {
		labtest.AgentSettings(t, inv, h, func(a map[string]any) {
			a["adopt"] = map[string]any{"namespaces": []string{userNamespace}}
		})
	}
	// The user's image, in the user's namespace on h1 (h2 gets it from
	// the migration: its agent copies it in).
	ref := lab.ImageRef("redis")
	const archive = "/tmp/escape-adopt-image.tar" // the host's own /tmp
	inHost(ctx, t, inv, "h1", "sh", "-c", fmt.Sprintf("%s -n %s images export %s %s && %s -n %s images import %s; rc=$?; rm -f %s; exit $rc",
		ctrBin, inv.Namespace, archive, ref, ctrBin, userNamespace, archive, archive))

	bits := inv.Subnet.Bits()
	dbIP := netip.PrefixFrom(netip.MustParseAddr("198.18.1.200"), bits)
	bindIP := netip.PrefixFrom(netip.MustParseAddr("198.18.1.201"), bits)
	const dbMAC, bindMAC = "02:e5:c6:12:01:c8", "02:e5:c6:12:01:c9"
	const db, bound = "adopt-db", "adopt-bound"
	dbNetns, bindNetns := inv.NetnsPrefix+"user-db", inv.NetnsPrefix+"user-bound"
	userNetns(ctx, t, inv, "h1", dbNetns, "vadb", dbIP, dbMAC)
	userNetns(ctx, t, inv, "h1", bindNetns, "vabd", bindIP, bindMAC)
	ctrRun(ctx, t, inv, "h1", db, "--label", migrate.AdoptLabel+"=true", "--label", "escape.mtd/clean-epochs=1",
		"--with-ns", "network:/run/netns/"+dbNetns)
	ctrRun(ctx, t, inv, "h1", bound, "--label", migrate.AdoptLabel+"=true", "--label", "escape.mtd/clean-epochs=1",
		"--with-ns", "network:/run/netns/"+bindNetns, "--mount", "type=bind,src=/tmp,dst=/hostdata,options=rbind:ro")

	// On the host's network: it shares the host's address.
	const hostnet = "adopt-hostnet"
	ctrRunCmd(ctx, t, inv, "h1", hostnet, []string{"--label", migrate.AdoptLabel + "=true", "--label", "escape.mtd/clean-epochs=1", "--net-host"},
		"/bin/sh", "-c", "while :; do sleep 1; done")

	cfg := labConfig(t, inv, plane.PolicyOverrides{RollbackLimit: ptr(10), Retain: ptr(2)})
	cfg.Adopt.Off = true // rounds are run by the test, one at a time
	p := openLabPlane(t, cfg, inv)

	// 1. Adopted, both; the bound one is refused the move, with the reason.
	rep := p.AdoptRound(ctx)
	t.Logf("round 1: %+v", rep)
	if !slices.Contains(rep.Adopted, db) || !slices.Contains(rep.Adopted, bound) || !slices.Contains(rep.Adopted, hostnet) {
		t.Fatalf("adoption round: %+v, want %s, %s and %s adopted", rep, db, bound, hostnet)
	}
	hrec, err := p.Store().Container(hostnet)
	if err != nil || hrec.Spec.Adopted.Movable || !hrec.Spec.Adopted.Rollback || hrec.Spec.IP.IsValid() ||
		!strings.Contains(strings.Join(hrec.Spec.Adopted.Refusals, ";"), "shares the host's network namespace") {
		t.Fatalf("record of %s: %+v %v", hostnet, hrec.Spec.Adopted, err)
	}
	rec, err := p.Store().Container(db)
	if err != nil || !rec.Adopted || rec.Host != "h1" || rec.Spec.Adopted == nil || !rec.Spec.Adopted.Movable {
		a := *rec.Spec.Adopted
		a.OCISpec = nil
		t.Fatalf("record of %s: %+v %v; adopted: %+v", db, rec, err, a)
	}
	if rec.Spec.IP != dbIP || rec.Spec.MAC != dbMAC || rec.Spec.Adopted.Namespace != userNamespace || rec.Policy.CleanEpochs != 1 {
		t.Fatalf("record of %s: ip %v mac %s namespace %s clean epochs %d", db, rec.Spec.IP, rec.Spec.MAC, rec.Spec.Adopted.Namespace, rec.Policy.CleanEpochs)
	}
	brec, err := p.Store().Container(bound)
	if err != nil || brec.Spec.Adopted == nil || brec.Spec.Adopted.Movable || !brec.Spec.Adopted.Rollback ||
		!strings.Contains(strings.Join(brec.Spec.Adopted.Refusals, ";"), "bind mount of host path /tmp at /hostdata") {
		t.Fatalf("record of %s: %+v %v", bound, brec.Spec.Adopted, err)
	}
	if !auditHas(t, auditPath(p), func(e plane.AuditEvent) bool {
		return e.Action == "adopt" && e.Container == bound && e.Outcome == "ok" && strings.Contains(strings.Join(e.Reasons, ";"), "bind mount")
	}) {
		t.Error("no audited adoption of the bound container with its refusal")
	}
	if again := p.AdoptRound(ctx); len(again.Adopted)+len(again.Released) != 0 {
		t.Fatalf("second round changed something: %+v", again)
	}

	// 2. A safe checkpoint and a rollback in place, on the user's own
	// container object.
	rc := labtest.DialRedis(t, inv, dbIP.Addr(), 15*time.Second)
	if n := incr(t, rc); n != 1 {
		t.Fatalf("first INCR = %d", n)
	}
	if _, err := p.HandleReport(ctx, plane.Report{Container: db, Epoch: 1, Threshold: 3}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Checkpoint(ctx, db, false, "test"); err != nil {
		t.Fatalf("checkpoint of the adopted container: %v", err)
	}
	for want := int64(2); want <= 3; want++ {
		if n := incr(t, rc); n != want {
			t.Fatalf("INCR = %d, want %d", n, want)
		}
	}
	res, err := p.Rollback(ctx, db, []string{"test"}, "test")
	if err != nil {
		t.Fatalf("rollback of the adopted container: %v", err)
	}
	t.Logf("rollback: downtime %v", time.Duration(res.Downtime))
	rc = labtest.DialRedis(t, inv, dbIP.Addr(), 15*time.Second)
	if n := incr(t, rc); n != 2 {
		t.Fatalf("after the rollback INCR = %d, want 2 (the checkpoint's 1, plus one)", n)
	}
	if st := userTask(ctx, t, inv, "h1", db); st != "RUNNING" {
		t.Fatalf("the user's container on h1 after the rollback: task %q, want RUNNING", st)
	}

	// 3. Migration to h2: the address, the MAC and an established
	// connection come along, announced; the source's copy goes.
	h1, _ := inv.Host("h1")
	watchers := []*garpWatch{watchGARP(t, "client", inv.Client.Netns, inv.Client.Link, dbIP.Addr()),
		watchGARP(t, "h1", h1.Netns, h1.Bridge, dbIP.Addr())}
	mres, err := p.Migrate(ctx, db, "h2", []string{"test"}, "test")
	if err != nil || mres.Outcome != migrate.Migrated {
		t.Fatalf("migration of the adopted container: %+v %v", mres, err)
	}
	t.Logf("migration: frozen %v", mres.Frozen)
	if n := incr(t, rc); n != 3 {
		t.Fatalf("INCR over the connection established before the migration = %d, want 3", n)
	}
	time.Sleep(2500 * time.Millisecond) // the announcement's later rounds
	for _, w := range watchers {
		w.close()
		macs := w.macs()
		if len(macs) == 0 || slices.IndexFunc(macs, func(m string) bool { return m != dbMAC }) >= 0 {
			t.Errorf("gratuitous ARP for %v seen from %s: %v, want at least one, all from %s", dbIP.Addr(), w.where, macs, dbMAC)
		}
	}
	if rec, _ = p.Store().Container(db); rec.Host != "h2" {
		t.Fatalf("placement after the migration: %s", rec.Host)
	}
	if st := status(ctx, t, p, "h2", db); st.Status != migrate.Running || !slices.Contains(st.Addresses, dbIP) {
		t.Fatalf("on h2: %+v", st)
	}
	link := inHost(ctx, t, inv, "h2", "ip", "-n", "escape-ct-h2-"+db, "-o", "link", "show", "eth0")
	if !strings.Contains(link, dbMAC) {
		t.Fatalf("h2's copy's interface: %s, want MAC %s", link, dbMAC)
	}
	if userContainer(ctx, t, inv, "h1", db) {
		t.Fatal("the source's copy is still on h1 after the migration")
	}
	if st := userTask(ctx, t, inv, "h2", db); st != "RUNNING" {
		t.Fatalf("the container on h2 in the user's namespace: task %q, want RUNNING", st)
	}
	labels := inHost(ctx, t, inv, "h2", ctrBin, "-n", userNamespace, "container", "info", db)
	if !strings.Contains(labels, `"`+migrate.AdoptLabel+`": "true"`) {
		t.Fatalf("h2's copy lost its label:\n%s", labels)
	}
	if rep := p.AdoptRound(ctx); len(rep.Adopted)+len(rep.Released) != 0 {
		t.Fatalf("the round after the migration changed something: %+v", rep)
	}

	// 4. The bound container: no migration, a rollback in place.
	if _, err := p.Migrate(ctx, bound, "h2", []string{"test"}, "test"); err == nil || !strings.Contains(err.Error(), "bind mount") {
		t.Fatalf("migration of the bound container: %v, want a refusal naming the bind mount", err)
	}
	brc := labtest.DialRedis(t, inv, bindIP.Addr(), 15*time.Second)
	incr(t, brc)
	if _, err := p.HandleReport(ctx, plane.Report{Container: bound, Epoch: 1, Threshold: 3}, "test"); err != nil {
		t.Fatal(err)
	}
	bck, err := p.Checkpoint(ctx, bound, false, "test")
	if err != nil {
		t.Fatalf("checkpoint of the bound container: %v", err)
	}
	incr(t, brc)
	d, err := p.HandleReport(ctx, plane.Report{Container: bound, Epoch: 2, Anomalous: true, Mismatches: 5, Threshold: 3}, "test")
	if err != nil || d.Action != "rollback" || d.Outcome != "ok" || d.Host != "h1" {
		t.Fatalf("anomaly in the bound container: %+v %v", d, err)
	}
	if n := incr(t, labtest.DialRedis(t, inv, bindIP.Addr(), 15*time.Second)); n != 2 {
		t.Fatalf("after rolling the bound container back INCR = %d, want 2", n)
	}

	// The host-network one too, in place: no network step touches the
	// host's namespace.
	if _, err := p.HandleReport(ctx, plane.Report{Container: hostnet, Epoch: 1, Threshold: 3}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Checkpoint(ctx, hostnet, false, "test"); err != nil {
		t.Fatalf("checkpoint of the host-network container: %v", err)
	}
	if _, err := p.Rollback(ctx, hostnet, []string{"test"}, "test"); err != nil {
		t.Fatalf("rollback of the host-network container: %v", err)
	}
	if st := userTask(ctx, t, inv, "h1", hostnet); st != "RUNNING" {
		t.Fatalf("the host-network container after its rollback: task %q", st)
	}
	if _, err := p.Migrate(ctx, hostnet, "h2", []string{"test"}, "test"); err == nil || !strings.Contains(err.Error(), "host's network") {
		t.Fatalf("migration of the host-network container: %v", err)
	}

	// 5. Its label removed: released, its checkpoint dropped, the
	// container left running.
	inHost(ctx, t, inv, "h1", ctrBin, "-n", userNamespace, "container", "label", bound, migrate.AdoptLabel+"=")
	rep = p.AdoptRound(ctx)
	if !slices.Contains(rep.Released, bound) {
		t.Fatalf("round after the label's removal: %+v", rep)
	}
	if _, err := p.Store().Container(bound); err == nil {
		t.Fatal("the released container is still protected")
	}
	hh1, _ := p.Host("h1")
	if _, err := hh1.VerifyImage(ctx, bck.Image); err == nil {
		t.Fatalf("the released container's checkpoint %s is still on h1", bck.Image)
	}
	if st := userTask(ctx, t, inv, "h1", bound); st != "RUNNING" {
		t.Fatalf("the released container: task %q, want RUNNING", st)
	}
	if !auditHas(t, auditPath(p), func(e plane.AuditEvent) bool { return e.Action == "release" && e.Container == bound }) {
		t.Error("no audited release")
	}

	// 6. The user deletes the migrated container: released.
	inHost(ctx, t, inv, "h2", ctrBin, "-n", userNamespace, "task", "kill", "-s", "SIGKILL", db)
	for i := 0; userTask(ctx, t, inv, "h2", db) == "RUNNING"; i++ {
		if i > 50 {
			t.Fatal("the user's SIGKILL did not stop the container")
		}
		time.Sleep(100 * time.Millisecond)
	}
	inHost(ctx, t, inv, "h2", ctrBin, "-n", userNamespace, "task", "rm", db)
	inHost(ctx, t, inv, "h2", ctrBin, "-n", userNamespace, "container", "rm", db)
	if rep := p.AdoptRound(ctx); !slices.Contains(rep.Released, db) {
		t.Fatalf("round after the user deleted %s: %+v", db, rep)
	}
	// The network h2's agent made for the copy goes with it.
	if ns := inHost(ctx, t, inv, "h2", "ip", "netns"); strings.Contains(ns, "escape-ct-h2-"+db) {
		t.Fatalf("h2 keeps the network of the deleted container: %s", ns)
	}

	// 7. An operator's Remove of an adopted container releases it and
	// leaves it running; it is not adopted again while it keeps its label.
	inHost(ctx, t, inv, "h1", ctrBin, "-n", userNamespace, "container", "label", bound, migrate.AdoptLabel+"=true")
	if rep := p.AdoptRound(ctx); !slices.Contains(rep.Adopted, bound) {
		t.Fatalf("round after the label came back: %+v", rep)
	}
	if err := p.Remove(ctx, bound, "test"); err != nil {
		t.Fatal(err)
	}
	if st := userTask(ctx, t, inv, "h1", bound); st != "RUNNING" {
		t.Fatalf("after the operator's release: task %q, want RUNNING", st)
	}
	if rep := p.AdoptRound(ctx); slices.Contains(rep.Adopted, bound) {
		t.Fatalf("a released container was adopted again while it kept its label: %+v", rep)
	}
}
