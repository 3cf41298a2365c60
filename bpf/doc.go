// Package bpf holds ESCAPE's CO-RE eBPF program and the Go bindings that
// bpf2go generates from it. The program hooks raw system-call entry, ignores
// every cgroup that is not watched, and builds each watched container's
// sliding-window bags of system calls in the kernel, closing one epoch every
// E calls (or on a time flush) and shipping only per-epoch results through a
// ring buffer. The generated objects are committed so `go build` needs no clang.
package bpf
