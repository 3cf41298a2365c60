package sensor

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// MarkOf reads the kernel's mark of thread tid: the slot and generation its
// calls are counted in, or ok false for a thread the sensor ignores.
func (p *Probe) MarkOf(tid int) (slot, gen uint32, ok bool, err error) {
	fd, err := unix.PidfdOpen(tid, unix.PIDFD_THREAD)
	if err != nil {
		return 0, 0, false, fmt.Errorf("pidfd of thread %d: %w", tid, err)
	}
	defer unix.Close(fd)
	var m struct{ Slot, Gen uint32 }
	switch err := p.objs.Marks.Lookup(uint32(fd), &m); {
	case errors.Is(err, ebpf.ErrKeyNotExist):
		return 0, 0, false, nil
	case err != nil:
		return 0, 0, false, fmt.Errorf("mark of thread %d: %w", tid, err)
	}
	return m.Slot, m.Gen, true, nil
}

// WithOnlineSaveEvery spaces the saves that online learning causes.
func WithOnlineSaveEvery(d time.Duration) MonitorOption {
	return func(c *monitorConfig) { c.onlineSaveEvery = d }
}
