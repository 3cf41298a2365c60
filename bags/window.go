package bags

import (
	"errors"
	"fmt"
	"iter"
	"slices"
)

// DefaultEpoch is the epoch length in calls used when none is configured;
// it is inside the papers' sweep grid (1,000-4,000).
const DefaultEpoch = 1000

// Windower turns a stream of syscall numbers into windows and epochs with the
// same semantics as the kernel sensor, so offline bags of a recorded stream
// equal what the sensor delivers for it:
//   - one window of W calls slides one call at a time over the whole stream
//     (it does not restart at epoch boundaries unless WithEpochReset is set);
//   - the first window completes at call W, then every call closes one window;
//   - a window belongs to the epoch of the call that closes it;
//   - an epoch is E calls (counted from the start of the stream, including the
//     first W-1 calls that close no window), so epoch 1 has E-W+1 windows and
//     later epochs E.
//
// Push is allocation-free in steady state: the ring and the sorted window are
// arrays, and the per-epoch aggregation map and output slice are reused.
// A Windower is not safe for concurrent use.
type Windower struct {
	w, e      int
	reset     bool
	ring      [MaxWindow]uint16
	sorted    Bag // first n slots: the current window sorted; rest padding
	n, pos    int
	inEpoch   int    // calls pushed in the current epoch
	windows   uint64 // windows closed in the current epoch
	hash      uint64 // multiset hash of the current window (see table)
	agg       *table
	out       []BagCount
	order     []uint32 // per window of the open epoch: its bag's index in agg
	epochs    uint64
	totalCall uint64
}

// WindowerOption configures a Windower.
type WindowerOption func(*Windower)

// WithEpochReset restarts the window at every epoch boundary, the literal
// reading of the papers ("for each epoch, a sliding window is moved over the
// system calls of the current epoch"): every epoch then has E-W+1 windows.
// The kernel sensor does not do this; leave it off when comparing with it.
func WithEpochReset(on bool) WindowerOption { return func(w *Windower) { w.reset = on } }

// ErrConfig reports an invalid window or epoch size.
var ErrConfig = errors.New("invalid bags configuration")

// NewWindower returns a Windower of window size w (1..MaxWindow) and epoch
// length e calls (>= 1).
func NewWindower(w, e int, opts ...WindowerOption) (*Windower, error) {
	if w < 1 || w > MaxWindow {
		return nil, fmt.Errorf("window %d not in 1..%d: %w", w, MaxWindow, ErrConfig)
	}
	if e < 1 {
		return nil, fmt.Errorf("epoch %d calls < 1: %w", e, ErrConfig)
	}
	x := &Windower{w: w, e: e, agg: newTable(1024)}
	for _, o := range opts {
		o(x)
	}
	x.clearWindow()
	return x, nil
}

func (x *Windower) clearWindow() {
	x.n, x.pos, x.hash = 0, 0, 0
	for i := range x.sorted {
		x.sorted[i] = pad
	}
}

// Window and Epoch report the configured sizes.
func (x *Windower) Window() int { return x.w }

// Epoch reports the configured epoch length in calls.
func (x *Windower) Epoch() int { return x.e }

// Push feeds one syscall number. When this call completes an epoch, Push
// returns it and true; its bags are in order of first occurrence. The returned Epoch's Bags and Order slices are owned by the
// Windower and valid only until the next Push, Flush or Reset.
func (x *Windower) Push(nr uint16) (Epoch, bool) {
	if nr == pad {
		nr = Unknown
	}
	x.totalCall++
	if x.n < x.w {
		// Filling: insert into the sorted prefix.
		i := x.n
		for i > 0 && x.sorted[i-1] > nr {
			x.sorted[i] = x.sorted[i-1]
			i--
		}
		x.sorted[i] = nr
		x.hash += callCode(nr)
		x.ring[x.n] = nr
		x.n++
		if x.n == x.w {
			x.close()
		}
	} else {
		out := x.ring[x.pos]
		x.ring[x.pos] = nr
		if x.pos++; x.pos == x.w {
			x.pos = 0
		}
		if out != nr {
			x.sorted.replace(x.w, out, nr)
			x.hash += callCode(nr) - callCode(out)
		}
		x.close()
	}
	if x.inEpoch++; x.inEpoch == x.e {
		return x.emit(), true
	}
	return Epoch{}, false
}

