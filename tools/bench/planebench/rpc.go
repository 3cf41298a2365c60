package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/tools/lab"
)

// rpcBench measures what the agent API itself costs, on the lab without
// shared storage, each figure against plain TCP between the same
// namespaces in the same run, interleaved:
//
//   - one unary round trip plane→agent (Hello, Status) from the plane's
//     network namespace over the plane's mTLS connection, against a
//     one-byte echo over a plain TCP connection from the plane namespace to
//     a listener in host h1's;
//   - agent-to-agent streaming of a checkpoint image (of a memsrv holding
//     mib MiB): Offer on h1 and Fetch on h2 through the real agents,
//     against the image's files sent over plain TCP from h1's namespaces to
//     h2's: a Go io.Copy (sendfile) to a receiver that writes them to a
//     file (with and without fsync), and to one that discards them; and
//     `cat FILES >/dev/tcp/...`
//     run by bash on h1 (lab.Command).
func rpcBench(ctx context.Context, w io.Writer, p *plane.Plane, inv *lab.Inventory, work string, calls, mib, reps int) error {
	if inv.SharedStorage {
		return errors.New("the lab has shared storage: images would not stream")
	}
	if len(inv.Hosts) < 2 {
		return errors.New("needs two hosts")
	}
	h1, h2 := inv.Hosts[0], inv.Hosts[1]
	a1, err := p.Host(h1.Name)
	if err != nil {
		return err
	}
	a2, err := p.Host(h2.Name)
	if err != nil {
		return err
	}
	loadStart := loadavg()

	// (a) Round trips.
	echo, err := listenIn(h1.Netns, net.JoinHostPort(h1.IP.String(), "7201"))
	if err != nil {
		return err
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	tc, err := lab.NetnsDialer(inv.Plane.Netns)(ctx, echo.Addr().String())
	if err != nil {
		return err
	}
	defer tc.Close()
	if t, ok := tc.(*net.TCPConn); ok {
		_ = t.SetNoDelay(true)
	}
	// The container Status asks about: one that runs.
	id := fmt.Sprintf("rpc-%d", mib)
	if _, err := p.Deploy(ctx, plane.ContainerConfig{ID: id, Image: memsrvRef, Host: h1.Name, IP: "198.18.1.190",
		Args: []string{"/memsrv", "-mem", strconv.Itoa(mib), "-listen", ":7000"}}, "bench"); err != nil {
		return fmt.Errorf("deploy: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_ = p.Remove(rctx, id, "bench")
	}()
	var hello, stat, tcp []time.Duration
	one := []byte{'x'}
	buf := make([]byte, 1)
	for i := 0; i < 20; i++ { // warm up both
		if _, err := a1.Hello(ctx); err != nil {
			return err
		}
		if _, err := tc.Write(one); err != nil {
			return err
		}
		if _, err := io.ReadFull(tc, buf); err != nil {
			return err
		}
	}
	const batch = 50
	for len(hello) < calls {
		for i := 0; i < batch; i++ {
			t0 := time.Now()
			if _, err := a1.Hello(ctx); err != nil {
				return err
			}
			hello = append(hello, time.Since(t0))
		}
		for i := 0; i < batch; i++ {
			t0 := time.Now()
			if _, err := a1.Status(ctx, id); err != nil {
				return err
			}
			stat = append(stat, time.Since(t0))
		}
		for i := 0; i < batch; i++ {
			t0 := time.Now()
			if _, err := tc.Write(one); err != nil {
				return err
			}
			if _, err := io.ReadFull(tc, buf); err != nil {
				return err
			}
			tcp = append(tcp, time.Since(t0))
		}
	}

	// (b) Streaming.
	ck, err := p.Checkpoint(ctx, id, true, "bench")
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	dir := filepath.Join(h1.Dir, "state", "agent", "images", string(ck.Image))
	files, total, err := imageFiles(dir)
	if err != nil {
		return fmt.Errorf("image %s on %s (at %s): %w", ck.Image, h1.Name, dir, err)
	}
	sink := filepath.Join(work, "stream-sink")
	defer os.Remove(sink)
	recv, err := newReceiver(h2.Netns, net.JoinHostPort(h2.IP.String(), "7202"))
	if err != nil {
		return err
	}
	defer recv.close()
	type stream struct {
		took        []time.Duration
		bytes, wire int64
		agentTook   []time.Duration
	}
	kinds := []string{"agent Offer+Fetch", "Go io.Copy over TCP, to a file", "Go io.Copy over TCP, discarded", "bash cat >/dev/tcp, discarded",
		"Go io.Copy over TCP, to a file, fsync"}
	res := map[string]*stream{}
	for _, k := range kinds {
		res[k] = &stream{}
	}
	for r := 0; r < reps; r++ {
		// agent to agent
		t0 := time.Now()
		ticket, err := a1.Offer(ctx, migrate.Offer{Kind: migrate.OfferCheckpoint, Name: string(ck.Image), To: h2.Name})
		if err != nil {
			return fmt.Errorf("offer: %w", err)
		}
		tr, err := a2.Fetch(ctx, ck.Image, migrate.Peer{Name: h1.Name, Address: h1.Agent, Ticket: ticket})
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		took := time.Since(t0)
		if tr.Did != "fetched" {
			return fmt.Errorf("fetch: %s, not fetched", tr.Did)
		}
		s := res[kinds[0]]
		s.took, s.agentTook, s.bytes, s.wire = append(s.took, took), append(s.agentTook, tr.Took), tr.Bytes, tr.Wire
		if _, err := a2.DropImage(ctx, ck.Image); err != nil {
			return fmt.Errorf("drop image on %s: %w", h2.Name, err)
		}
		// plain TCP, Go
		for i, to := range []string{sink, ""} {
			took, n, err := goCopy(ctx, inv, h1.Netns, files, recv, to)
			if err != nil {
				return err
			}
			s := res[kinds[1+i]]
			s.took, s.bytes, s.wire = append(s.took, took), n, n
			os.Remove(sink)
		}
		// plain TCP, cat
		took, n, err := catCopy(ctx, inv, h1, files, recv)
		if err != nil {
			return err
		}
		s = res[kinds[3]]
		s.took, s.bytes, s.wire = append(s.took, took), n, n
		// as the agent's fetch does: the file made durable before it counts
		took, n, err = goCopy(ctx, inv, h1.Netns, files, recv, sink+"!sync")
		if err != nil {
			return err
		}
		s = res[kinds[4]]
		s.took, s.bytes, s.wire = append(s.took, took), n, n
		os.Remove(sink)
		fmt.Fprintf(os.Stderr, "  stream rep %d: fetch %v (agent's own %v, %d B, wire %d B), go copy to file %v, discarded %v, cat %v\n", r+1,
			res[kinds[0]].took[r].Round(time.Millisecond), tr.Took.Round(time.Millisecond), tr.Bytes, tr.Wire,
			res[kinds[1]].took[r].Round(time.Millisecond), res[kinds[2]].took[r].Round(time.Millisecond), took.Round(time.Millisecond))
	}

	fmt.Fprintf(w, "## The agent API's own cost\n\nLab without shared storage, %d hosts; nproc %s; load average at the start %s, at the end %s.\n\n",
		len(inv.Hosts), nproc(), loadStart, loadavg())
	fmt.Fprintf(w, "One round trip, plane namespace → %s, %d calls each, interleaved in batches of %d (µs):\n\n", h1.Name, len(hello), batch)
	fmt.Fprintln(w, "| call | median | p10 | p90 | median / TCP echo |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	tm := median(tcp)
	for _, row := range []struct {
		name string
		ds   []time.Duration
	}{{"gRPC Hello (mTLS)", hello}, {"gRPC Status (mTLS)", stat}, {"plain TCP echo, 1 byte", tcp}} {
		fmt.Fprintf(w, "| %s | %d | %d | %d | %.1f |\n", row.name, median(row.ds).Microseconds(), pct(row.ds, 10).Microseconds(),
			pct(row.ds, 90).Microseconds(), ratio(median(row.ds), tm))
	}
	fmt.Fprintf(w, "\nStreaming the checkpoint image of a %d MiB memsrv (%d files, %.1f MiB), %s → %s, %d times each, interleaved (medians; MB/s = image bytes / wall time):\n\n",
		mib, len(files), float64(total)/(1<<20), h1.Name, h2.Name, reps)
	fmt.Fprintln(w, "| path | wall ms | MB/s | wire MiB | agent's own ms | / Go io.Copy to a file |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	base := median(res[kinds[1]].took)
	for _, k := range kinds {
		s := res[k]
		m := median(s.took)
		own := "-"
		if len(s.agentTook) > 0 {
			own = msf(median(s.agentTook))
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %.1f | %s | %.2f× the time |\n", k, msf(m), float64(s.bytes)/1e6/m.Seconds(), float64(s.wire)/(1<<20), own, ratio(m, base))
	}
	fmt.Fprintln(w)
	return nil
}

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	if len(s) == 0 {
		return 0
	}
	return s[(len(s)-1)*p/100]
}

// listenIn listens on addr inside the network namespace ns; the socket
// stays there whatever thread accepts on it.
func listenIn(ns, addr string) (net.Listener, error) {
	var l net.Listener
	err := arp.Do(ns, func() error {
		lc := net.ListenConfig{}
		lc.SetMultipathTCP(false)
		var err error
		l, err = lc.Listen(context.Background(), "tcp4", addr)
		return err
	})
	return l, err
}

// imageFiles lists the regular files under dir and their total size.
func imageFiles(dir string) ([]string, int64, error) {
	var files []string
	var total int64
	err := filepath.Walk(dir, func(p string, st os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st.Mode().IsRegular() {
			files = append(files, p)
			total += st.Size()
		}
		return nil
	})
	if err == nil && len(files) == 0 {
		err = errors.New("no files")
	}
	return files, total, err
}

// receiver accepts one stream at a time in a host's namespace and reports
// how many bytes it got and when the stream ended.
type receiver struct {
	l    net.Listener
	mu   sync.Mutex
	to   string
	done chan recvResult
}

type recvResult struct {
	n   int64
	at  time.Time
	err error
}

func newReceiver(ns, addr string) (*receiver, error) {
	l, err := listenIn(ns, addr)
	if err != nil {
		return nil, err
	}
	r := &receiver{l: l, done: make(chan recvResult, 1)}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			to := r.to
			r.mu.Unlock()
			var dst io.Writer = io.Discard
			var f *os.File
			sync := strings.HasSuffix(to, "!sync")
			to = strings.TrimSuffix(to, "!sync")
			if to != "" {
				if f, err = os.Create(to); err != nil {
					c.Close()
					r.done <- recvResult{err: err}
					continue
				}
				dst = f
			}
			n, err := io.Copy(dst, c)
			if f != nil && sync && err == nil {
				err = f.Sync()
			}
			if f != nil {
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			c.Close()
			r.done <- recvResult{n: n, at: time.Now(), err: err}
		}
	}()
	return r, nil
}

func (r *receiver) expect(to string) {
	r.mu.Lock()
	r.to = to
	r.mu.Unlock()
}

func (r *receiver) wait() (recvResult, error) {
	select {
	case res := <-r.done:
		return res, res.err
	case <-time.After(2 * time.Minute):
		return recvResult{}, errors.New("receiver: no stream within 2 minutes")
	}
}

func (r *receiver) close() { r.l.Close() }

// goCopy sends files over one plain TCP connection dialed from ns.
func goCopy(ctx context.Context, inv *lab.Inventory, ns string, files []string, r *receiver, to string) (time.Duration, int64, error) {
	r.expect(to)
	t0 := time.Now()
	c, err := lab.NetnsDialer(ns)(ctx, r.l.Addr().String())
	if err != nil {
		return 0, 0, err
	}
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			c.Close()
			return 0, 0, err
		}
		_, err = io.Copy(c, f)
		f.Close()
		if err != nil {
			c.Close()
			return 0, 0, err
		}
	}
	c.Close()
	res, err := r.wait()
	if err != nil {
		return 0, 0, err
	}
	return res.at.Sub(t0), res.n, nil
}

// catCopy runs `cat FILES >/dev/tcp/host/port` with bash on host (its
// namespaces, lab.Command), into the receiver (discarding).
func catCopy(ctx context.Context, inv *lab.Inventory, h lab.Host, files []string, r *receiver) (time.Duration, int64, error) {
	r.expect("")
	host := h.Name
	// The host sees its state directory at /var/lib/escape (the lab's
	// directory is hidden inside).
	state := filepath.Join(h.Dir, "state")
	inside := make([]string, len(files))
	for i, f := range files {
		rel, err := filepath.Rel(state, f)
		if err != nil {
			return 0, 0, err
		}
		inside[i] = filepath.Join("/var/lib/escape", rel)
	}
	files = inside
	a := r.l.Addr().(*net.TCPAddr)
	args := []string{"-c", fmt.Sprintf(`exec cat "$@" >/dev/tcp/%s/%d`, a.IP, a.Port), "cat"}
	args = append(args, files...)
	t0 := time.Now()
	if out, err := lab.Command(ctx, inv, host, "bash", args...).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("cat on %s: %v: %s", host, err, out)
	}
	res, err := r.wait()
	if err != nil {
		return 0, 0, err
	}
	return res.at.Sub(t0), res.n, nil
}
