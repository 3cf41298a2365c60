package migrate_test

// The fault matrix's redis client: one kept connection whose counter
// must carry on across every case.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/tools/lab"
)

// ---- the redis client ----

// redisClient keeps a connection to the service from the client
// namespace and sends INCR after INCR on it; if the connection breaks, it
// opens another. Each answer must be the last one plus one (plus two if
// the request before went unanswered: it may have been applied).
type redisClient struct {
	inv  *lab.Inventory
	ip   netip.Addr
	stop chan struct{}
	done chan struct{}

	mu         sync.Mutex
	last       int64
	lastOK     time.Time
	maxGap     time.Duration
	gapAt      time.Time
	reconnects int
	breaks     []string
	bad        []string
}

func startRedis(t *testing.T, inv *lab.Inventory, ip netip.Addr) *redisClient {
	c := &redisClient{inv: inv, ip: ip, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	t.Cleanup(c.halt)
	return c
}

func (c *redisClient) dial() (net.Conn, error) {
	var conn net.Conn
	err := arp.Do(c.inv.Client.Netns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(c.ip, 6379).String(), time.Second)
		return err
	})
	return conn, err
}

func incr(conn net.Conn, r *bufio.Reader, timeout time.Duration) (int64, error) {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	if _, err := io.WriteString(conn, "*2\r\n$4\r\nINCR\r\n$3\r\nctr\r\n"); err != nil {
		return 0, err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, ":") {
		return 0, fmt.Errorf("redis answered %q", line)
	}
	return strconv.ParseInt(strings.TrimSpace(line[1:]), 10, 64)
}

func (c *redisClient) run() {
	defer close(c.done)
	var conn net.Conn
	var r *bufio.Reader
	// lost counts the requests that went unanswered and may still be
	// applied: one queued in a dumped socket is served when its copy is
	// restored, possibly after the next connection's first request.
	lost := 0
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
		if conn == nil {
			var err error
			if conn, err = c.dial(); err != nil {
				conn = nil
				time.Sleep(50 * time.Millisecond)
				continue
			}
			r = bufio.NewReader(conn)
			c.mu.Lock()
			if !c.lastOK.IsZero() {
				c.reconnects++
			}
			c.mu.Unlock()
		}
		// Long enough to outlast a host's lease lapse and a restore: a
		// kept connection is given every chance to come back.
		v, err := incr(conn, r, 40*time.Second)
		now := time.Now()
		c.mu.Lock()
		if err != nil {
			c.breaks = append(c.breaks, fmt.Sprintf("%s: %v", now.Format("15:04:05.000"), err))
			conn.Close()
			conn = nil
			lost++
			c.mu.Unlock()
			continue
		}
		if c.lastOK.IsZero() {
			if v < 1 {
				c.bad = append(c.bad, fmt.Sprintf("first INCR gave %d", v))
			}
		} else if skipped := v - c.last - 1; skipped < 0 || skipped > int64(lost) {
			c.bad = append(c.bad, fmt.Sprintf("%s: INCR gave %d after %d (requests unanswered before: %d)", now.Format("15:04:05.000"), v, c.last, lost))
		} else {
			lost -= int(skipped)
		}
		if !c.lastOK.IsZero() && now.Sub(c.lastOK) > c.maxGap {
			c.maxGap, c.gapAt = now.Sub(c.lastOK), now
		}
		c.last, c.lastOK = v, now
		c.mu.Unlock()
	}
}

func (c *redisClient) count() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// gap is the longest time between two answers so far.
func (c *redisClient) gap() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxGap
}

func (c *redisClient) resetGap() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxGap = 0
}

func (c *redisClient) waitCount(t *testing.T, n int64, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); c.count() < n; {
		if time.Now().After(end) {
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("redis counter at %d, want %d within %v; breaks %v", c.last, n, d, c.breaks)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *redisClient) halt() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	<-c.done
}

func (c *redisClient) check(t *testing.T) {
	t.Helper()
	c.halt()
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Logf("redis client: counter %d, longest gap %v (at %s), %d reconnections, breaks %v", c.last, c.maxGap.Round(time.Millisecond),
		c.gapAt.Format("15:04:05.000"), c.reconnects, c.breaks)
	if len(c.bad) > 0 {
		t.Errorf("invariant broken: the counter did not go on: %v", c.bad)
	}
}
