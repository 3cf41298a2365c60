package sensor

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"go.uber.org/zap"

	escbpf "github.com/escape-mtd/escape/bpf"
)

// Probe is the loaded and attached kernel program: the watched set, the
// per-container window state and the ring buffer of epochs and new bags.
// Its methods are safe for concurrent use, except that records must be read
// by one goroutine.
type Probe struct {
	cfg   probeConfig
	log   *zap.Logger
	objs  escbpf.SensorObjects
	lnk   link.Link   // tp_btf/sys_enter
	hooks []link.Link // tp_btf/cgroup_rmdir, sched_process_fork, cgroup_attach_task
	rd    *ringbuf.Reader
	keys  [nrKeys]uint64

	mu    sync.Mutex
	slots map[uint64]uint32 // cgroup id -> slot
	dirs  map[uint64]string // cgroup id -> cgroup2 directory
	gens  []uint32          // per slot: current generation
	free  []uint32
}

// ErrFull is returned by Watch when every slot is taken.
var ErrFull = errors.New("sensor: all container slots are in use")

// ErrNotWatched is returned by Unwatch for a cgroup that is not watched.
var ErrNotWatched = errors.New("sensor: cgroup not watched")

// LoadProbe loads the program with fresh random bag keys, sizes its maps and
// attaches it to tp_btf/sys_enter. It needs root (CAP_BPF, CAP_PERFMON) and
// kernel BTF.
func LoadProbe(opts ...ProbeOption) (*Probe, error) {
	cfg := defaultProbeConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("load probe: %w", err)
	}
	p := &Probe{cfg: cfg, log: cfg.log, slots: make(map[uint64]uint32), dirs: make(map[uint64]string)}
	// Random keys, unknown to the watched workload: it cannot craft windows
	// whose hashes collide. Userspace checks every new bag against them.
	var raw [nrKeys * 8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("load probe: keys: %w", err)
	}
	for i := range p.keys {
		p.keys[i] = binary.LittleEndian.Uint64(raw[i*8:])
	}
	spec, err := escbpf.LoadSensor()
	if err != nil {
		return nil, fmt.Errorf("load probe: spec: %w", err)
	}
	for name, v := range map[string]any{
		"window":    uint32(cfg.window),
		"epoch_len": uint32(cfg.epoch),
		"flush_ns":  uint64(cfg.flush.Nanoseconds()),
		"keys":      p.keys,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("load probe: set %s: %w", name, err)
		}
	}
	spec.Maps["state"].MaxEntries = uint32(cfg.maxCont)
	spec.Maps["events"].MaxEntries = uint32(cfg.ringSize)
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			cfg.log.Error("verifier rejected the sensor", zap.String("log", fmt.Sprintf("%+v", ve)))
		}
		return nil, fmt.Errorf("load probe: %w", err)
	}
	p.gens = make([]uint32, cfg.maxCont)
	for i := cfg.maxCont - 1; i >= 0; i-- {
		p.free = append(p.free, uint32(i))
	}
	if p.rd, err = ringbuf.NewReader(p.objs.Events); err != nil {
		p.objs.Close()
		return nil, fmt.Errorf("load probe: ring reader: %w", err)
	}
	// The hooks that keep the index and the task marks exact go first: from
	// the first call counted on, membership changes are already followed.
	for _, prog := range []*ebpf.Program{p.objs.EscapeRmdir, p.objs.EscapeFork, p.objs.EscapeAttach} {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			p.closeAll()
			return nil, fmt.Errorf("load probe: attach %s: %w", prog, err)
		}
		p.hooks = append(p.hooks, l)
	}
	if p.lnk, err = link.AttachTracing(link.TracingOptions{Program: p.objs.EscapeEnter}); err != nil {
		p.closeAll()
		return nil, fmt.Errorf("load probe: attach tp_btf/sys_enter: %w", err)
	}
	cfg.log.Info("sensor attached", zap.Int("window", cfg.window), zap.Int("epoch", cfg.epoch),
		zap.Duration("flush", cfg.flush), zap.Int("max_containers", cfg.maxCont))
	return p, nil
}

// Window and Epoch report W and E.
func (p *Probe) Window() int { return p.cfg.window }

// Epoch reports E, the epoch length in calls.
func (p *Probe) Epoch() int { return p.cfg.epoch }

// Program is the program attached to sys_enter, the one every system call
// on the host runs.
func (p *Probe) Program() *ebpf.Program { return p.objs.EscapeEnter }

