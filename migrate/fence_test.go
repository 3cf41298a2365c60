package migrate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fenceStub is a host whose Remove, DropImage and Lease answer err, noting
// when each call came and the deadline it carried.
type fenceStub struct {
	Host
	err error

	mu        sync.Mutex
	at        []time.Time
	deadlines []time.Time
}

func (s *fenceStub) Name() string { return "h" }

func (s *fenceStub) note(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dl, _ := ctx.Deadline()
	s.at, s.deadlines = append(s.at, time.Now()), append(s.deadlines, dl)
	return s.err
}

func (s *fenceStub) Remove(ctx context.Context, id string) (StepResult, error) {
	return StepResult{Did: "removed"}, s.note(ctx)
}

func (s *fenceStub) DropImage(ctx context.Context, image ImageName) (StepResult, error) {
	return StepResult{Did: "dropped"}, s.note(ctx)
}

func (s *fenceStub) VerifyImage(ctx context.Context, image ImageName) (int64, error) {
	return 0, s.note(ctx)
}

func (s *fenceStub) Lease(ctx context.Context, id string, l Lease) (LeaseState, error) {
	return LeaseState{}, s.note(ctx)
}

type fenceJournal struct{ deleted []string }

func (j *fenceJournal) PutMigration(context.Context, Record) error   { return nil }
func (j *fenceJournal) Migrations(context.Context) ([]Record, error) { return nil, nil }
func (j *fenceJournal) DeleteMigration(_ context.Context, c string) error {
	j.deleted = append(j.deleted, c)
	return nil
}

func newFenceMigrator(t *testing.T, h Host, opts ...Option) *Migrator {
	t.Helper()
	m, err := New(HostMap{"h": h, "g": h}, &fenceJournal{}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFenceNotesUnansweredCalls(t *testing.T) {
	stub := &fenceStub{err: fmt.Errorf("no answer: %w", ErrUnreachable)}
	m := newFenceMigrator(t, stub, WithStepTimeout(time.Minute))
	h, err := m.host("h")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dl, _ := ctx.Deadline()
	if _, err := h.Remove(ctx, "c"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("remove: %v", err)
	}
	if got := m.fences.of("h"); !got.Equal(dl) {
		t.Errorf("after an unanswered call: fence %v, want its deadline %v", got, dl)
	}
	// A grant is fenced by its NotAfter when that comes first; an earlier
	// deadline never moves the fence back.
	if _, err := h.Lease(context.Background(), "c", Lease{NotAfter: time.Now().Add(time.Second)}); err == nil {
		t.Fatal("lease answered")
	}
	if got := m.fences.of("h"); !got.Equal(dl) {
		t.Errorf("fence %v moved, want %v", got, dl)
	}
	// A call without a deadline is bounded by the step timeout; one that
	// runs no CRIU and moves no image, by quickCall.
	before := time.Now()
	_, _ = h.DropImage(context.Background(), "i")
	if d := stub.deadlines[len(stub.deadlines)-1]; d.Before(before.Add(quickCall)) || d.After(time.Now().Add(quickCall)) {
		t.Errorf("unbounded quick call got deadline %v, want about now+%v", d, quickCall)
	}
	before = time.Now()
	_, _ = h.VerifyImage(context.Background(), "i")
	if d := stub.deadlines[len(stub.deadlines)-1]; d.Before(before.Add(time.Minute)) || d.After(time.Now().Add(time.Minute)) {
		t.Errorf("unbounded call got deadline %v, want about now+1m", d)
	}
	if got := m.fences.of("h"); got.Before(before.Add(time.Minute)) {
		t.Errorf("fence %v, want the bounded call's deadline", got)
	}

	// A refusal is an answer: nothing in flight.
	refused := &fenceStub{err: fmt.Errorf("late: %w", ErrRequestExpired)}
	m2 := newFenceMigrator(t, refused)
	h2, _ := m2.host("h")
	if _, err := h2.Remove(ctx, "c"); !errors.Is(err, ErrRequestExpired) {
		t.Fatalf("remove: %v", err)
	}
	if got := m2.fences.of("h"); !got.IsZero() {
		t.Errorf("a refused call set the fence to %v", got)
	}
}

func TestFenceSettleWaitsDeadlinePlusSkew(t *testing.T) {
	stub := &fenceStub{err: ErrUnreachable}
	m := newFenceMigrator(t, stub, WithClockSkew(40*time.Millisecond))
	h, _ := m.host("h")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	defer cancel()
	dl, _ := ctx.Deadline()
	_, _ = h.Remove(ctx, "c")
	m.settle(context.Background(), h)
	if now := time.Now(); now.Before(dl.Add(40 * time.Millisecond)) {
		t.Errorf("settle returned %v before the deadline plus the skew", dl.Add(40*time.Millisecond).Sub(now))
	}
	// Settled: no more wait.
	start := time.Now()
	m.settle(context.Background(), h)
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Errorf("second settle waited %v", d)
	}
}

// TestFenceRecoverWaitsForTheLastPlane: a recovering plane acts only once
// every request the record's last writer may have left in flight has
// landed or can no longer land.
func TestFenceRecoverWaitsForTheLastPlane(t *testing.T) {
	stub := &fenceStub{}
	const timeout, skew = 150 * time.Millisecond, 50 * time.Millisecond
	m := newFenceMigrator(t, stub, WithStepTimeout(timeout), WithClockSkew(skew))
	updated := time.Now()
	rec := Record{ID: "m1", Spec: Spec{ID: "c"}, Source: "g", Dest: "h", Image: "migrations/c/m1", Phase: PhaseCleanupDest, Updated: updated}
	res, err := m.RecoverOne(context.Background(), rec)
	if err != nil || res.Outcome != Reverted {
		t.Fatalf("recover: %v, %v", res.Outcome, err)
	}
	if len(stub.at) == 0 {
		t.Fatal("no call")
	}
	if first := stub.at[0]; first.Before(updated.Add(timeout + skew)) {
		t.Errorf("first call %v after the record's update, want at least %v", first.Sub(updated), timeout+skew)
	}
}
