package labtest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/tools/lab"
)

// Redis is a minimal redis client living in the lab's client namespace:
// tests hold one connection open across checkpoints, rollbacks and
// migrations and watch that it is neither reset nor loses state.
type Redis struct {
	c net.Conn
	r *bufio.Reader
}

// DialRedis connects from the client namespace to redis at ip:6379,
// retrying for up to wait while the service comes up. Inside a host
// (InHost), whose /run/netns does not show the client's namespace, it
// enters it through the descriptor the parent handed over: the client
// stays a user elsewhere on the network, not a process of the host.
func DialRedis(t testing.TB, inv *lab.Inventory, ip netip.Addr, wait time.Duration) *Redis {
	t.Helper()
	var c net.Conn
	var err error
	for end := time.Now().Add(wait); ; {
		err = doInClient(inv, func() error {
			var err error
			c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(ip, 6379).String(), time.Second)
			return err
		})
		if err == nil || time.Now().After(end) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("dial redis at %v: %v", ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return &Redis{c: c, r: bufio.NewReader(c)}
}

// Incr sends INCR key and returns the new value.
func (rc *Redis) Incr(key string, timeout time.Duration) (int64, error) {
	if err := rc.c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	if _, err := fmt.Fprintf(rc.c, "*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n", len(key), key); err != nil {
		return 0, err
	}
	line, err := rc.r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, ":") {
		return 0, fmt.Errorf("redis answered %q", line)
	}
	return strconv.ParseInt(strings.TrimSpace(line[1:]), 10, 64)
}

// Set sends SET key value.
func (rc *Redis) Set(key string, value []byte, timeout time.Duration) error {
	if err := rc.c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(rc.c, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n", len(key), key, len(value)); err != nil {
		return err
	}
	if _, err := rc.c.Write(value); err != nil {
		return err
	}
	if _, err := rc.c.Write([]byte("\r\n")); err != nil {
		return err
	}
	line, err := rc.r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+OK" {
		return fmt.Errorf("redis answered %q", line)
	}
	return nil
}

// Get sends GET key and returns the value (nil if the key is missing).
func (rc *Redis) Get(key string, timeout time.Duration) ([]byte, error) {
	if err := rc.c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(rc.c, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(key), key); err != nil {
		return nil, err
	}
	line, err := rc.r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "$") {
		return nil, fmt.Errorf("redis answered %q", line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < -1 || n > 512<<20 {
		return nil, fmt.Errorf("redis answered a bulk length %q", line)
	}
	if n == -1 {
		return nil, nil
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(rc.r, buf); err != nil {
		return nil, err
	}
	return buf[:n], nil
}
