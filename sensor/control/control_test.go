package control_test

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/control"
)

type rows []sensor.Row

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the control socket serves root only: run as root")
	}
}

func (r rows) Rows() []sensor.Row { return r }

func TestControlAnswersAndRejectsGarbage(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(t.TempDir(), "d", "ctl.sock")
	srv, err := control.Listen(path, rows{{Identity: "escape/a", State: sensor.StateWatching}}, "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx) //nolint:errcheck
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v", st.Mode().Perm())
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode().Perm() != 0o700 {
		t.Errorf("socket dir mode %v", st.Mode().Perm())
	}
	cli, err := control.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	r, err := cli.Do(ctx, control.Request{Op: "rows"})
	if err != nil || len(r.Rows) != 1 || r.Rows[0].Identity != "escape/a" || r.Host != "h1" {
		t.Fatalf("rows: %+v %v", r, err)
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	for _, garbage := range []string{"hello", `{"op":1}`, `{"op":"rows","x":2}`, `{"op":"drop"}`, "\x00\xff"} {
		conn.Write([]byte(garbage + "\n"))
		line, err := rd.ReadString('\n')
		if err != nil || !strings.Contains(line, `"error":"bad request`) {
			t.Errorf("%q answered %q %v", garbage, line, err)
		}
	}
	conn.Write([]byte(strings.Repeat("x", 10000) + "\n"))
	if line, _ := rd.ReadString('\n'); !strings.Contains(line, "bad request") {
		t.Errorf("oversized request answered %q", line)
	}
}

func TestControlRefusesAFileAtItsPathAndLeavesIt(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "ctl.sock")
	if err := os.WriteFile(path, []byte("not a socket"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := control.Listen(path, rows{}, "h1", nil)
	if err == nil {
		cancel := serve(srv)
		cancel()
		t.Fatal("Listen over a regular file succeeded")
	}
	if !strings.Contains(err.Error(), "a regular file is there") {
		t.Errorf("error %q, want it to name the regular file", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "not a socket" {
		t.Errorf("the file now holds %q %v, want it intact", b, err)
	}
}

// A second daemon cannot take over a live daemon's socket; the first
// serves on, and when its context ends it stops (even with an idle client
// still connected) and removes its socket.
func TestControlSecondDaemonRefusedFirstServesOn(t *testing.T) {
	requireRoot(t)
	parent := t.TempDir()
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(parent, "ctl.sock")
	srv, err := control.Listen(path, rows{{Identity: "escape/a"}}, "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- srv.Serve(ctx) }()
	if _, err := control.Listen(path, rows{}, "h2", nil); err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("second Listen: %v, want it refused", err)
	}
	if st, _ := os.Stat(parent); st.Mode().Perm() != 0o755 {
		t.Errorf("the existing parent's mode became %v, want 0755", st.Mode().Perm())
	}
	cli, err := control.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if r, err := cli.Do(ctx, control.Request{Op: "rows"}); err != nil || r.Host != "h1" || len(r.Rows) != 1 {
		t.Fatalf("first daemon after the second was refused: %+v %v", r, err)
	}
	cancel() // cli is still connected, idle
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a hang guard, not a timing check
		t.Fatal("Serve did not return after its context ended, with an idle client connected")
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket after Serve returned: %v, want it removed", err)
	}
}

func serve(srv *control.Server) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Serve(ctx) //nolint:errcheck
	return cancel
}