// replace removes one occurrence of out from the sorted prefix of length n
// and inserts in, keeping it sorted, in one pass (O(W), no allocation).
func (b *Bag) replace(n int, out, in uint16) {
	i := 0
	for b[i] != out {
		i++
	}
	if in > out {
		for i+1 < n && b[i+1] < in {
			b[i] = b[i+1]
			i++
		}
	} else {
		for i > 0 && b[i-1] > in {
			b[i] = b[i-1]
			i--
		}
	}
	b[i] = in
}

func (x *Windower) close() {
	x.windows++
	s, _ := x.agg.upsert(x.hash, &x.sorted)
	s.val++
	x.order = append(x.order, s.idx)
}

// Flush closes the current epoch early (the sensor's time flush) and returns
// it if it holds any call. The window itself keeps sliding.
func (x *Windower) Flush() (Epoch, bool) {
	if x.inEpoch == 0 {
		return Epoch{}, false
	}
	return x.emit(), true
}

// Reset forgets the window and any partial epoch: the next call starts a new
// stream (a new trace or process).
func (x *Windower) Reset() {
	x.clearWindow()
	x.inEpoch, x.windows = 0, 0
	x.order = x.order[:0]
	x.agg.reset()
}

// Epochs and Calls report how many epochs were emitted and calls pushed.
func (x *Windower) Epochs() uint64 { return x.epochs }

// Calls reports the number of calls pushed since creation.
func (x *Windower) Calls() uint64 { return x.totalCall }

func (x *Windower) emit() Epoch {
	x.out = x.out[:0]
	for _, i := range x.agg.used {
		s := &x.agg.slots[i]
		x.out = append(x.out, BagCount{Bag: s.bag, Count: s.val})
	}
	// Bags come in order of first occurrence in the epoch: deterministic for
	// a given stream, and sorting here cost more than the whole hot path.
	// Use SortBags to compare with the kernel's (unordered) delivery.
	// Bags are in insertion order, so a window's slot index is its bag's
	// index in e.Bags. The order buffer is handed out and reused like out.
	e := Epoch{Windows: x.windows, Bags: x.out, Order: x.order}
	x.order = x.order[:0]
	x.agg.reset()
	x.windows, x.inEpoch = 0, 0
	x.epochs++
	if x.reset {
		x.clearWindow()
	}
	return e
}

// SortBags puts an epoch's bags in canonical (ascending bag) order, e.g. to
// compare an offline epoch with the kernel's.
func SortBags(bcs []BagCount) {
	slices.SortFunc(bcs, func(a, b BagCount) int { return compareBags(&a.Bag, &b.Bag) })
}

// CompareBags orders bags lexicographically by their sorted call numbers.
func CompareBags(a, b Bag) int { return compareBags(&a, &b) }

func compareBags(a, b *Bag) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// Slide yields the bag of every window of w calls over calls, in order,
// without allocating: the building block for per-trace scoring. A stream
// shorter than w yields nothing.
func Slide(calls []uint16, w int) iter.Seq[Bag] {
	return func(yield func(Bag) bool) {
		if w < 1 || w > MaxWindow || len(calls) < w {
			return
		}
		b := BagOf(calls[:w])
		if !yield(b) {
			return
		}
		for i := w; i < len(calls); i++ {
			out, in := calls[i-w], calls[i]
			if out == pad {
				out = Unknown
			}
			if in == pad {
				in = Unknown
			}
			if out != in {
				b.replace(w, out, in)
			}
			if !yield(b) {
				return
			}
		}
	}
}
