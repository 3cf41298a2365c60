package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// enterMain is `scenarios enter`: join a network namespace, then (if asked)
// a cgroup, drop to a user and exec the command. Joining the cgroup last
// keeps the namespace switch out of the recording: what the sensor sees of
// the helper is only the credential change and the execve, less than a
// `docker exec` shows.
func enterMain(args []string) error {
	fs := flag.NewFlagSet("enter", flag.ContinueOnError)
	netns := fs.String("netns", "", "network namespace name (ip netns)")
	cgroup := fs.String("cgroup", "", "cgroup2 directory to join (empty: stay)")
	username := fs.String("user", "", "user to run as (empty: stay)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	if *netns == "" || len(argv) == 0 {
		return errors.New("enter: want -netns NAME [-cgroup DIR] [-user U] -- COMMAND...")
	}
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("enter: %w", err)
	}
	// setns applies to this thread only; execve from it carries the
	// namespace into the new image.
	runtime.LockOSThread()
	fd, err := unix.Open(filepath.Join("/run/netns", *netns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("enter: open netns %s: %w", *netns, err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter: setns %s: %w", *netns, err)
	}
	unix.Close(fd)
	var uid, gid int = -1, -1
	if *username != "" {
		u, err := user.Lookup(*username)
		if err != nil {
			return fmt.Errorf("enter: %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	if *cgroup != "" {
		// Joined after setns and before dropping root (cgroup.procs
		// is root's to write).
		procs := filepath.Join(*cgroup, "cgroup.procs")
		if err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return fmt.Errorf("enter: join cgroup %s: %w", *cgroup, err)
		}
	}
	if uid >= 0 {
		if err := unix.Setgroups([]int{gid}); err != nil {
			return fmt.Errorf("enter: setgroups: %w", err)
		}
		if err := unix.Setresgid(gid, gid, gid); err != nil {
			return fmt.Errorf("enter: setgid %d: %w", gid, err)
		}
		if err := unix.Setresuid(uid, uid, uid); err != nil {
			return fmt.Errorf("enter: setuid %d: %w", uid, err)
		}
	}
	return unix.Exec(bin, argv, os.Environ())
}
