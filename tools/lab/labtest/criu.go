package labtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/google/nftables"
)

// LazyDaemonFault writes, in dir, a stand-in for the CRIU binary criu whose
// lazy-pages daemon gets the signal (KILL, STOP) once a restore has
// connected to it, and returns its path. Every other CRIU command runs
// criu unchanged. A host given it as its CRIU exercises a lazy restore
// whose daemon dies (KILL) or stalls (STOP) mid-copy.
//
// The stand-in itself exits unnoticed after the daemon does. Whoever
// started the daemon waits on the stand-in, so for that long only CRIU's
// restore can find the daemon gone: it does when it tells the daemon the
// restore is finished, which is after the restored sockets have left
// repair mode, so that the copy CRIU then kills closes live connections.
// With 0 the death shows at once, and the restore is usually stopped
// before that point.
//
// The host runs the stand-in inside its own mount namespace: dir must be
// a path the host sees at the same place, such as a directory under the
// lab's shared storage (inv.Shared), never t.TempDir() (every host has a
// private /tmp).
func LazyDaemonFault(t testing.TB, dir, criu, signal string, unnoticed time.Duration) string {
	t.Helper()
	wrapper := filepath.Join(dir, fmt.Sprintf("criu-lazy-%s-%d", signal, unnoticed.Milliseconds()))
	script := `#!/bin/sh
# CRIU, but its lazy-pages daemon gets SIG` + signal + ` once a restore connects.
[ "$1" = lazy-pages ] || exec "` + criu + `" "$@"
work=""; prev=""
for a in "$@"; do [ "$prev" = --work-dir ] && work="$a"; prev="$a"; done
"` + criu + `" "$@" & pid=$!
i=0
while [ $i -lt 1000 ]; do
  grep -q "Received PID" "$work/lazy-pages.log" 2>/dev/null && break
  sleep 0.005; i=$((i+1))
done
kill -` + signal + ` $pid
sleep ` + strconv.FormatFloat(unnoticed.Seconds(), 'f', 3, 64) + `
wait $pid
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper
}

// NFTables returns an nftables connection into the named network
// namespace, for a test to add or list tables there (the tables CRIU's
// network lock or an operator would leave).
func NFTables(t testing.TB, netns string) *nftables.Conn {
	t.Helper()
	f, err := os.Open(arp.NetnsPath(netns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
