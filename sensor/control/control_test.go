package control_test

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/control"
)

type rows []sensor.Row

func (r rows) Rows() []sensor.Row { return r }

func TestControlAnswersAndRejectsGarbage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the control socket serves root only; run as root")
	}
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
