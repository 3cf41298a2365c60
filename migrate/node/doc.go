// Package node is the host-local half of every ESCAPE action: a Node is
// one host's agent, and carries out each step of a checkpoint, a rollback,
// a restart, a replication or a migration against that host's own
// containerd, CRIU and netlink. It implements migrate.Host; the gRPC
// server exposes it to the plane, whose client implements the same
// interface remotely. One Node is one host.
//
// Every step is idempotent and says what it did (StepResult.Did:
// "started", "already running", "exists", "absent"...), so that a plane
// that crashed, or whose answer was lost, can ask again. Bad input (an id,
// an image name, a reference, an image that is not there) is answered
// before anything is touched, and errors name the step, the container and
// the host, with the tail of CRIU's log when CRIU failed.
//
// What the package keeps, and why:
//
//   - Containers run from an OCI image in the host's content store
//     (EnsureImage pulls it, or imports it from a peer that offered it),
//     each on a snapshot of its own, in a network namespace named per host
//     (CtNetns) so that a source and a destination copy coexist during a
//     migration. The interface keeps the container's MAC wherever it runs.
//     runc gets a root of its own per host: runc keys state by container
//     id alone, and hosts that share a kernel would clobber each other's.
//   - CRIU's options reach it through a configuration file per container
//     that the node writes (org.criu.config): runc does not forward
//     tcp-established on restore, and the file applies to dump and restore
//     alike. A single restore adds tcp-close (a rollback) or lazy-pages and
//     takes it out before anything else can dump; New takes out whatever a
//     crashed agent left.
//   - The dump is asked of containerd's task service directly, not through
//     the client's Task.Checkpoint, which pauses the task first and so
//     lengthens the frozen window by CRIU's start-up (checkpoint.go). It is
//     written beside its place and renamed there once whole.
//   - Mounts are kept cheap for CRIU: no /run tmpfs, and runc's masked
//     directories are external mounts bound on restore to an empty tmpfs
//     with a read-only superblock (mounts.go).
//   - CRIU's nftables network lock is one table per dump that only that
//     dump's restore removes; a rollback clears every one before it
//     restores (netlock.go), a migration never does.
//   - A migration destination is staged before the source freezes (Stage):
//     the shim, the bundle and the guards exist already, so the frozen
//     window keeps the dump, the address move and runc's restore. The
//     guards drop the destination's resets until its sockets are back, and
//     hold a lazily restored copy off the network until its last page is
//     in (network.go).
//   - Lazy restore (lazy.go) resumes the copy before its memory is in and
//     fills it through userfaultfd. A daemon that dies or stalls is
//     noticed, CRIU is stopped so that runc fails and cleans up, the copy
//     is killed, and what a killed CRIU leaves (mounts in its work
//     directory, tasks in the cgroup: leftovers.go) is cleaned up.
//   - Addresses are held under a kernel-enforced lease (package arp): the
//     fence is in the namespace before any address, an address is added
//     only under a granted lease, and the node refuses a generation older
//     than the highest it has recorded (lease.go), so a stale plane cannot
//     bring an address back.
//   - The plane names images, never paths: an image lives on shared
//     storage when the host has it, in the node's state otherwise, and
//     moves between hosts by Offer and Fetch (offers.go). CRIU's work
//     directories, where the lazy-pages socket lives, are always local.
//   - A dump can carry the container's root filesystem changes (rootfs.go),
//     applied to the new container before its task starts: without them a
//     copy on another host loses what it wrote, and CRIU fails to restore
//     a file it holds open.
package node
