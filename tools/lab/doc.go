// Package lab builds and tears down ESCAPE's local lab: N test hosts on one
// machine that behave, as far as ESCAPE can tell, like separate machines.
//
// Each host is a network namespace on a shared L2 fabric (escape-fabric,
// bridge br-fabric) plus a mount namespace of its own, in which it has a
// private /run and /tmp and its own /etc/escape (config and certificate),
// /var/lib/escape, /var/log/escape and /var/lib/containerd; the lab's
// directories are hidden from it, except the shared storage (standing in
// for NFS) when enabled. Every host runs its own containerd and, unless
// disabled, its node agent (escape-sensor run), reached over mutual TLS.
// A plane namespace (198.18.0.3) is a machine of the same kind without
// containerd, with the plane's configuration and certificate; a client
// namespace (198.18.0.2) stands for the service's users. The lab's CA key
// stays in the root namespace.
//
// Command runs a program on any of these machines; Partition, CutPlaneLink,
// StopAgent and KillAgent provoke the faults of real networks and hosts.
// Down removes everything, also after a crash, by what it finds on the
// machine rather than by what the inventory says.
//
// WithKubernetes adds a real single-node Kubernetes inside the first host
// (kube*.go; docs/operations.md, "Kubernetes in the lab"): etcd, the
// apiserver, controller-manager, scheduler and kubelet in that host's
// namespaces, on its containerd with CRI, its binaries built once per
// version (EnsureKubeBinaries, make kube-bins), addresses from the lab's
// range only.
package lab