// Programs are every program of the sensor, by the name of its C function
// (as bpftool lists them), for their run-time statistics: besides sys_enter,
// the fork hook runs on every fork and thread creation on the host, the
// attach hook on every cgroup move, the rmdir hook on every cgroup removal,
// and remark_task when the sensor starts or stops watching a cgroup.
func (p *Probe) Programs() map[string]*ebpf.Program {
	return map[string]*ebpf.Program{
		"escape_enter":  p.objs.EscapeEnter,
		"escape_fork":   p.objs.EscapeFork,
		"escape_attach": p.objs.EscapeAttach,
		"escape_rmdir":  p.objs.EscapeRmdir,
		"remark_task":   p.objs.RemarkTask,
	}
}

// Close detaches the programs and frees their maps.
func (p *Probe) Close() error { return p.closeAll() }

func (p *Probe) closeAll() error {
	var errs []error
	if p.lnk != nil {
		errs = append(errs, p.lnk.Close())
	}
	for _, l := range p.hooks {
		errs = append(errs, l.Close())
	}
	if p.rd != nil {
		errs = append(errs, p.rd.Close())
	}
	return errors.Join(append(errs, p.objs.Close())...)
}

// HashOf is the kernel's bag identity of a window: the sum of its keys.
func (p *Probe) HashOf(window []uint16) uint64 {
	var h uint64
	for _, nr := range window {
		k := int(nr)
		if k >= nrUnknownKey {
			k = nrUnknownKey
		}
		h += p.keys[k]
	}
	return h
}

