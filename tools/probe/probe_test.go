package probe

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRedis answers SET, GET and INCR. Tests freeze it (answers wait) and
// roll it back (connections close, the counter goes back).
type fakeRedis struct {
	ln net.Listener

	mu      sync.Mutex
	kv      map[string]string
	freeze  time.Duration
	conns   []net.Conn
	pending chan struct{}
}

func newFake(t *testing.T) *fakeRedis {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRedis{ln: ln, kv: map[string]string{}}
	t.Cleanup(func() { ln.Close() })
	go f.serve()
	return f
}

func (f *fakeRedis) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		go f.handle(c)
	}
}

func (f *fakeRedis) handle(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
		args := make([]string, n)
		for i := range args {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			a, err := r.ReadString('\n')
			if err != nil {
				return
			}
			args[i] = strings.TrimRight(a, "\r\n")
		}
		f.mu.Lock()
		wait := f.freeze
		f.freeze = 0
		var reply string
		switch strings.ToUpper(args[0]) {
		case "SET":
			f.kv[args[1]] = args[2]
			reply = "+OK\r\n"
		case "GET":
			v, ok := f.kv[args[1]]
			if ok {
				reply = "$" + strconv.Itoa(len(v)) + "\r\n" + v + "\r\n"
			} else {
				reply = "$-1\r\n"
			}
		case "INCR":
			v, _ := strconv.Atoi(f.kv[args[1]])
			f.kv[args[1]] = strconv.Itoa(v + 1)
			reply = ":" + strconv.Itoa(v+1) + "\r\n"
		default:
			reply = "-ERR unknown command\r\n"
		}
		f.mu.Unlock()
		time.Sleep(wait)
		if _, err := c.Write([]byte(reply)); err != nil {
			return
		}
	}
}

// rollback closes every connection and sets the counter back to n.
func (f *fakeRedis) rollback(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
	f.kv[keyCounter] = strconv.Itoa(n)
}

func (f *fakeRedis) setFreeze(d time.Duration) {
	f.mu.Lock()
	f.freeze = d
	f.mu.Unlock()
}

func (f *fakeRedis) counter() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, _ := strconv.Atoi(f.kv[keyCounter])
	return n
}

func events(t *testing.T, out *syncBuffer) []Event {
	var evs []Event
	dec := json.NewDecoder(strings.NewReader(out.String()))
	for dec.More() {
		var e Event
		if err := dec.Decode(&e); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	return evs
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestProbeReportsFreezeAsKeptAndRollbackAsReset(t *testing.T) {
	f := newFake(t)
	var out syncBuffer
	p, err := New(f.ln.Addr().String(), &out, WithInterval(10*time.Millisecond), WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	waitFor(t, "requests", func() bool { return f.counter() >= 5 })
	// A migration: the service freezes, the connection survives.
	f.setFreeze(200 * time.Millisecond)
	waitFor(t, "the freeze to be reported", func() bool { return strings.Contains(out.String(), `"outage"`) })
	waitFor(t, "more requests", func() bool { return f.counter() >= 30 })
	// A rollback: connections close and the counter goes back.
	f.rollback(3)
	waitFor(t, "the rollback to be reported", func() bool { return strings.Count(out.String(), `"outage"`) == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var outages []Event
	var summary *Event
	for _, e := range events(t, &out) {
		switch e.Event {
		case "outage":
			outages = append(outages, e)
		case "summary":
			summary = &e
		}
	}
	if len(outages) != 2 || summary == nil {
		t.Fatalf("outages %+v summary %v", outages, summary)
	}
	frozen, rolled := outages[0], outages[1]
	if frozen.Reset || frozen.State != "kept" || frozen.GapMS < 150 || frozen.Intact == nil || !*frozen.Intact {
		t.Errorf("freeze reported as %+v", frozen)
	}
	if !rolled.Reset || rolled.State != "rolled back" || rolled.Counter != 4 || rolled.Intact == nil || !*rolled.Intact {
		t.Errorf("rollback reported as %+v", rolled)
	}
	if summary.Connections != 2 || summary.Outages != 2 || summary.MaxGapMS < frozen.GapMS {
		t.Errorf("summary %+v", summary)
	}
}

func TestProbeNeverReachedIsAnError(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p, err := New(addr, &bytes.Buffer{}, WithInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := p.Run(ctx); err == nil {
		t.Fatal("a dead address was reported as probed")
	}
	if _, err := New("no-port", &bytes.Buffer{}); err == nil {
		t.Fatal("bad address accepted")
	}
}

// A SYN lost while the service's address moves must cost the probe one dial
// timeout, not the kernel's 1 s SYN backoff: the dialer here black-holes its
// first attempts, as a network with the address gone does.
func TestProbeRetriesALostConnectionAttemptAfterTheDialTimeout(t *testing.T) {
	f := newFake(t)
	var (
		mu       sync.Mutex
		attempts []time.Duration // the time each black-holed attempt was given
	)
	var d net.Dialer
	dial := func(ctx context.Context, a string) (net.Conn, error) {
		mu.Lock()
		n := len(attempts)
		mu.Unlock()
		if n < 3 {
			dl, ok := ctx.Deadline()
			if !ok {
				dl = time.Now().Add(time.Hour)
			}
			mu.Lock()
			attempts = append(attempts, time.Until(dl))
			mu.Unlock()
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return d.DialContext(ctx, "tcp4", a)
	}
	var out syncBuffer
	p, err := New(f.ln.Addr().String(), &out, WithInterval(10*time.Millisecond), WithDialTimeout(40*time.Millisecond), WithDialer(dial))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "requests after the lost attempts", func() bool { return f.counter() >= 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 3 {
		t.Fatalf("%d black-holed attempts, want 3", len(attempts))
	}
	for i, a := range attempts {
		if a <= 0 || a > 40*time.Millisecond {
			t.Errorf("attempt %d was given %v, want at most the 40 ms dial timeout", i, a)
		}
	}
	if _, err := New("127.0.0.1:1", &out, WithDialTimeout(0)); err == nil {
		t.Error("a zero dial timeout was accepted")
	}
}
