package plane_test

// What a user does on a lab host, with ctr and ip, and an observer of the
// gratuitous ARP a migration sends: the adoption lab test's helpers.

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/tools/lab"
)

// ctrBin is the containerd client `make deps` installs.
const ctrBin = "/opt/escape/bin/ctr"

// userNamespace is the containerd namespace the test's user runs
// containers in, as nerdctl does; the agents adopt from it.
const userNamespace = "default"

// inHost runs a command on a lab host, failing the test on error.
func inHost(ctx context.Context, t *testing.T, inv *lab.Inventory, host string, args ...string) string {
	t.Helper()
	out, err := lab.Command(ctx, inv, host, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s on %s: %v: %s", strings.Join(args, " "), host, err, out)
	}
	return string(out)
}

// userNetns is what a user makes for a container of its own address: a
// named network namespace on a host with a veth plugged into the host's
// bridge, the address and MAC on it.
func userNetns(ctx context.Context, t *testing.T, inv *lab.Inventory, host, name, veth string, ip netip.Prefix, mac string) {
	t.Helper()
	h, _ := inv.Host(host)
	for _, args := range [][]string{
		{"ip", "netns", "add", name},
		// The host's end gets a MAC above the bridge's: a port with a lower
		// one would become the bridge's MAC while it is plugged in, and
		// the neighbours' caches would point at a MAC the host no longer
		// has once it is gone.
		{"ip", "link", "add", veth, "address", "fe" + mac[2:], "type", "veth", "peer", "name", veth + "c"},
		{"ip", "link", "set", veth, "master", h.Bridge, "up"},
		{"ip", "link", "set", veth + "c", "netns", name},
		{"ip", "-n", name, "link", "set", veth + "c", "name", "eth0", "address", mac},
		{"ip", "-n", name, "addr", "add", ip.String(), "dev", "eth0"},
		{"ip", "-n", name, "link", "set", "eth0", "up"},
		{"ip", "-n", name, "link", "set", "lo", "up"},
	} {
		inHost(ctx, t, inv, host, args...)
	}
	t.Cleanup(func() {
		_ = lab.Command(context.Background(), inv, host, "ip", "link", "del", veth).Run()
		_ = lab.Command(context.Background(), inv, host, "ip", "netns", "del", name).Run()
	})
}

// ctrRun starts a container as a user would, with ctr, in the user's
// namespace, and removes it at the end of the test from every host.
func ctrRun(ctx context.Context, t *testing.T, inv *lab.Inventory, host, id string, flags ...string) {
	t.Helper()
	ctrRunCmd(ctx, t, inv, host, id, flags, "/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no")
}

// ctrRunCmd is ctrRun with the container's command.
func ctrRunCmd(ctx context.Context, t *testing.T, inv *lab.Inventory, host, id string, flags []string, cmd ...string) {
	t.Helper()
	args := append([]string{ctrBin, "-n", userNamespace, "run", "-d", "--null-io"}, flags...)
	args = append(append(args, lab.ImageRef("redis"), id), cmd...)
	inHost(ctx, t, inv, host, args...)
	t.Cleanup(func() {
		for _, h := range inv.Hosts {
			_ = lab.Command(context.Background(), inv, h.Name, ctrBin, "-n", userNamespace, "task", "kill", "-s", "SIGKILL", id).Run()
			time.Sleep(200 * time.Millisecond)
			_ = lab.Command(context.Background(), inv, h.Name, ctrBin, "-n", userNamespace, "task", "rm", "-f", id).Run()
			_ = lab.Command(context.Background(), inv, h.Name, ctrBin, "-n", userNamespace, "container", "rm", id).Run()
		}
	})
}

// userTask is the state of the user's container id on host as ctr lists it
// ("" when it has no task, or is not there).
func userTask(ctx context.Context, t *testing.T, inv *lab.Inventory, host, id string) string {
	t.Helper()
	for _, line := range strings.Split(inHost(ctx, t, inv, host, ctrBin, "-n", userNamespace, "task", "ls"), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// userContainer says whether ctr lists container id on host.
func userContainer(ctx context.Context, t *testing.T, inv *lab.Inventory, host, id string) bool {
	t.Helper()
	for _, line := range strings.Split(inHost(ctx, t, inv, host, ctrBin, "-n", userNamespace, "container", "ls", "-q"), "\n") {
		if strings.TrimSpace(line) == id {
			return true
		}
	}
	return false
}

// garpWatch records the gratuitous ARP for an address seen from a lab
// namespace's interface.
type garpWatch struct {
	where string
	fd    int
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	seen  []string // sender MACs of gratuitous ARP for ip
}

func watchGARP(t *testing.T, where, netns, link string, ip netip.Addr) *garpWatch {
	t.Helper()
	li, err := arp.Link(arp.Endpoint{Netns: netns, Link: link})
	if err != nil {
		t.Fatal(err)
	}
	w := &garpWatch{where: where, fd: -1, stop: make(chan struct{})}
	const ethPAll = 0x0003
	proto := uint16(ethPAll<<8 | ethPAll>>8)
	err = arp.Do(netns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		w.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: li.Index}); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		if w.fd >= 0 {
			unix.Close(w.fd)
		}
		t.Fatalf("ARP observer in %s: %v", where, err)
	}
	want := ip.As4()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		buf := make([]byte, 2048)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(w.fd, buf, 0)
			// Ethernet (14) + ARP for IPv4 (28): ethertype 0x0806, sender
			// IP at 28, target IP at 38; gratuitous when they are equal.
			if err != nil || n < 42 || buf[12] != 0x08 || buf[13] != 0x06 {
				continue
			}
			if [4]byte(buf[28:32]) == want && [4]byte(buf[38:42]) == want {
				w.mu.Lock()
				w.seen = append(w.seen, net.HardwareAddr(buf[22:28]).String())
				w.mu.Unlock()
			}
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *garpWatch) close() {
	select {
	case <-w.stop:
		return
	default:
	}
	close(w.stop)
	w.wg.Wait()
	unix.Close(w.fd)
}

func (w *garpWatch) macs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen)
}
