// Command image is `make image`: it builds the OCI images of ESCAPE's two
// daemons without a container engine, reproducibly, with
// google/go-containerregistry.
//
//   - escape-sensor: the per-host daemon (sensor and node agent) as the
//     DaemonSet runs it. A static escape-sensor, the CRIU 4.2 closure that
//     make deps assembles under /opt/escape/criu with its wrapper at
//     /opt/escape/bin/criu (the agent's lazy-pages daemon and the doctor
//     run it), and the programs the agent and the doctor exec: nsenter,
//     iptables (the migration guards), runc (the doctor's check) and a
//     static busybox for sh (the CRIU wrapper) and sleep (the doctor's
//     cgroup probe). containerd is the node's, reached by its socket.
//   - escape-plane: a static escape-plane alone, run as a non-root user.
//
// Each image is written under --out as an OCI layout (a directory) and as
// an OCI archive (its tar) that `ctr images import` loads under two names:
// the version tag and the digest reference the manifests pin. The same
// inputs give the same digests: every tar entry is sorted, owned by a
// fixed uid and gid with a normalised mode and timestamped at
// SOURCE_DATE_EPOCH (0 when unset), the binaries are built with -trimpath
// and without VCS stamps, and the version names the last commit outside
// deploy/kubernetes, so that committing the pins does not change what
// they pin. With --pin, the image: lines of deploy/kubernetes are
// rewritten to the new digests (deploy/README.md, "Image").
//
// It lives in tools/ rather than cmd/ because it is a build step, not a
// product binary: `make build` should not ship it, and nothing installed
// on a host runs it.
package main
