package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/escape-mtd/escape/arp"
	"golang.org/x/sys/unix"
)

// prober is a client in the lab's client namespace that sends one request
// every 2 ms on a persistent connection and records when answers arrive.
// On an error it reconnects (and counts whether the error was a reset).
type prober struct {
	ns, addr string
	mu       sync.Mutex
	answers  []time.Time
	resets   []time.Time
	stop     chan struct{}
	done     chan struct{}
}

func newProber(ns, addr string) *prober {
	p := &prober{ns: ns, addr: addr, stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *prober) loop() {
	defer close(p.done)
	var c net.Conn
	var r *bufio.Reader
	for {
		select {
		case <-p.stop:
			if c != nil {
				c.Close()
			}
			return
		default:
		}
		if c == nil {
			err := arp.Do(p.ns, func() error {
				var err error
				c, err = net.DialTimeout("tcp4", p.addr, 200*time.Millisecond)
				return err
			})
			if err != nil {
				c = nil
				time.Sleep(5 * time.Millisecond)
				continue
			}
			r = bufio.NewReader(c)
		}
		c.SetDeadline(time.Now().Add(60 * time.Second))
		_, err := c.Write([]byte("x\n"))
		if err == nil {
			_, err = r.ReadString('\n')
		}
		if err != nil {
			p.mu.Lock()
			if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrDeadlineExceeded) || err.Error() == "EOF" {
				p.resets = append(p.resets, time.Now())
			}
			if os.Getenv("PLANEBENCH_DEBUG") != "" {
				fmt.Fprintf(os.Stderr, "  probe: %s: %v\n", time.Now().Format("15:04:05.000"), err)
			}
			p.mu.Unlock()
			c.Close()
			c = nil
			continue
		}
		p.mu.Lock()
		p.answers = append(p.answers, time.Now())
		p.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
}

func (p *prober) close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *prober) waitReady(d time.Duration) error {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		p.mu.Lock()
		n := len(p.answers)
		p.mu.Unlock()
		if n >= 10 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no answers from %s within %v", p.addr, d)
}

// gap waits for an answer after `to` and returns the longest interval
// between consecutive answers from the last one before `from` to the first
// after `to`, and how many connection resets happened in between.
func (p *prober) gap(from, to time.Time) (time.Duration, int, error) {
	end := time.Now().Add(60 * time.Second)
	for {
		p.mu.Lock()
		last := time.Time{}
		if n := len(p.answers); n > 0 {
			last = p.answers[n-1]
		}
		p.mu.Unlock()
		if last.After(to) {
			break
		}
		if time.Now().After(end) {
			return 0, 0, fmt.Errorf("no answer within 60s after the operation")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var prev, worstFrom time.Time
	var worst time.Duration
	for _, a := range p.answers {
		if a.Before(from) {
			prev = a
			continue
		}
		if !prev.IsZero() && a.Sub(prev) > worst {
			worst, worstFrom = a.Sub(prev), prev
		}
		prev = a
		if a.After(to) {
			break
		}
	}
	if os.Getenv("PLANEBENCH_DEBUG") != "" && !worstFrom.IsZero() {
		fmt.Fprintf(os.Stderr, "  probe: longest gap %s .. %s\n", worstFrom.Format("15:04:05.000"), worstFrom.Add(worst).Format("15:04:05.000"))
	}
	resets := 0
	for _, r := range p.resets {
		if !r.Before(from) && !r.After(prev) {
			resets++
		}
	}
	return worst, resets, nil
}

// closeInherited marks every file descriptor this process inherited
// beyond the standard three close-on-exec, so that none reaches the
// processes it starts: a descriptor of the root namespace's mounts in a
// bare process on a lab host would make CRIU refuse to dump it.
func closeInherited() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}

func setSubreaper() error { return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }

func reap(pid int) error {
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		return fmt.Errorf("reap %d: %w", pid, err)
	}
	return nil
}
