// Package capmeasure measures which Linux capabilities each step of the
// per-host daemon (escape-sensor run: the sensor and the node agent)
// needs, for real, on a lab host: it runs the daemon under setpriv with a
// reduced bounding set (util-linux, installed by make deps), asks it for
// every step as the plane does, and records the first step that fails and
// its error. docs/operations.md, "Capabilities", holds the table it
// prints; deploy/systemd's tests check the units against that table.
//
//	make build && ESCAPE_LAB=escpriv go run ./tools/capmeasure/capmeasure [--host h1] [--out out/capmeasure]
//	ESCAPE_LAB=escpriv go run ./tools/capmeasure/capmeasure --once sys_admin,net_admin [--keep net_admin]
//
// Two sweeps, each taking every capability away in turn and for good when
// every step still passes (broad capabilities first, so that a narrow one
// is kept where it suffices):
//
//  1. the bounding set the daemon starts under (nothing dropped after the
//     load): the systemd unit's CapabilityBoundingSet;
//  2. with the daemon started under that set, the set it keeps once its
//     BPF programs are attached (--keep-capabilities): the default of
//     keep_capabilities.
//
// It takes 10 to 15 minutes (each run starts the daemon and a container,
// checkpoints and restores it). It needs the lab up (escape-lab up) and
// replaces the host's agent while it runs, putting it back after each run.
package capmeasure
