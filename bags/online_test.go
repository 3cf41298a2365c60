package bags

import (
	"errors"
	"testing"
	"time"
)

// guardFixture is a profile trained on one loop, an epoch of a new
// behaviour (the same calls plus one) it does not know, and a clock.
func guardFixture(t *testing.T) (p *Profile, normal, novel Epoch, start time.Time) {
	t.Helper()
	p = NewProfile(WithWindow(3), WithSequence(true))
	loop := []uint16{1, 2, 3, 4, 5}
	for _, e := range pushAll(t, 3, 50, repeat(loop, 40)) {
		if _, err := p.Train(e); err != nil {
			t.Fatal(err)
		}
	}
	normal = pushAll(t, 3, 50, repeat(loop, 20))[1]
	novel = pushAll(t, 3, 50, repeat([]uint16{1, 2, 3, 4, 5, 6}, 10))[1]
	if p.Detect(novel).NewBags == 0 {
		t.Fatal("fixture: the novel epoch has no unseen bag")
	}
	return p, normal, novel, time.Unix(1e9, 0)
}

func mustGuard(t *testing.T, cfg OnlineConfig) *Guard {
	t.Helper()
	g, err := NewGuard(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// An offered epoch teaches only once its quarantine is over, and then
// exactly once.
func TestGuardTeachesAfterTheQuarantine(t *testing.T) {
	p, _, novel, t0 := guardFixture(t)
	g := mustGuard(t, OnlineConfig{Quarantine: time.Minute, Rate: 60})
	if !g.Offer(novel, t0) {
		t.Fatal("a clean epoch with a full bucket was refused")
	}
	for _, at := range []time.Duration{0, 30 * time.Second, time.Minute - time.Nanosecond} {
		if n, err := g.Release(t0.Add(at), p); err != nil || n != 0 {
			t.Fatalf("release %v after the offer: taught %d, %v; want nothing before the quarantine ends", at, n, err)
		}
	}
	if p.Detect(novel).NewBags == 0 {
		t.Fatal("the profile learned the epoch while it was in quarantine")
	}
	n, err := g.Release(t0.Add(time.Minute), p)
	if err != nil || n != 1 {
		t.Fatalf("release at the end of the quarantine: taught %d, %v; want 1", n, err)
	}
	if v := p.Detect(novel); v.NewBags != 0 {
		t.Errorf("after teaching, the epoch still has %d unseen bags", v.NewBags)
	}
	if n, _ := g.Release(t0.Add(time.Hour), p); n != 0 {
		t.Errorf("a second release taught %d epochs again", n)
	}
	st := g.Stats()
	if st.Taught != 1 || st.TaughtBags == 0 || st.Quarantined != 0 || st.Admitted != 1 {
		t.Errorf("stats %+v", st)
	}
	if got := p.Stats().LearnedOnline; got != st.TaughtBags {
		t.Errorf("profile counts %d bags learned online, the guard %d", got, st.TaughtBags)
	}
}

// An anomaly voids every epoch still in quarantine, refuses those of the
// next quarantine, and no more: one offered later teaches as usual.
func TestGuardAnomalyVoidsTheQuarantine(t *testing.T) {
	p, normal, novel, t0 := guardFixture(t)
	g := mustGuard(t, OnlineConfig{Quarantine: time.Minute, Rate: 600})
	g.Offer(novel, t0)
	g.Offer(normal, t0.Add(time.Second))
	if dropped := g.Anomaly(t0.Add(2 * time.Second)); dropped != 2 {
		t.Fatalf("anomaly dropped %d epochs, want the 2 in quarantine", dropped)
	}
	if n, _ := g.Release(t0.Add(time.Hour), p); n != 0 {
		t.Fatalf("voided epochs taught %d", n)
	}
	if p.Detect(novel).NewBags == 0 {
		t.Fatal("an epoch followed by an anomaly was learned")
	}
	// The anomaly's quiet tail, within a quarantine after it, is refused;
	// an epoch a quarantine later teaches as usual.
	if g.Offer(novel, t0.Add(time.Minute+time.Second)) {
		t.Error("an epoch 59 s after the anomaly entered quarantine")
	}
	after := t0.Add(time.Minute + 2*time.Second)
	if !g.Offer(novel, after) {
		t.Fatal("an epoch a quarantine after the anomaly was refused")
	}
	if n, _ := g.Release(after.Add(time.Minute), p); n != 1 || p.Detect(novel).NewBags != 0 {
		t.Fatalf("an epoch offered after the anomaly: taught %d, unseen bags %d", n, p.Detect(novel).NewBags)
	}
	if st := g.Stats(); st.Voided != 2 || st.Anomalies != 1 || st.Taught != 1 || st.Cooling != 1 {
		t.Errorf("stats %+v", st)
	}
}

// The token bucket admits Burst epochs at once, then Rate a minute.
func TestGuardRateLimit(t *testing.T) {
	_, normal, _, t0 := guardFixture(t)
	g := mustGuard(t, OnlineConfig{Quarantine: time.Hour, Rate: 2, Burst: 3, Queue: 100})
	admitted := 0
	for i := range 10 * 60 { // one offer a second for 10 minutes
		if g.Offer(normal, t0.Add(time.Duration(i)*time.Second)) {
			admitted++
		}
	}
	// 3 at once, then 2 a minute over the 599 s that follow: ⌊3 + 19.97⌋.
	if admitted != 22 {
		t.Errorf("admitted %d of 600 offers over 10 min at 2/min, burst 3; want 22", admitted)
	}
	if st := g.Stats(); st.Offered != 600 || st.Admitted != uint64(admitted) || st.Limited != uint64(600-admitted) {
		t.Errorf("stats %+v", st)
	}
	// A clock that steps back refills nothing.
	g2 := mustGuard(t, OnlineConfig{Rate: 1, Burst: 1})
	g2.Offer(normal, t0)
	if g2.Offer(normal, t0.Add(-time.Hour)) || g2.Offer(normal, t0) {
		t.Error("a token appeared without time passing")
	}
}

// A full quarantine pushes out its oldest epoch, counts it and never
// teaches it; memory stays at Queue entries.
func TestGuardQueueIsBounded(t *testing.T) {
	p, normal, novel, t0 := guardFixture(t)
	g := mustGuard(t, OnlineConfig{Quarantine: time.Minute, Rate: 1e6, Burst: 1000, Queue: 4})
	g.Offer(novel, t0) // the oldest: pushed out by the flood below
	for i := 1; i <= 10; i++ {
		g.Offer(normal, t0.Add(time.Duration(i)*time.Millisecond))
	}
	st := g.Stats()
	if st.Quarantined != 4 || st.Overflow != 7 || len(g.ring) != 4 {
		t.Fatalf("after 11 offers into a queue of 4: %+v, ring %d", st, len(g.ring))
	}
	n, err := g.Release(t0.Add(time.Hour), p)
	if err != nil || n != 4 {
		t.Fatalf("released %d, %v; want the 4 kept", n, err)
	}
	if p.Detect(novel).NewBags == 0 {
		t.Error("the epoch pushed out of the quarantine was taught")
	}
}

// Offer keeps a copy: the caller's buffers are reused by the collector.
// Degraded and empty epochs are refused.
func TestGuardCopiesAndRefusesDegraded(t *testing.T) {
	p, _, novel, t0 := guardFixture(t)
	g := mustGuard(t, OnlineConfig{Quarantine: time.Second})
	buf := Epoch{Windows: novel.Windows, Bags: append([]BagCount(nil), novel.Bags...), Order: append([]uint32(nil), novel.Order...)}
	g.Offer(buf, t0)
	for i := range buf.Bags {
		buf.Bags[i] = bc(buf.Bags[i].Count, 1, 1, 1)
	}
	if n, _ := g.Release(t0.Add(time.Second), p); n != 1 || p.Detect(novel).NewBags != 0 {
		t.Fatalf("the guard taught the caller's overwritten buffer, not the epoch offered (taught %d)", n)
	}
	deg := novel
	deg.Degraded = true
	if g.Offer(deg, t0) || g.Offer(Epoch{}, t0) {
		t.Error("a degraded or empty epoch entered quarantine")
	}
}

func TestOnlineConfigValidate(t *testing.T) {
	for _, c := range []OnlineConfig{{Quarantine: -1}, {Rate: -1}, {Burst: -2}, {Queue: MaxQuarantineQueue + 1}, {Queue: -1}} {
		if _, err := NewGuard(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", c, err)
		}
	}
	g := mustGuard(t, OnlineConfig{})
	if c := g.Config(); c.Quarantine != DefaultQuarantine || c.Rate != DefaultTeachRate || c.Burst != 6 || c.Queue != DefaultQuarantineQueue {
		t.Errorf("defaults %+v", c)
	}
}

// Offering (the teaching path's only work on the collector's epoch) does
// not allocate once its entries have grown; scoring is unchanged.
func TestGuardOfferDoesNotAllocate(t *testing.T) {
	_, normal, novel, t0 := guardFixture(t)
	g := mustGuard(t, OnlineConfig{Rate: 1e9, Burst: 1 << 20, Queue: 8})
	for i := range 16 {
		g.Offer(novel, t0.Add(time.Duration(i)))
	}
	i := 16
	if a := testing.AllocsPerRun(200, func() { g.Offer(normal, t0.Add(time.Duration(i))); i++ }); a != 0 {
		t.Errorf("%v allocs per offer", a)
	}
}

// BenchmarkOnlineEpoch is the daemon's per-epoch work with online learning
// on, for the default lm rule: score, then the guard (offer, release,
// teaching what is due: one epoch in 10, as at the default rate against 1
// epoch/s), timed apart in the same loop so that both see the same load.
// Report: score-ns/epoch, guard-ns/epoch; B/op and allocs/op are the
// teaching's amortised growth of the profile.
func BenchmarkOnlineEpoch(b *testing.B) {
	p, test := scoreBench(b)
	s, _ := NewScorer(RuleLM, p)
	g, _ := NewGuard(OnlineConfig{Quarantine: time.Second, Rate: 6, Burst: 1})
	t0 := time.Unix(1e9, 0)
	s.Score(test[0])
	var ts, tg time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		e := test[i%len(test)]
		c0 := time.Now()
		v := s.Score(e)
		c1 := time.Now()
		if v.Anomalous {
			g.Anomaly(now)
		} else {
			g.Offer(e, now)
		}
		if _, err := g.Release(now, p); err != nil {
			b.Fatal(err)
		}
		tg += time.Since(c1)
		ts += c1.Sub(c0)
	}
	b.ReportMetric(float64(ts.Nanoseconds())/float64(b.N), "score-ns/epoch")
	b.ReportMetric(float64(tg.Nanoseconds())/float64(b.N), "guard-ns/epoch")
}
