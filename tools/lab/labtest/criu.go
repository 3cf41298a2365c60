package labtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/escape-mtd/escape/arp"
	"github.com/google/nftables"
)

// LazyDaemonFault writes, in dir, a stand-in for the CRIU binary criu whose
// lazy-pages daemon gets the signal (KILL, STOP) once a restore has
// connected to it, and returns its path. Every other CRIU command runs
// criu unchanged. A host given it as its CRIU exercises a lazy restore
// whose daemon dies (KILL) or stalls (STOP) mid-copy.
func LazyDaemonFault(t testing.TB, dir, criu, signal string) string {
	t.Helper()
	wrapper := filepath.Join(dir, "criu-lazy-"+signal)
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
