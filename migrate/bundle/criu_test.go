package bundle

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// criuBinary is where `make deps` puts CRIU; $ESCAPE_CRIU overrides it.
const criuBinary = "/opt/escape/bin/criu"

// holdEnv makes the test binary, run as a child, build a heap and wait to
// be dumped (see TestMain).
const holdEnv = "ESCAPE_BUNDLE_HOLD_HEAP"

func TestMain(m *testing.M) {
	if os.Getenv(holdEnv) != "" {
		holdHeap()
		return
	}
	os.Exit(m.Run())
}

// holdHeap fills memory as a service's heap is: many small objects with
// pointers and strings, some encoded text, some incompressible bytes, and
// touched zero pages; then says so and sleeps until killed.
func holdHeap() {
	type record struct {
		ID    int
		Name  string
		Tags  []string
		Score float64
	}
	rng := rand.New(rand.NewPCG(3, 4))
	heap := make(map[string]*record, 150000)
	for i := range 150000 {
		heap[fmt.Sprintf("key-%08d", i)] = &record{ID: i, Name: fmt.Sprintf("user %d", rng.IntN(1e6)),
			Tags: []string{"a", fmt.Sprint(i % 97)}, Score: rng.Float64()}
	}
	text, _ := json.Marshal(heap)
	noise := make([]byte, 4<<20)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	zero := make([]byte, 16<<20)
	for i := 0; i < len(zero); i += pageSize {
		zero[i] = 0 // touched: CRIU dumps the page
	}
	fmt.Println("ready", len(heap), len(text), len(noise), len(zero))
	for {
		time.Sleep(time.Hour)
	}
}

// criuDump dumps a child holding a heap into a new directory, leaving the
// child running until the test ends, and returns the directory.
func criuDump(t testing.TB) string {
	t.Helper()
	criu := criuBinary
	if p := os.Getenv("ESCAPE_CRIU"); p != "" {
		criu = p
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(self)
	child.Env = append(os.Environ(), holdEnv+"=1")
	// Its own session: CRIU dumps a whole session without --shell-job.
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = child.Process.Kill()
		_ = child.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("child: %q, %v", line, err)
	}
	dir := filepath.Join(t.TempDir(), "checkpoint")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, criu, "dump", "-t", fmt.Sprint(child.Process.Pid), "-D", dir,
		"--leave-running", "-v4", "-o", "dump.log")
	if b, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
		t.Fatalf("criu dump: %v: %s\n%s", err, b, tail(log, 2000))
	}
	return dir
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// A real CRIU dump goes through whole, and its pages shrink.
func TestRoundTripCRIUDump(t *testing.T) {
	src := criuDump(t)
	pages, _ := filepath.Glob(filepath.Join(src, "pages-*.img"))
	inv, _ := os.Stat(filepath.Join(src, "inventory.img"))
	if len(pages) == 0 || inv == nil {
		t.Fatalf("the dump in %s lacks pages-*.img or inventory.img: %q", src, listDir(t, src))
	}
	client, server := tcpPair(t)
	defer client.Close()
	defer server.Close()
	wrote := make(chan error, 1)
	var wst Stats
	go func() {
		var err error
		wst, err = Write(context.Background(), client, src)
		if cerr := client.CloseWrite(); err == nil {
			err = cerr
		}
		wrote <- err
	}()
	dst := filepath.Join(t.TempDir(), "copy")
	rst, err := Read(context.Background(), server, dst)
	if werr := <-wrote; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	sameTree(t, src, dst)
	if rst.Files != wst.Files || rst.Files != len(tree(t, src))-1 {
		t.Errorf("files: wrote %d, read %d, the dump holds %d entries", wst.Files, rst.Files, len(tree(t, src))-1)
	}
	t.Logf("%d files, %d bytes, %d on the wire (%.3f), write %v, read %v",
		rst.Files, rst.Bytes, rst.Wire, float64(rst.Wire)/float64(rst.Bytes), wst.Took, rst.Took)
	if rst.Wire*2 > rst.Bytes {
		t.Errorf("a heap's dump of %d bytes took %d on the wire", rst.Bytes, rst.Wire)
	}
}
