package bags

import (
	"math/rand/v2"
	"testing"
)

func TestBagOfIsOrderFreeCountVector(t *testing.T) {
	a := BagOf([]uint16{3, 1, 3, 2})
	b := BagOf([]uint16{2, 3, 3, 1})
	if a != b {
		t.Fatalf("same multiset gave different bags: %v %v", a, b)
	}
	if c := BagOf([]uint16{3, 1, 2, 2}); c == a {
		t.Fatalf("different counts gave equal bags: %v", c)
	}
	if a.Len() != 4 || a.Count(3) != 2 || a.Count(1) != 1 || a.Count(9) != 0 {
		t.Fatalf("counts wrong: %v len %d", a, a.Len())
	}
	if got := a.String(); got != "{1:1 2:1 3:2}" {
		t.Fatalf("String = %q", got)
	}
	if BagOf([]uint16{0xFFFF}).Count(Unknown) != 1 {
		t.Fatal("0xFFFF not folded into Unknown")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("window longer than MaxWindow did not panic")
		}
	}()
	BagOf(make([]uint16, MaxWindow+1))
}

func TestBagOfAllocs(t *testing.T) {
	w := []uint16{5, 4, 3, 2, 1, 0, 9, 8, 7, 6}
	if n := testing.AllocsPerRun(100, func() { _ = BagOf(w) }); n != 0 {
		t.Fatalf("BagOf allocates %v times", n)
	}
}

// naiveEpochs is the specification written the slow way: window i ends at
// call i (0-based), exists for i >= W-1, and belongs to epoch i/E.
func naiveEpochs(calls []uint16, w, e int) []map[Bag]uint32 {
	n := (len(calls) + e - 1) / e
	out := make([]map[Bag]uint32, n)
	for k := range out {
		out[k] = map[Bag]uint32{}
	}
	for i := w - 1; i < len(calls); i++ {
		out[i/e][BagOf(calls[i-w+1:i+1])]++
	}
	return out
}

func collect(t *testing.T, x *Windower, calls []uint16) []Epoch {
	t.Helper()
	var eps []Epoch
	own := func(e Epoch) Epoch { e.Bags = append([]BagCount(nil), e.Bags...); return e }
	for _, c := range calls {
		if e, ok := x.Push(c); ok {
			eps = append(eps, own(e))
		}
	}
	if e, ok := x.Flush(); ok {
		eps = append(eps, own(e))
	}
	return eps
}

func TestWindowerMatchesNaiveSpec(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		w := 1 + r.IntN(MaxWindow)
		e := 1 + r.IntN(40)
		calls := make([]uint16, r.IntN(300))
		alpha := 1 + r.IntN(6)
		for i := range calls {
			calls[i] = uint16(r.IntN(alpha))
		}
		x, err := NewWindower(w, e)
		if err != nil {
			t.Fatal(err)
		}
		got := collect(t, x, calls)
		want := naiveEpochs(calls, w, e)
		if len(got) != len(want) {
			t.Fatalf("w=%d e=%d n=%d: %d epochs, want %d", w, e, len(calls), len(got), len(want))
		}
		for k := range want {
			var sum uint64
			if len(got[k].Bags) != len(want[k]) {
				t.Fatalf("epoch %d: %d distinct bags, want %d", k, len(got[k].Bags), len(want[k]))
			}
			SortBags(got[k].Bags)
			for i, bc := range got[k].Bags {
				if i > 0 && CompareBags(got[k].Bags[i-1].Bag, bc.Bag) >= 0 {
					t.Fatalf("epoch %d: duplicate or unsorted bags", k)
				}
				if want[k][bc.Bag] != bc.Count {
					t.Fatalf("epoch %d bag %v: count %d want %d", k, bc.Bag, bc.Count, want[k][bc.Bag])
				}
				sum += uint64(bc.Count)
			}
			if sum != got[k].Windows {
				t.Fatalf("epoch %d: counts sum %d != windows %d", k, sum, got[k].Windows)
			}
		}
	}
}

