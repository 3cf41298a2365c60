package plane

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	bolt "go.etcd.io/bbolt"
)

func testSpec(id string) migrate.Spec {
	return migrate.Spec{ID: id, Image: "escape.local/busybox:latest", Args: []string{"/bin/sh"}, IP: netip.MustParsePrefix("198.18.1.20/15"), MAC: "02:e5:00:00:00:01"}
}

func TestStoreSurvivesReopenAndRejectsCorruption(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := s.PutContainer(ContainerRecord{Spec: testSpec("db"), Host: "h1", Policy: DefaultPolicy(), Created: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutContainer(ContainerRecord{Spec: testSpec("BAD ID")}); err == nil {
		t.Fatal("bad id stored")
	}
	for i := 1; i <= 3; i++ {
		seq, err := s.NextCheckpointSeq("db")
		if err != nil || seq != uint64(i) {
			t.Fatalf("seq %d, %v", seq, err)
		}
		if err := s.AddCheckpoint(CheckpointRecord{Container: "db", Seq: seq, Image: migrate.CheckpointImage("db", seq, uint64(10*i)), Host: "h1", SafeEpoch: uint64(10 * i)}); err != nil {
			t.Fatal(err)
		}
	}
	// A container whose id is a prefix of another must not see its checkpoints.
	if err := s.AddCheckpoint(CheckpointRecord{Container: "dbx", Seq: 1}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := s.AddRollback("db", now.Add(time.Duration(i)*time.Minute), 10*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.UpdateHost("h2", func(h *HostRecord) { h.Compromised = true }); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMigration(context.Background(), migrate.Record{ID: "m1", Spec: testSpec("db"), Source: "h1", Dest: "h2", Done: migrate.StepPrepare}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = OpenStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Container("db")
	if err != nil || c.Host != "h1" || !c.Created.Equal(now) {
		t.Fatalf("container after reopen: %+v %v", c, err)
	}
	cks, err := s.Checkpoints("db")
	if err != nil || len(cks) != 3 || cks[2].SafeEpoch != 30 {
		t.Fatalf("checkpoints after reopen: %+v %v", cks, err)
	}
	if n, _ := s.Rollbacks("db", now.Add(90*time.Second)); n != 1 {
		t.Fatalf("rollbacks since +90s = %d, want 1", n)
	}
	if n, _ := s.AddRollback("db", now.Add(11*time.Minute), 10*time.Minute); n != 3 {
		t.Fatalf("rollbacks in window = %d, want 3 (the first expired)", n)
	}
	if h, _ := s.Host("h2"); !h.Compromised {
		t.Fatal("host flag lost")
	}
	recs, err := s.Migrations(context.Background())
	if err != nil || len(recs) != 1 || recs[0].Done != migrate.StepPrepare {
		t.Fatalf("journal after reopen: %+v %v", recs, err)
	}
	if _, err := s.Container("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing container: %v", err)
	}
	// A second opener is refused while the first holds it.
	if _, err := OpenStore(path, 200*time.Millisecond); err == nil {
		t.Fatal("second opener got the database")
	}
	// Garbage in a record is a clear error naming it, not a panic.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketContainers).Put([]byte("evil"), []byte("{not json")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Containers(); err == nil || !strings.Contains(err.Error(), `containers/"evil"`) {
		t.Fatalf("corrupt record: %v", err)
	}
	if err := s.DeleteContainer("db"); err != nil {
		t.Fatal(err)
	}
	if cks, _ := s.Checkpoints("db"); len(cks) != 0 {
		t.Fatal("checkpoints survive DeleteContainer")
	}
	if cks, _ := s.Checkpoints("dbx"); len(cks) != 1 {
		t.Fatal("DeleteContainer removed another container's checkpoints")
	}
	s.Close()
	// A file that is not a database is refused.
	bad := filepath.Join(t.TempDir(), "bad.db")
	if err := os.WriteFile(bad, []byte(strings.Repeat("garbage", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStore(bad, time.Second); err == nil {
		t.Fatal("garbage file opened as a store")
	}
}

func TestAuditContinuesAfterTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	a, err := OpenAudit(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := a.Log(AuditEvent{Kind: "action", Action: "checkpoint", Container: "db", Reasons: []string{"r"}}); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()
	// A crash mid-write leaves half a line.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"time":"2026-01-01T00:00:00Z","seq":4,"ki`)
	f.Close()
	a, err = OpenAudit(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Log(AuditEvent{Kind: "decision", Container: "db", Decision: "rollback"}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	evs, err := ReadAudit(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 || evs[3].Seq != 4 || evs[3].Decision != "rollback" {
		t.Fatalf("events after torn line: %+v", evs)
	}
	// A corrupt complete line is refused, not silently skipped.
	os.WriteFile(path, []byte("{\"seq\":1}\nnot json\n"), 0o600)
	if _, err := OpenAudit(path); err == nil {
		t.Fatal("corrupt audit log accepted")
	}
}
