package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// Paths inside the daemon image, where the configuration, the doctor and
// the DaemonSet expect them.
const (
	// ImagePrefix is make deps' prefix, reproduced in the image: the
	// doctor's --prefix default and agent.criu (deploy/escape.yaml) name
	// /opt/escape/bin/criu.
	imagePrefix = "/opt/escape"
	sensorBin   = "/usr/local/bin/escape-sensor"
	planeBin    = "/usr/local/bin/escape-plane"
	// sensorPath puts the CRIU wrapper first, as make deps does on
	// containerd's PATH.
	sensorPath = "PATH=/opt/escape/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	planePath  = "PATH=/usr/local/bin"
	// planeUID is the plane image's user: not root, and not a uid a
	// distribution gives out (distroless's "nonroot").
	planeUID = 65532
)

// criuWrapper is make deps' /opt/escape/bin/criu (tools/deps.sh, step 4):
// CRIU from Debian unstable through its own loader and glibc.
func criuWrapper(prefix string) []byte {
	c := prefix + "/criu"
	return []byte(fmt.Sprintf(`#!/bin/sh
# CRIU from Debian unstable, run through its own glibc so the system's stays untouched.
exec "%[1]s/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "%[1]s/usr/lib/x86_64-linux-gnu:%[1]s/lib/x86_64-linux-gnu" "%[1]s/usr/sbin/criu" "$@"
`, c))
}

// machineTools are the programs of the build machine (Debian 12 packages
// that make deps installs) that the daemon execs, by their path in the
// image and the names they are also called by.
type machineTool struct {
	// src is looked up on the machine and followed to the real file.
	src string
	dst string
	// aliases are symlinks to dst in its directory (multi-call programs
	// pick their role from argv[0]).
	aliases []string
}

var sensorTools = []machineTool{
	// The migration guards: `nsenter --net=NS iptables-restore -w` and
	// `iptables -w -C/-D` (migrate/node/network.go); the doctor runs
	// iptables-restore --version. The nft backend: no lock file, so a
	// read-only root file system is no obstacle.
	{src: "/usr/sbin/xtables-nft-multi", dst: "/usr/sbin/xtables-nft-multi",
		aliases: []string{"iptables", "iptables-restore", "iptables-save", "ip6tables", "ip6tables-restore", "ip6tables-save"}},
	{src: "/usr/bin/nsenter", dst: "/usr/bin/nsenter"},
	// The doctor's runc check (agent mode). The node's containerd runs
	// the node's own runc; this one answers the check and serves for
	// `runc --root ... list` when debugging from inside the pod.
	{src: "/usr/sbin/runc", dst: "/usr/sbin/runc"},
}

// xtablesDir holds iptables' match and target extensions, which it
// dlopens (-m comment, -p tcp --tcp-flags).
const xtablesDir = "/usr/lib/x86_64-linux-gnu/xtables"

// busybox is static: /bin/sh for the CRIU wrapper, sleep for the doctor's
// cgroup probe, and a shell to debug with.
const busybox = "/bin/busybox"

