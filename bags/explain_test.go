package bags

import (
	"reflect"
	"testing"
)

func TestExplainRanksNovelCallsFirstAndCountsWindowsOnce(t *testing.T) {
	p := NewProfile(WithWindow(3), WithThreshold(0))
	if _, err := p.Train(ep(2, bc(1, 1, 2, 3), bc(1, 2, 2, 4))); err != nil {
		t.Fatal(err)
	}
	e := ep(11,
		bc(5, 1, 2, 3), // known: no evidence
		bc(3, 2, 2, 5), // unseen: 2 (known call, counted once per window), 5 (novel)
		bc(2, 1, 1, 4), // unseen: 1, 4 (known calls in a new mix)
		bc(1, 5, 6, 6), // unseen: 5, 6 (both novel)
		bc(0, 7, 7, 7), // no windows: ignored
	)
	got := p.Explain(e, 10)
	want := []Evidence{
		{Syscall: 5, Windows: 4, Novel: true},
		{Syscall: 6, Windows: 1, Novel: true},
		{Syscall: 2, Windows: 3},
		{Syscall: 1, Windows: 2},
		{Syscall: 4, Windows: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("evidence\n got %+v\nwant %+v", got, want)
	}
	if got := p.Explain(e, 2); !reflect.DeepEqual(got, want[:2]) {
		t.Fatalf("the first 2: %+v", got)
	}
	if got := p.Explain(e, 0); got != nil {
		t.Fatalf("n = 0 gave %+v", got)
	}
	if got := p.Explain(ep(5, bc(5, 1, 2, 3)), 10); got != nil {
		t.Fatalf("an epoch of known bags gave %+v", got)
	}
	// Explaining changes nothing: the verdict after it is the same.
	if v := p.Detect(e); v.Mismatches != 6 || v.NewBags != 3 {
		t.Fatalf("verdict after Explain: %+v", v)
	}
}

// The call set follows the database as it grows: a call that was novel in
// one anomaly is known once online learning or training has added a bag
// holding it.
func TestExplainFollowsTheGrowingDatabase(t *testing.T) {
	p := NewProfile(WithWindow(2), WithThreshold(0))
	if _, err := p.Train(ep(1, bc(1, 1, 2))); err != nil {
		t.Fatal(err)
	}
	e := ep(1, bc(1, 1, 9))
	if got := p.Explain(e, 5); len(got) != 2 || got[0] != (Evidence{Syscall: 9, Windows: 1, Novel: true}) {
		t.Fatalf("before: %+v", got)
	}
	if _, err := p.Train(ep(1, bc(1, 9, 9))); err != nil {
		t.Fatal(err)
	}
	want := []Evidence{{Syscall: 1, Windows: 1}, {Syscall: 9, Windows: 1}}
	if got := p.Explain(e, 5); !reflect.DeepEqual(got, want) {
		t.Fatalf("after training {9,9}: %+v, want %+v", got, want)
	}
}
