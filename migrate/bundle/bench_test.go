package bundle

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkWriteRead sends a directory through Write and Read over TCP
// loopback, at every level, against two baselines in the same run: the
// same bytes sent raw with io.Copy and dropped ("cat into a socket"), and
// sent raw into one file that is then fsynced (the least Read must do).
// The directories: one 64 MiB pages image of half zero pages, half random
// ones; one of random pages only; a real CRIU dump of a process holding a
// heap (criuDump). Both ends run in this process and share its CPUs, as
// they do not in a migration. wire/byte is the stream's size over the
// files'.
//
//	go test -run '^$' -bench . -count 5 ./migrate/bundle/
func BenchmarkWriteRead(b *testing.B) {
	dirs := []struct {
		name string
		make func(b *testing.B) string
	}{
		{"halfzero", func(b *testing.B) string { return pagesDir(b, 0.5) }},
		{"random", func(b *testing.B) string { return pagesDir(b, 0) }},
		{"criu", func(b *testing.B) string { return criuDump(b) }},
	}
	for _, d := range dirs {
		b.Run(d.name, func(b *testing.B) {
			src := d.make(b)
			files, size := regularFiles(b, src)
			// Let the disk finish writing the source before timing.
			unix.Sync()
			b.Run("raw-copy", func(b *testing.B) { benchRaw(b, files, size, false) })
			b.Run("raw-to-file", func(b *testing.B) { benchRaw(b, files, size, true) })
			for _, l := range []Level{LevelFastest, LevelDefault, LevelBetter, LevelBest} {
				b.Run(l.String(), func(b *testing.B) { benchBundle(b, src, size, l) })
			}
		})
	}
}

func pagesDir(b *testing.B, zeroShare float64) string {
	src := filepath.Join(b.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		b.Fatal(err)
	}
	pagesFile(b, filepath.Join(src, "pages-1.img"), 64<<20, zeroShare, 7)
	return src
}

func regularFiles(b *testing.B, dir string) ([]string, int64) {
	var files []string
	var size int64
	for name, e := range tree(b, dir) {
		if e.mode.IsRegular() {
			files = append(files, filepath.Join(dir, name))
			size += e.size
		}
	}
	return files, size
}

func benchBundle(b *testing.B, src string, size int64, l Level) {
	b.SetBytes(size)
	out := b.TempDir()
	var wire int64
	for i := 0; b.Loop(); i++ {
		client, server := tcpPair(b)
		wrote := make(chan error, 1)
		go func() {
			_, err := Write(context.Background(), client, src, WithLevel(l))
			if cerr := client.CloseWrite(); err == nil {
				err = cerr
			}
			wrote <- err
		}()
		dst := filepath.Join(out, fmt.Sprint(i))
		st, err := Read(context.Background(), server, dst)
		if werr := <-wrote; werr != nil {
			b.Fatal(werr)
		}
		if err != nil {
			b.Fatal(err)
		}
		client.Close()
		server.Close()
		wire = st.Wire
		b.StopTimer()
		if err := os.RemoveAll(dst); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(wire)/float64(size), "wire/byte")
}

func benchRaw(b *testing.B, files []string, size int64, toFile bool) {
	b.SetBytes(size)
	out := b.TempDir()
	for i := 0; b.Loop(); i++ {
		client, server := tcpPair(b)
		wrote := make(chan error, 1)
		go func() {
			var err error
			for _, name := range files {
				if err = sendFile(client, name); err != nil {
					break
				}
			}
			if cerr := client.CloseWrite(); err == nil {
				err = cerr
			}
			wrote <- err
		}()
		var n int64
		var err error
		dst := filepath.Join(out, fmt.Sprint(i))
		if toFile {
			n, err = receiveToFile(server, dst)
		} else {
			n, err = io.Copy(io.Discard, server)
		}
		if werr := <-wrote; werr != nil {
			b.Fatal(werr)
		}
		if err != nil || n != size {
			b.Fatalf("received %d of %d bytes: %v", n, size, err)
		}
		client.Close()
		server.Close()
		b.StopTimer()
		_ = os.Remove(dst)
		b.StartTimer()
	}
	b.ReportMetric(1, "wire/byte")
}

func sendFile(w io.Writer, name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

func receiveToFile(r io.Reader, path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	return n, err
}
