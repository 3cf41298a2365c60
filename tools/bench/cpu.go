package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of /proc/stat: USER_HZ, fixed at 100 on x86_64 and
// arm64 whatever the kernel's own tick rate.
const userHZ = 100

// machineBusy reads the CPU time every CPU of the machine has spent busy
// (user, nice, system, irq and softirq; not idle, iowait or steal) since
// boot. The difference across a run charges a case with everything it
// causes, on any CPU: the caller's own kernel time, the wake-ups it triggers
// and the userspace consumer that drains the ring buffer, which the caller's
// wall clock does not see when that work lands on the other CPU.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("machine cpu time: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 8 || string(f[0]) != "cpu" {
		return 0, fmt.Errorf("machine cpu time: unexpected /proc/stat line %q", line)
	}
	var ticks uint64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		v, err := strconv.ParseUint(string(f[i]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("machine cpu time: field %d of %q: %w", i, line, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}