func TestWindowBoundariesByHand(t *testing.T) {
	// W=3, E=4 over 1 2 3 1 2 3 4 4 4 4:
	// calls 0,1 close nothing; windows end at calls 2..9.
	// epoch 0 = calls 0-3: windows {1,2,3} {1,2,3}      -> 2 windows
	// epoch 1 = calls 4-7: {1,2,3} {1,2,3} {2,3,4} {3,4,4} -> 4 windows
	// epoch 2 = calls 8-9 (flushed): {4,4,4} x2            -> 2 windows
	x, _ := NewWindower(3, 4)
	eps := collect(t, x, []uint16{1, 2, 3, 1, 2, 3, 4, 4, 4, 4})
	if len(eps) != 3 {
		t.Fatalf("%d epochs, want 3", len(eps))
	}
	check := func(k int, windows uint64, bags map[Bag]uint32) {
		t.Helper()
		if eps[k].Windows != windows || len(eps[k].Bags) != len(bags) {
			t.Fatalf("epoch %d: %d windows %d bags, want %d %d", k, eps[k].Windows, len(eps[k].Bags), windows, len(bags))
		}
		for _, bc := range eps[k].Bags {
			if bags[bc.Bag] != bc.Count {
				t.Fatalf("epoch %d: bag %v count %d", k, bc.Bag, bc.Count)
			}
		}
	}
	b := func(s ...uint16) Bag { return BagOf(s) }
	check(0, 2, map[Bag]uint32{b(1, 2, 3): 2})
	check(1, 4, map[Bag]uint32{b(1, 2, 3): 2, b(2, 3, 4): 1, b(3, 4, 4): 1})
	check(2, 2, map[Bag]uint32{b(4, 4, 4): 2})

	// Epoch reset: each epoch starts a fresh window (papers' literal reading).
	y, _ := NewWindower(3, 4, WithEpochReset(true))
	eps = collect(t, y, []uint16{1, 2, 3, 1, 2, 3, 4, 4, 4, 4})
	if eps[0].Windows != 2 || eps[1].Windows != 2 || eps[2].Windows != 0 {
		t.Fatalf("epoch reset windows %d %d %d, want 2 2 0", eps[0].Windows, eps[1].Windows, eps[2].Windows)
	}
}

func TestWindowerResetAndErrors(t *testing.T) {
	if _, err := NewWindower(0, 10); err == nil {
		t.Fatal("window 0 accepted")
	}
	if _, err := NewWindower(MaxWindow+1, 10); err == nil {
		t.Fatal("window 17 accepted")
	}
	if _, err := NewWindower(4, 0); err == nil {
		t.Fatal("epoch 0 accepted")
	}
	x, _ := NewWindower(2, 100)
	x.Push(1)
	x.Reset()
	x.Push(2)
	e, ok := x.Flush()
	if !ok || e.Windows != 0 {
		t.Fatalf("window crossed a Reset: %+v", e)
	}
	if _, ok := x.Flush(); ok {
		t.Fatal("empty flush returned an epoch")
	}
}

func TestSlideMatchesBagOf(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	calls := make([]uint16, 500)
	for i := range calls {
		calls[i] = uint16(r.IntN(7))
	}
	calls[17] = 0xFFFF
	for _, w := range []int{1, 5, 10, 16} {
		i := w - 1
		for b := range Slide(calls, w) {
			if want := BagOf(calls[i-w+1 : i+1]); b != want {
				t.Fatalf("w=%d window %d: %v want %v", w, i, b, want)
			}
			i++
		}
		if i != len(calls) {
			t.Fatalf("w=%d: %d windows", w, i-w+1)
		}
	}
	for range Slide(calls[:3], 4) {
		t.Fatal("short stream yielded a window")
	}
}

func TestPushSteadyStateAllocs(t *testing.T) {
	x, _ := NewWindower(10, 1000)
	calls := make([]uint16, 4096)
	for i := range calls {
		calls[i] = uint16(i % 13 * (i % 5))
	}
	for _, c := range calls { // warm the aggregation map and output slice
		x.Push(c)
	}
	n := testing.AllocsPerRun(5, func() {
		for _, c := range calls {
			x.Push(c)
		}
	})
	if n != 0 {
		t.Fatalf("Push allocates %v per 4096 calls", n)
	}
}
