package trace

import (
	"sync"

	"github.com/escape-mtd/escape/bags/syscalls"
)

// nameIndex maps a syscall name, as bytes of a text line, to its number
// without building a string: open addressing over an FNV-1a hash that the
// line scanner computes while it looks for the name's end, so a lookup is
// one probe and one compare in the common case. It is read-only once built.
type nameIndex struct {
	slots [nameSlots]nameSlot
}

type nameSlot struct {
	name string // "" marks an empty slot
	nr   uint16
}

// nameSlots is a power of two well above the ~460 names of an arch, so that
// probe chains stay short.
const nameSlots = 4096

const (
	fnvOffset uint32 = 2166136261
	fnvPrime  uint32 = 16777619
)

// fnvStep folds one byte into an FNV-1a hash.
func fnvStep(h uint32, c byte) uint32 { return (h ^ uint32(c)) * fnvPrime }

func newNameIndex(a syscalls.Arch) *nameIndex {
	ix := &nameIndex{}
	for nr, found := 0, 0; found < a.Count() && nr <= 0xFFFF; nr++ {
		name, ok := a.Name(uint16(nr))
		if !ok {
			continue
		}
		found++
		h := fnvOffset
		for i := 0; i < len(name); i++ {
			h = fnvStep(h, name[i])
		}
		i := h & (nameSlots - 1)
		for ix.slots[i].name != "" {
			i = (i + 1) & (nameSlots - 1)
		}
		ix.slots[i] = nameSlot{name: name, nr: uint16(nr)}
	}
	return ix
}

// lookup returns the number of name, whose FNV-1a hash is h.
func (ix *nameIndex) lookup(name []byte, h uint32) (uint16, bool) {
	for i := h & (nameSlots - 1); ; i = (i + 1) & (nameSlots - 1) {
		s := &ix.slots[i]
		if s.name == "" {
			return 0, false
		}
		if s.name == string(name) { // compiled to a compare, no allocation
			return s.nr, true
		}
	}
}

var (
	x86_64Index = sync.OnceValue(func() *nameIndex { return newNameIndex(syscalls.X86_64) })
	i386Index   = sync.OnceValue(func() *nameIndex { return newNameIndex(syscalls.I386) })
)

// indexFor returns the shared index of arch a, nil for an arch without names.
func indexFor(a syscalls.Arch) *nameIndex {
	switch a {
	case syscalls.X86_64:
		return x86_64Index()
	case syscalls.I386:
		return i386Index()
	}
	return nil
}
