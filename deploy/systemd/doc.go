// Package systemd holds the systemd units of the two daemons. It has no
// code: its tests parse the units, check what the daemons need from them,
// and run `systemd-analyze verify` on them where that tool exists.
package systemd