// Watch starts building bags for the cgroup2 directory dir in a fresh slot,
// and returns that slot and generation. The cgroup's id (the directory's
// inode, what Unwatch takes) is CgroupID(dir).
func (p *Probe) Watch(dir string) (slot, gen uint32, err error) {
	cgid, err := CgroupID(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("watch cgroup: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.slots[cgid]; ok {
		return s, p.gens[s], nil
	}
	if len(p.free) == 0 {
		return 0, 0, ErrFull
	}
	slot = p.free[len(p.free)-1]
	p.gens[slot]++
	gen = p.gens[slot]
	// A zero state (fresh window, empty bag cache, timer cancelled) tagged
	// with the new generation, written before the cgroup becomes visible.
	st := &escbpf.SensorCstate{Gen: gen}
	if err := p.objs.State.Update(slot, st, ebpf.UpdateLock); err != nil {
		return 0, 0, fmt.Errorf("watch cgroup %d: reset slot %d: %w", cgid, slot, err)
	}
	// pin publishes the cgroup's address in the watched index: from its
	// return on, every call of the cgroup counts.
	if err := p.runPin(p.objs.Pin, cgid, slot); err != nil {
		return 0, 0, fmt.Errorf("watch cgroup %d: %w", cgid, err)
	}
	p.free = p.free[:len(p.free)-1]
	p.slots[cgid] = slot
	p.dirs[cgid] = dir
	// Tasks forked or moved in from here on are marked by the kernel's
	// hooks; the ones already inside are marked now.
	if err := p.remarkThreads(dir); err != nil {
		// A mark the kernel could not allocate is counted as a drop there.
		p.log.Warn("mark the tasks already in a watched cgroup", zap.String("cgroup", dir), zap.Error(err))
	}
	return slot, gen, nil
}

// remarkThreads runs the remark program for every thread listed in the
// cgroup's cgroup.threads (threads in the sensor's pid namespace).
func (p *Probe) remarkThreads(dir string) error {
	raw, err := os.ReadFile(filepath.Join(dir, "cgroup.threads"))
	if err != nil {
		return fmt.Errorf("list threads of %s: %w", dir, err)
	}
	var errs []error
	for _, f := range strings.Fields(string(raw)) {
		tid, err := strconv.ParseInt(f, 10, 32)
		if err != nil {
			return fmt.Errorf("list threads of %s: bad thread id %q", dir, f)
		}
		if err := p.remark(escbpf.SensorRemarkArgs{Tid: int32(tid)}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Remark marks a thread the kernel could not mark itself (a REC_REMARK
// record). The thread's cgroup decides again, so a thread that left or
// exited meanwhile is fine.
func (p *Probe) Remark(r *RemarkRequest) error {
	return p.remark(escbpf.SensorRemarkArgs{Tid: r.Tid, Global: 1})
}

// remark runs the remark program for one thread. ESRCH (the thread exited)
// is not an error: there is nothing left to mark.
func (p *Probe) remark(args escbpf.SensorRemarkArgs) error {
	if _, err := p.objs.RemarkTask.Run(&ebpf.RunOptions{Context: &args, ContextOut: &args}); err != nil {
		return fmt.Errorf("run %s: %w", p.objs.RemarkTask, err)
	}
	if args.Err != 0 && syscall.Errno(-args.Err) != syscall.ESRCH {
		return fmt.Errorf("mark thread %d: %w", args.Tid, syscall.Errno(-args.Err))
	}
	return nil
}

// runPin runs the pin or unpin program for (cgid, slot).
func (p *Probe) runPin(prog *ebpf.Program, cgid uint64, slot uint32) error {
	args := escbpf.SensorPinArgs{Cgid: cgid, Slot: slot}
	if _, err := prog.Run(&ebpf.RunOptions{Context: &args, ContextOut: &args}); err != nil {
		return fmt.Errorf("run %s: %w", prog, err)
	}
	if args.Err != 0 {
		return fmt.Errorf("%s slot %d: %w", prog, slot, syscall.Errno(-args.Err))
	}
	return nil
}

// inflightGrace bounds how long a program instance that looked the cgroup up
// before its removal can still be running: instances are non-sleepable and
// last microseconds.
const inflightGrace = 5 * time.Millisecond

// Unwatch stops watching cgid and returns its open epoch, flagged Final: the
// partial epoch of a container leaving mid-epoch, or an empty one (Calls 0)
// that tells consumers the slot generation is over. The slot is reset so
// that its idle timer cannot ship the same epoch again.
func (p *Probe) Unwatch(cgid uint64) (*RawEpoch, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	slot, ok := p.slots[cgid]
	if !ok {
		return nil, fmt.Errorf("unwatch cgroup %d: %w", cgid, ErrNotWatched)
	}
	// Withdraw the address from the index. A removed cgroup was withdrawn by
	// the rmdir program already: ENOENT is fine.
	if err := p.runPin(p.objs.Unpin, cgid, slot); err != nil && !errors.Is(err, syscall.ENOENT) {
		return nil, fmt.Errorf("unwatch cgroup %d: %w", cgid, err)
	}
	delete(p.slots, cgid)
	dir := p.dirs[cgid]
	delete(p.dirs, cgid)
	time.Sleep(inflightGrace)
	st := new(escbpf.SensorCstate)
	if err := p.objs.State.LookupWithFlags(slot, st, ebpf.LookupLock); err != nil {
		return nil, fmt.Errorf("unwatch cgroup %d: read slot %d: %w", cgid, slot, err)
	}
	if err := p.objs.State.Update(slot, &escbpf.SensorCstate{}, ebpf.UpdateLock); err != nil {
		return nil, fmt.Errorf("unwatch cgroup %d: reset slot %d: %w", cgid, slot, err)
	}
	p.free = append(p.free, slot)
	// The marks of the tasks left behind are stale now and would cost them
	// the cgroup lookup on every call: drop them. A removed cgroup has no
	// tasks left.
	if err := p.remarkThreads(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		p.log.Debug("unmark the tasks of an unwatched cgroup", zap.String("cgroup", dir), zap.Error(err))
	}
	if st.Gen != p.gens[slot] {
		return nil, fmt.Errorf("unwatch cgroup %d: slot %d holds generation %d, want %d", cgid, slot, st.Gen, p.gens[slot])
	}
	n := min(int(st.Nwin), MaxEpoch)
	e := &RawEpoch{
		Slot: slot, Gen: st.Gen, Seq: st.Seq, Calls: st.InEpoch, Drops: st.Drops,
		Total: st.Total, Final: true, Hashes: make([]uint64, n),
	}
	copy(e.Hashes, st.Ep[st.Seq&1].Hash[:n])
	return e, nil
}

// SlotCounters reads a slot's cumulative calls and drops (for metrics).
func (p *Probe) SlotCounters(slot uint32) (calls uint64, drops uint32, err error) {
	st := new(escbpf.SensorCstate)
	if err := p.objs.State.LookupWithFlags(slot, st, ebpf.LookupLock); err != nil {
		return 0, 0, fmt.Errorf("read slot %d: %w", slot, err)
	}
	return st.Total, st.Drops, nil
}

// Watched reports the number of watched cgroups.
func (p *Probe) Watched() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.slots)
}
