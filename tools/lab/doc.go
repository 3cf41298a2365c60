// Package lab builds and tears down ESCAPE's local lab: N test hosts on one
// machine, each a network namespace on a shared L2 fabric with its own
// containerd, plus a shared-storage directory that stands in for NFS.
package lab
