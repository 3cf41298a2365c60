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
