package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/arp"
)

// A lab machine's mount namespace is made once by Up with unshare and kept
// by its bind-mounted namespace file, so that every command the lab or a
// test runs there (nsenter --mount) sees the same private /run, /tmp,
// /etc/escape, /var/lib/escape, /var/log/escape and /var/lib/containerd:
// what one host writes there no other host, nor the plane, can see.

// machineSetup is the script run inside a new mount namespace (private
// propagation) to make it a machine of its own. Its arguments, from $1:
// lab root, shared dir to keep ("" for none), then pairs of source and
// target directories to bind.
const machineSetup = `set -e
root="$1"; shared="$2"; shift 2
# Mounts copied from the root namespace that would keep other lab
# namespaces (their namespace files, named netns) alive, or show them:
# everything under /run goes, lazily, before /run is replaced.
awk '$5 ~ "^/run/" {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
while [ $# -ge 2 ]; do mkdir -p "$2"; mount --bind "$1" "$2"; shift 2; done
mount -t tmpfs -o mode=0755,size=512m escape-lab-run /run
mkdir -p /run/escape /run/netns /run/lock
mount -t tmpfs -o mode=1777,size=512m escape-lab-tmp /tmp
if [ -n "$shared" ]; then mkdir -p /run/.shared && mount --bind "$shared" /run/.shared; fi
# The rest of the lab's directory (other hosts, the CA key) is hidden, and
# so is any other lab's on this machine.
awk '$5 ~ "^/var/lib/[^/]*-lab/" {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
mount -t tmpfs -o mode=0755,size=1m escape-lab-hide "$root"
for d in /var/lib/*-lab; do
  if [ -d "$d" ] && [ "$d" != "$root" ]; then mount -t tmpfs -o mode=0755,size=1m escape-lab-hide "$d"; fi
done
if [ -n "$shared" ]; then mkdir -p "$shared" && mount --move /run/.shared "$shared" && rmdir /run/.shared; fi
`

// makeMachine creates the mount namespace bound at nsFile. binds maps a
// directory of the lab (root namespace) to where the machine sees it.
func makeMachine(ctx context.Context, c config, nsFile, shared string, binds [][2]string) error {
	if err := os.WriteFile(nsFile, nil, 0o600); err != nil {
		return fmt.Errorf("create mount namespace file %s: %w", nsFile, err)
	}
	args := []string{"--mount=" + nsFile, "--propagation", "private", "--", "sh", "-c", machineSetup, "machine", c.root, shared}
	for _, b := range binds {
		if err := os.MkdirAll(b[0], 0o755); err != nil {
			return fmt.Errorf("make %s: %w", b[0], err)
		}
		args = append(args, b[0], b[1])
	}
	if out, err := exec.CommandContext(ctx, "unshare", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("make mount namespace %s: %v: %s", nsFile, err, out)
	}
	return nil
}

// privateNSDir makes dir a private mount point of its own: a mount
// namespace file may only be bound under a mount that does not propagate.
func privateNSDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("make %s: %w", dir, err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	return nil
}

// Where names a lab machine for Command: a host's name, "plane" or "client".
const (
	WherePlane  = "plane"
	WhereClient = "client"
)

// nsenterArgs are nsenter's namespace options for where.
func (inv *Inventory) nsenterArgs(where string) ([]string, error) {
	switch where {
	case WherePlane:
		return []string{"--mount=" + inv.Plane.MountNS, "--net=" + arp.NetnsPath(inv.Plane.Netns)}, nil
	case WhereClient:
		// The client is a network namespace only: a user on the network.
		return []string{"--net=" + arp.NetnsPath(inv.Client.Netns)}, nil
	}
	if h, ok := inv.Host(where); ok {
		return []string{"--mount=" + h.MountNS, "--net=" + arp.NetnsPath(h.Netns)}, nil
	}
	names := []string{WherePlane, WhereClient}
	for _, h := range inv.Hosts {
		names = append(names, h.Name)
	}
	return nil, fmt.Errorf("no lab machine %q (have %s)", where, strings.Join(names, ", "))
}

// Command returns a command that runs name with args on the lab machine
// where (a host's name, "plane" or "client"), in its namespaces, as on a
// machine of its own. An unknown where gives a command whose Run fails.
func Command(ctx context.Context, inv *Inventory, where, name string, args ...string) *exec.Cmd {
	ns, err := inv.nsenterArgs(where)
	if err != nil {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Err = err
		return cmd
	}
	return exec.CommandContext(ctx, "nsenter", append(append(ns, "--", name), args...)...)
}

// mountNSFiles lists the lab's mount namespace files that exist.
func mountNSFiles(c config) []string {
	files, _ := filepath.Glob(filepath.Join(c.nsDir(), "*"))
	return files
}

// nsInode is the inode of the namespace bound at path (0 if none is).
func nsInode(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil || st.Dev == 0 {
		return 0
	}
	var fs unix.Statfs_t
	if unix.Statfs(path, &fs) != nil || fs.Type != unix.NSFS_MAGIC {
		return 0
	}
	return st.Ino
}
