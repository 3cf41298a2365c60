package bpf

import (
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
)

// The committed objects parse, and the record layouts userspace decodes have
// the sizes the C header gives them (no root needed).
func TestCommittedObjects(t *testing.T) {
	spec, err := LoadSensor()
	if err != nil {
		t.Fatal(err)
	}
	if p := spec.Programs["escape_enter"]; p == nil || p.Type != ebpf.Tracing || p.AttachTo != "sys_enter" {
		t.Fatalf("escape_enter: %+v", p)
	}
	for _, v := range []string{"window", "epoch_len", "flush_ns", "keys"} {
		if vs := spec.Variables[v]; vs == nil || !vs.Constant() {
			t.Errorf("variable %s missing or not constant", v)
		}
	}
	// The watched index is an array of buckets of cgroup addresses, written
	// only by the pin/unpin syscall programs.
	if m := spec.Maps["watched"]; m == nil || m.Type != ebpf.Array {
		t.Errorf("watched map: %+v, want an array", m)
	}
	for _, name := range []string{"pin", "unpin"} {
		if p := spec.Programs[name]; p == nil || p.Type != ebpf.Syscall {
			t.Errorf("%s: %+v, want a syscall program", name, p)
		}
	}
	if s := unsafe.Sizeof(SensorPinArgs{}); s != 16 {
		t.Errorf("pin arguments %d bytes, want 16", s)
	}
	if s := unsafe.Sizeof(SensorEpochHdr{}); s != 40 {
		t.Errorf("epoch header %d bytes, want 40", s)
	}
	if s := unsafe.Sizeof(SensorNewbag{}); s != 56 {
		t.Errorf("new-bag record %d bytes, want 56", s)
	}
	if s := unsafe.Sizeof(StreamCallRec{}); s != 32 {
		t.Errorf("call record %d bytes, want 32", s)
	}
	if _, err := LoadStream(); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBench(); err != nil {
		t.Fatal(err)
	}
}
