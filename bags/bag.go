package bags

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxWindow is the largest window size W supported. A Bag stores the W
// syscall numbers of a window in sorted order, so its size is fixed by this
// constant; 16 keeps a Bag at 32 bytes (two cache-friendly words pairs).
const MaxWindow = 16

// DefaultWindow is the papers' window size.
const DefaultWindow = 10

// pad marks unused slots of a Bag. Sorting puts it after every real number,
// so a Bag of W < MaxWindow calls is its W sorted numbers followed by padding.
const pad = 0xFFFF

// Unknown is the number readers use for a system call whose name is not in
// the architecture's table. It is a legal syscall number in a Bag (it never
// collides with a real syscall) and keeps such calls visible to the detector.
const Unknown uint16 = 0xFFFE

// Bag is the exact count vector of one window: the multiset of its syscall
// numbers, stored as the sorted numbers padded with 0xFFFF. Two windows have
// equal count vectors exactly when their Bags are ==, so a Bag is usable as a
// map key. It is a plain array: building one never allocates.
type Bag [MaxWindow]uint16

// BagOf returns the bag of one window from its syscall numbers, in any order.
// The number 0xFFFF is reserved for padding and is folded into Unknown.
// It panics if len(window) > MaxWindow, like an out-of-range index: windows
// longer than MaxWindow cannot be represented and are a caller bug.
func BagOf(window []uint16) Bag {
	if len(window) > MaxWindow {
		panic(fmt.Sprintf("bags: window of %d calls exceeds MaxWindow %d", len(window), MaxWindow))
	}
	var b Bag
	n := 0
	for _, s := range window {
		if s == pad {
			s = Unknown
		}
		// Insertion sort: W <= 16, and it keeps BagOf allocation-free.
		i := n
		for i > 0 && b[i-1] > s {
			b[i] = b[i-1]
			i--
		}
		b[i] = s
		n++
	}
	for i := n; i < MaxWindow; i++ {
		b[i] = pad
	}
	return b
}

// Len is the number of calls in the bag (the window size it came from).
func (b Bag) Len() int {
	n := 0
	for n < MaxWindow && b[n] != pad {
		n++
	}
	return n
}

// Count reports how many calls of syscall number nr the bag holds.
func (b Bag) Count(nr uint16) int {
	c := 0
	for _, s := range b {
		if s == nr {
			c++
		}
	}
	return c
}

// Calls returns the bag's syscall numbers in ascending order.
func (b Bag) Calls() []uint16 {
	out := make([]uint16, b.Len())
	copy(out, b[:])
	return out
}

// valid reports whether b is in canonical form: sorted, padding only at the
// end. Bags decoded from files are checked with it.
func (b Bag) valid() bool {
	for i := 1; i < MaxWindow; i++ {
		if b[i] < b[i-1] {
			return false
		}
	}
	return true
}

// String renders the count vector sparsely, e.g. "{3:2 6:1 252:7}".
func (b Bag) String() string {
	var sb strings.Builder
	sb.WriteByte('{')
	n := b.Len()
	for i := 0; i < n; {
		j := i
		for j < n && b[j] == b[i] {
			j++
		}
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(strconv.Itoa(int(b[i])))
		sb.WriteByte(':')
		sb.WriteString(strconv.Itoa(j - i))
		i = j
	}
	sb.WriteByte('}')
	return sb.String()
}

// BagCount is one distinct bag of an epoch and how many windows had it.
type BagCount struct {
	Bag   Bag
	Count uint32
}

// NoBag marks a window of Epoch.Order whose bag is not known (the sensor
// could not resolve its hash): it scores nothing and breaks the sequence.
const NoBag = ^uint32(0)

// Epoch is what the sensor delivers per container and epoch: the number of
// windows closed and the distinct bags with their window counts.
type Epoch struct {
	Windows  uint64     // windows closed in this epoch
	Bags     []BagCount // distinct bags and their window counts (sum == Windows unless Degraded)
	Degraded bool       // the kernel lost data: never report such an epoch as clean
	// Order is the epoch's windows in the order they closed, each the index
	// of its bag in Bags (NoBag if unresolved). The kernel ships window
	// hashes in order, so both the sensor and the Windower fill it; rules
	// over the sequence of windows need it, the papers' rule does not. Nil
	// means the order is unknown: sequence rules then see bags only.
	Order []uint32
}
