package arp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NetnsDir is where named network namespaces are bind-mounted, as by
// `ip netns add`.
const NetnsDir = "/run/netns"

// Endpoint names an interface inside a network namespace. An empty Netns
// means the namespace of the calling process.
type Endpoint struct {
	Netns string `json:"netns"`
	Link  string `json:"link"`
}

func (e Endpoint) String() string {
	ns := e.Netns
	if ns == "" {
		ns = "<current>"
	}
	return ns + "/" + e.Link
}

func validNetnsName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 200 {
		return fmt.Errorf("invalid network namespace name %q", name)
	}
	return nil
}

// NetnsPath is the bind-mount path of the named namespace.
func NetnsPath(name string) string { return filepath.Join(NetnsDir, name) }

// NetnsExists reports whether the named namespace exists.
func NetnsExists(name string) bool {
	if validNetnsName(name) != nil {
		return false
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		return false
	}
	_ = h.Close()
	return true
}

// CreateNetns creates a named network namespace (like `ip netns add`)
// without moving the caller into it. Its loopback is brought up.
func CreateNetns(name string) error {
	if err := validNetnsName(name); err != nil {
		return err
	}
	if NetnsExists(name) {
		return fmt.Errorf("create netns %s: %w", name, os.ErrExist)
	}
	errc := make(chan error, 1)
	// The thread that enters the new namespace is locked and never
	// unlocked, so Go retires it rather than reusing it elsewhere.
	go func() {
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err != nil {
			errc <- fmt.Errorf("create netns %s: %w", name, err)
			return
		}
		defer h.Close()
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			errc <- fmt.Errorf("create netns %s: loopback up: %w", name, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		_ = DeleteNetns(name)
		return err
	}
	return nil
}

// DeleteNetns removes a named network namespace. Removing one that does not
// exist is not an error.
func DeleteNetns(name string) error {
	if err := validNetnsName(name); err != nil {
		return err
	}
	if _, err := os.Stat(NetnsPath(name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		// A namespace file whose bind mount is already gone (after a crash)
		// cannot be unmounted, but must still be removed.
		if rmErr := os.Remove(NetnsPath(name)); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			return fmt.Errorf("delete netns %s: %w", name, err)
		}
	}
	return nil
}

// Handle opens a netlink handle bound to the named namespace ("" is the
// caller's). Close it when done.
func Handle(name string) (*netlink.Handle, error) {
	if name == "" {
		return netlink.NewHandle()
	}
	if err := validNetnsName(name); err != nil {
		return nil, err
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in netns %s: %w", name, err)
	}
	return h, nil
}

// Do runs fn on an OS thread that has entered the named namespace. Sockets
// fn opens stay in that namespace after Do returns.
func Do(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	if err := validNetnsName(name); err != nil {
		return err
	}
	target, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		// Locked and never unlocked: if switching back fails, the thread
		// dies with the goroutine instead of leaking the namespace.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
