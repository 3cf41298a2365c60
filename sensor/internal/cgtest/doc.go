// Package cgtest gives kernel tests of the sensor a workload with an exactly
// known system-call stream, without containerd: a re-executed copy of the test
// binary moves one locked OS thread into a threaded cgroup2 leaf and issues a
// given list of raw system calls there, so the leaf's stream is that list
// (plus the final exit_group) and nothing else of the Go runtime.
package cgtest