// etcFiles adds the account files (root, nobody and the extra user and
// group lines, if any) and the usual mount points.
func etcFiles(t tree, user, group string) {
	t.content("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"+user+"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), 0o644)
	t.content("/etc/group", []byte("root:x:0:\n"+group+"nogroup:x:65534:\n"), 0o644)
	t.mkdir("/tmp", 0o1777, 0, 0)
	for _, d := range []string{"/proc", "/sys", "/dev", "/run", "/etc/escape"} {
		t.mkdir(d, 0o755, 0, 0)
	}
}

// sensorRuntime is the daemon image's first layer: the machine's tools
// with their libraries, busybox, the account files and the mount points.
func sensorRuntime() (tree, error) {
	t := tree{}
	etcFiles(t, "", "")
	var bins []string
	for _, tool := range sensorTools {
		real, err := filepath.EvalSymlinks(tool.src)
		if err != nil {
			return nil, fmt.Errorf("daemon image needs %s (make deps installs it): %w", tool.src, err)
		}
		t.file(tool.dst, real)
		bins = append(bins, real)
		for _, a := range tool.aliases {
			t.symlink(filepath.Join(filepath.Dir(tool.dst), a), filepath.Base(tool.dst))
		}
	}
	exts, err := filepath.Glob(filepath.Join(xtablesDir, "*.so"))
	if err != nil || len(exts) == 0 {
		return nil, fmt.Errorf("daemon image needs iptables' extensions in %s (make deps installs iptables): %v", xtablesDir, err)
	}
	for _, e := range exts {
		t.file(e, e)
	}
	libs, err := closure(append(bins, exts...)...)
	if err != nil {
		return nil, fmt.Errorf("daemon image: %w", err)
	}
	for _, l := range libs {
		t.file(l, l)
	}
	if err := addBusybox(t, "/bin"); err != nil {
		return nil, err
	}
	// The directories the DaemonSet mounts host paths on (deploy/README.md).
	for _, d := range []string{"/var/lib/escape-agent", "/var/lib/escape-sensor", "/run/escape-sensor", "/run/netns",
		"/run/containerd", "/var/lib/containerd", "/etc/escape-tls"} {
		t.mkdir(d, 0o755, 0, 0)
	}
	return t, nil
}

// busyboxApplets are the applets linked in /bin: a shell, what the
// doctor and the CRIU wrapper call, and the usual tools to look around a
// running pod with. Fixed, rather than `busybox --list`, so that the image
// does not change with the machine's busybox build.
var busyboxApplets = []string{"sh", "sleep", "cat", "ls", "ps", "grep", "mount", "umount", "mkdir", "rm", "cp", "mv",
	"ln", "chmod", "echo", "env", "id", "test", "[", "true", "false", "head", "tail", "wc", "sed", "awk", "find", "df",
	"du", "kill", "uname", "readlink", "stat", "ip", "vi", "less", "tr", "cut", "sort", "date"}

func addBusybox(t tree, dir string) error {
	if _, err := os.Stat(busybox); err != nil {
		return fmt.Errorf("daemon image needs a static busybox at %s (make deps installs busybox-static): %w", busybox, err)
	}
	t.file(filepath.Join(dir, "busybox"), busybox)
	for _, a := range busyboxApplets {
		t.symlink(filepath.Join(dir, a), "busybox")
	}
	return nil
}

// sensorCRIU is the second layer: the CRIU closure as make deps unpacked
// it (binary, libraries, their loader and Debian's copyright files) and
// the wrapper that runs it.
func sensorCRIU(criuDir string) (tree, error) {
	if _, err := os.Stat(filepath.Join(criuDir, "usr/sbin/criu")); err != nil {
		return nil, fmt.Errorf("daemon image needs the CRIU closure of make deps in %s: %w", criuDir, err)
	}
	t := tree{}
	if err := t.copyTree(criuDir, imagePrefix+"/criu"); err != nil {
		return nil, fmt.Errorf("daemon image: CRIU closure: %w", err)
	}
	t.content(imagePrefix+"/bin/criu", criuWrapper(imagePrefix), 0o755)
	return t, nil
}

// planeBase is the plane image's first layer: account files, and the
// state and socket directories of deploy/escape.yaml's defaults owned by
// the plane's user (a volume mounted over them brings its own).
func planeBase() tree {
	t := tree{}
	etcFiles(t, fmt.Sprintf("escape:x:%d:%d:escape-plane:/var/lib/escape-plane:/bin/false\n", planeUID, planeUID),
		fmt.Sprintf("escape:x:%d:\n", planeUID))
	t.mkdir("/var/lib/escape-plane", 0o700, planeUID, planeUID)
	t.mkdir("/run/escape-plane", 0o700, planeUID, planeUID)
	t.mkdir("/etc/escape-tls", 0o755, 0, 0)
	return t
}

// binary is a layer of one ESCAPE binary.
func binary(src, dst string) tree { return tree{clean(dst): {src: src, mode: 0o755}} }
