package labtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/tools/lab"
)

// A test that must run where a host's agent runs (its containerd's
// snapshots, its /run/netns, its cgroups as the host sees them) re-executes
// its own test binary inside the host: InHost runs it there, as a child
// that runs only the calling test. The lab's directory is hidden inside a
// host, and so is /run/netns of the root namespace, so the parent hands the
// child the inventory (as JSON) and the client's network namespace (as an
// open descriptor, fd 3) through its environment.
const (
	envInHost    = "ESCAPE_IN_HOST"
	envInventory = "ESCAPE_LAB_INVENTORY"
	envClientFD  = "ESCAPE_CLIENT_NETNS_FD"
	// TestsDir is where a host sees the test binaries InHost copies there:
	// its /var/lib/escape/tests (the root namespace's <host.Dir>/state/tests).
	TestsDir = "/var/lib/escape/tests"
)

// Child is the host this process runs inside as InHost's child ("" in the
// parent, in the root namespace).
func Child() string { return os.Getenv(envInHost) }

// childInventory is the inventory the parent handed the child.
func childInventory(t testing.TB) *lab.Inventory {
	t.Helper()
	var inv lab.Inventory
	if err := json.Unmarshal([]byte(os.Getenv(envInventory)), &inv); err != nil {
		t.Fatalf("the lab inventory handed to the child on %s: %v", Child(), err)
	}
	return &inv
}

var copied sync.Map // host -> path of the binary inside, once per parent

// InHost runs the calling test inside host. In the parent it copies the test
// binary where the host sees it, runs it there (lab.Command) with only this
// test selected, streams its output into t.Log, fails t unless the child
// ran and passed the test, and returns false: the caller returns. In the
// child (inside host) it returns true and the test goes on there. env adds
// "KEY=value" entries to the child's environment (what the parent prepared
// for it). The child runs in host's mount and network namespaces.
func InHost(t *testing.T, inv *lab.Inventory, host string, env ...string) bool {
	t.Helper()
	if c := Child(); c != "" {
		if c != host {
			t.Fatalf("child runs inside %s, the test wants %s", c, host)
		}
		return true
	}
	h, ok := inv.Host(host)
	if !ok {
		t.Fatalf("no host %s in the lab", host)
	}
	bin, err := copyBinary(h)
	if err != nil {
		t.Fatalf("copy the test binary into %s: %v", host, err)
	}
	invJSON, err := json.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	client, err := os.Open(arp.NetnsPath(inv.Client.Netns))
	if err != nil {
		t.Fatalf("open the client's namespace: %v", err)
	}
	defer client.Close()
	ctx := context.Background()
	timeout := 10 * time.Minute
	if d, ok := t.Deadline(); ok {
		timeout = time.Until(d) - 10*time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := lab.Command(ctx, inv, host, bin, "-test.run", runPattern(t.Name()), "-test.v", "-test.count=1",
		"-test.timeout", timeout.Round(time.Second).String())
	cmd.Env = append(append(os.Environ(), envInHost+"="+host, envInventory+"="+string(invJSON), envClientFD+"=3"), env...)
	cmd.ExtraFiles = []*os.File{client} // fd 3 in the child
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("run the test inside %s: %v", host, err)
	}
	passed := passLine(t.Name())
	var pass bool
	sc := bufio.NewScanner(out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		pass = pass || passed.MatchString(line)
		t.Log(host + "| " + line)
	}
	_, _ = io.Copy(io.Discard, out)
	err = cmd.Wait()
	switch {
	case err != nil:
		t.Errorf("the test inside %s failed: %v", host, err)
	case !pass:
		t.Errorf("the test inside %s did not run %s (no PASS line)", host, t.Name())
	}
	return false
}

// copyBinary copies this test binary into host's tests directory, once per
// host and parent, and returns the path the host sees it at.
func copyBinary(h lab.Host) (string, error) {
	if p, ok := copied.Load(h.Name); ok {
		return p.(string), nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	name := filepath.Base(self) + "-" + strconv.Itoa(os.Getpid())
	dir := filepath.Join(h.Dir, "state", "tests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Binaries of earlier runs go: one per test run is enough.
	old, _ := filepath.Glob(filepath.Join(dir, filepath.Base(self)+"-*"))
	for _, o := range old {
		_ = os.Remove(o)
	}
	src, err := os.Open(self)
	if err != nil {
		return "", err
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return "", err
	}
	if err := dst.Close(); err != nil {
		return "", err
	}
	inside := filepath.Join(TestsDir, name)
	copied.Store(h.Name, inside)
	return inside, nil
}

// runPattern selects exactly the test (or subtest) called name.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// passLine matches go test -v's line for name passing.
func passLine(name string) *regexp.Regexp {
	return regexp.MustCompile(`^\s*--- PASS: ` + regexp.QuoteMeta(name) + ` \(`)
}

// doInClient runs fn on a thread inside the client's network namespace:
// by name from the root namespace, through the descriptor the parent
// handed over inside a host (whose /run/netns does not show it).
func doInClient(inv *lab.Inventory, fn func() error) error {
	fd := os.Getenv(envClientFD)
	if Child() == "" || fd == "" {
		return arp.Do(inv.Client.Netns, fn)
	}
	n, err := strconv.Atoi(fd)
	if err != nil {
		return fmt.Errorf("client netns descriptor %q: %w", fd, err)
	}
	errc := make(chan error, 1)
	go func() {
		// Locked and never unlocked: if switching back fails, the thread
		// dies with the goroutine instead of leaking the namespace.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(netns.NsHandle(n)); err != nil {
			errc <- fmt.Errorf("enter the client's netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
