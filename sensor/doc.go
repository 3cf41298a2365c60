// Package sensor is the userspace side of ESCAPE's eBPF sensor: it loads the
// program from package bpf, keeps the watched-cgroup set in step with the
// containers that containerd reports, drains epochs from the ring buffer and
// hands them to the bag-of-system-calls matcher in package bags.
package sensor
