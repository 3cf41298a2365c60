// Command bench measures the sensor's added cost per system call against
// same-run baselines: a getppid() loop, run as a child process in its own
// cgroup, under (a) no tracing, (b) an empty tp_btf program on
// raw_syscalls/sys_enter (the floor) and (b2) an empty classic tracepoint
// program (the hook choice), (c) the sensor watching the loop's cgroup,
// (d) the sensor watching another cgroup only, (e) per-event streaming
// through the ring buffer with bags built in userspace, (f) bpftrace printing
// every call, (g) strace -f. Cases are interleaved over repetitions; the
// report gives medians and ratios of added cost (case - a).
//
//	go run ./tools/bench --quick            # CI-sized, ~30 s
//	go run ./tools/bench --out results.md   # full run for BENCHMARKS figures
package main
