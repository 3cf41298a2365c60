package model

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func randomInventory(r *rand.Rand, n int) []HostInfo {
	hs := make([]HostInfo, n)
	for i := range hs {
		hs[i] = HostInfo{
			Name: fmt.Sprintf("host-%02d", i),
			Labels: map[string]string{
				"datacenter": fmt.Sprint("dc", r.IntN(3)), "network": fmt.Sprint("net", r.IntN(4)),
				"kernel": fmt.Sprint("6.", r.IntN(3)), "runtime": fmt.Sprint("rt", r.IntN(2)),
			},
			Compromised: r.IntN(5) == 0,
		}
		for range r.IntN(3) {
			hs[i].Anomalies = append(hs[i].Anomalies, now.Add(-time.Duration(r.IntN(90))*time.Minute))
		}
	}
	return hs
}

func TestRankInvariants(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 300 {
		hs := randomInventory(r, 2+r.IntN(30))
		src := hs[r.IntN(len(hs))].Name
		got, err := RankDestinations(src, hs, now)
		if errors.Is(err, ErrNoEligibleHost) {
			for _, h := range hs {
				if h.Name != src && !h.Compromised {
					t.Fatalf("iter %d: ErrNoEligibleHost but %s is eligible", iter, h.Name)
				}
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		flagged := map[string]bool{}
		for _, h := range hs {
			flagged[h.Name] = h.Compromised
		}
		for i, g := range got {
			if g.Host == src || flagged[g.Host] {
				t.Fatalf("iter %d: ranked source or flagged host %s", iter, g.Host)
			}
			if len(g.Reasons) == 0 || g.Score < 0 || g.Score > 1 {
				t.Fatalf("iter %d: bad ranking %+v", iter, g)
			}
			if i > 0 && (got[i-1].Score < g.Score || (got[i-1].Score == g.Score && got[i-1].Host > g.Host)) {
				t.Fatalf("iter %d: not sorted by score then name at %d", iter, i)
			}
		}
		// Any input order gives the same answer.
		shuf := append([]HostInfo(nil), hs...)
		r.Shuffle(len(shuf), func(i, j int) { shuf[i], shuf[j] = shuf[j], shuf[i] })
		again, err := RankDestinations(src, shuf, now)
		if err != nil || !reflect.DeepEqual(got, again) {
			t.Fatalf("iter %d: result depends on input order", iter)
		}
	}
}

func TestRankTiesByName(t *testing.T) {
	lab := map[string]string{"datacenter": "a", "network": "n"}
	hs := []HostInfo{{Name: "src", Labels: map[string]string{"datacenter": "z"}}, {Name: "c", Labels: lab}, {Name: "a", Labels: lab}, {Name: "b", Labels: lab}}
	got, err := RankDestinations("src", hs, now)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range got {
		names = append(names, g.Host)
	}
	if strings.Join(names, ",") != "a,b,c" || got[0].Score != got[2].Score {
		t.Errorf("ties: got %v", got)
	}
}

func TestRankPrefersSafeAndHeterogeneous(t *testing.T) {
	hs := []HostInfo{
		{Name: "src", Labels: map[string]string{"datacenter": "dc1", "network": "n1", "kernel": "5.15"}},
		{Name: "bad", Labels: map[string]string{"datacenter": "dc2", "network": "n2", "kernel": "6.1"}, Compromised: true},
		{Name: "near-bad", Labels: map[string]string{"datacenter": "dc2", "network": "n3", "kernel": "6.1"}},
		{Name: "far", Labels: map[string]string{"datacenter": "dc3", "network": "n4", "kernel": "6.1"}},
		{Name: "same", Labels: map[string]string{"datacenter": "dc4", "network": "n5", "kernel": "5.15"}},
		{Name: "noisy", Labels: map[string]string{"datacenter": "dc5", "network": "n6", "kernel": "6.1"}, Anomalies: []time.Time{now.Add(-time.Minute)}},
		{Name: "old-noise", Labels: map[string]string{"datacenter": "dc6", "network": "n7", "kernel": "6.1"}, Anomalies: []time.Time{now.Add(-2 * time.Hour)}},
	}
	got, err := RankDestinations("src", hs, now)
	if err != nil {
		t.Fatal(err)
	}
	score := map[string]Ranking{}
	for _, g := range got {
		score[g.Host] = g
	}
	if _, ok := score["bad"]; ok {
		t.Fatal("compromised host ranked")
	}
	if !(score["far"].Score > score["near-bad"].Score) {
		t.Errorf("neighbour of compromised host not penalised: far %v near-bad %v", score["far"].Score, score["near-bad"].Score)
	}
	if !(score["far"].Score > score["same"].Score) {
		t.Errorf("heterogeneity ignored: far %v same %v", score["far"].Score, score["same"].Score)
	}
	if !(score["old-noise"].Score > score["noisy"].Score) || score["old-noise"].Score != score["far"].Score {
		t.Errorf("anomaly window/decay wrong: noisy %v old %v far %v", score["noisy"].Score, score["old-noise"].Score, score["far"].Score)
	}
	if !strings.Contains(strings.Join(score["near-bad"].Reasons, ";"), "neighbour bad is compromised") {
		t.Errorf("reasons miss the compromised neighbour: %q", score["near-bad"].Reasons)
	}
}

func TestRankErrors(t *testing.T) {
	if _, err := RankDestinations("a", nil, now); !errors.Is(err, ErrNoEligibleHost) {
		t.Errorf("empty: %v", err)
	}
	hs := []HostInfo{{Name: "a"}, {Name: "b", Compromised: true}}
	if _, err := RankDestinations("a", hs, now); !errors.Is(err, ErrNoEligibleHost) {
		t.Errorf("only source and flagged: %v", err)
	}
	if _, err := RankDestinations("a", []HostInfo{{Name: "a"}, {Name: "a"}}, now); !errors.Is(err, ErrInvalidParam) {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := RankDestinations("a", []HostInfo{{Name: "b"}}, now, WithWeights(-1, 1)); !errors.Is(err, ErrInvalidParam) {
		t.Errorf("negative weight: %v", err)
	}
	// A source missing from the inventory is allowed: every host is eligible.
	got, err := RankDestinations("gone", []HostInfo{{Name: "b", Labels: map[string]string{"kernel": "x"}}}, now)
	if err != nil || len(got) != 1 {
		t.Errorf("missing source: %v %v", got, err)
	}
}

// The simulator's guided policy must pick what RankDestinations ranks first
// given the same knowledge, or the policy comparison would test another policy.
func TestSimGuidedMatchesRankDestinations(t *testing.T) {
	const v, halfLife = 30, 5.0
	m := mustModel(t, Params{V: v, N: 3})
	cfg := defaultSimConfig()
	WithSimPolicy(PolicyGuided)(&cfg)
	WithAnomalyReports(0.3, halfLife)(&cfg)
	w, err := newWorld(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	hosts, _ := SimHosts(TopologyGrid, v, cfg.labelVariety, cfg.seed)
	r := rand.New(rand.NewPCG(3, 4))
	for iter := range 200 {
		st := newWorkerState(w)
		st.prey = r.IntN(v)
		hs := make([]HostInfo, v)
		const s = 1000
		for h := range v {
			hs[h] = HostInfo{Name: hosts[h].Name, Labels: hosts[h].Labels}
			switch r.IntN(6) {
			case 0:
				if h != st.prey {
					set(st.flagged, int32(h))
					st.nflagged++
					hs[h].Compromised = true
				}
			case 1, 2:
				age := r.IntN(20)
				st.mass[h], st.last[h] = 1, int32(s-age)
				hs[h].Anomalies = []time.Time{now.Add(-time.Duration(age) * time.Minute)}
			}
		}
		dst := st.guidedDest(s)
		rank, err := RankDestinations(hs[st.prey].Name, hs, now, WithAnomalyDecay(time.Duration(halfLife*float64(time.Minute)), 24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if hs[dst].Name != rank[0].Host {
			t.Fatalf("iter %d: sim picked %s, RankDestinations %s (%v)", iter, hs[dst].Name, rank[0].Host, rank[:2])
		}
	}
}
