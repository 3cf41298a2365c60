package bundle

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Write streams every regular file and directory under dir to w as one
// bundle (see the package documentation) and reports what it sent. It
// refuses, before sending them, symlinks, devices, sockets, pipes and
// set-id or sticky mode bits. On error the stream is left incomplete, and a
// Read of it fails.
func Write(ctx context.Context, w io.Writer, dir string, opts ...WriteOption) (Stats, error) {
	start := time.Now()
	cfg := writeConfig{level: LevelFastest}
	for _, o := range opts {
		o(&cfg)
	}
	st, err := write(ctx, w, dir, cfg)
	st.Took = time.Since(start)
	if err != nil {
		return st, fmt.Errorf("write bundle of %s: %w", dir, ctxErr(ctx, err))
	}
	return st, nil
}

func write(ctx context.Context, w io.Writer, dir string, cfg writeConfig) (st Stats, err error) {
	level, err := cfg.level.zstd()
	if err != nil {
		return st, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return st, err
	}
	defer root.Close()
	rootInfo, err := root.Stat(".")
	if err != nil {
		return st, err
	}
	if err := checkMode(".", rootInfo.Mode()); err != nil {
		return st, err
	}
	entries, err := list(ctx, root)
	if err != nil {
		return st, err
	}

	// Ending ictx on an error unblocks a write in progress (see
	// unblockOnCancel), so that the encoder's goroutine, which Reset waits
	// for, returns even if the receiver stalls.
	ictx, cancel := context.WithCancel(ctx)
	stop := unblockOnCancel(ictx, w, true)
	sw := &streamWriter{ctx: ictx, w: w}
	var enc *zstd.Encoder
	defer func() {
		if err == nil {
			stop() // leave the caller's stream as it was
		}
		cancel()
		if err != nil && enc != nil {
			// Finish the encoder's goroutines without sending more.
			enc.Reset(io.Discard)
			_ = enc.Close()
		}
		st.Wire = sw.n
	}()
	ctx = ictx
	// zstd writes a block at a time, down to a few bytes for zero pages:
	// gather them into large writes.
	bw := bufio.NewWriterSize(sw, bufSize)
	if _, err := bw.Write(header()); err != nil {
		return st, err
	}
	enc, err = zstd.NewWriter(bw, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(true))
	if err != nil {
		return st, fmt.Errorf("start zstd: %w", err)
	}
	tw := tar.NewWriter(enc)
	m := manifest{Version: manifestVersion, Mode: uint32(rootInfo.Mode().Perm())}
	bufs := [2][]byte{make([]byte, bufSize), make([]byte, bufSize)}
	h := newAsyncHash()
	defer h.close()
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if e.dir {
			if err := tw.WriteHeader(tarHeader(tar.TypeDir, e.name+"/", e.mode, 0)); err != nil {
				return st, fmt.Errorf("%s: %w", e.name, err)
			}
			m.Entries = append(m.Entries, manifestEntry{Name: e.name, Type: typeDir, Mode: uint32(e.mode)})
			continue
		}
		me, err := writeFile(ctx, tw, root, e, bufs, h)
		if err != nil {
			return st, fmt.Errorf("%s: %w", e.name, err)
		}
		m.Entries = append(m.Entries, me)
		st.Files++
		st.Bytes += me.Size
	}
	if err := writeManifest(tw, m); err != nil {
		return st, err
	}
	if err := tw.Close(); err != nil {
		return st, fmt.Errorf("end archive: %w", err)
	}
	if err := enc.Close(); err != nil {
		return st, fmt.Errorf("end zstd: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return st, err
	}
	return st, nil
}

type listed struct {
	name string
	dir  bool
	mode fs.FileMode // permissions
	info fs.FileInfo // as listed (lstat)
}

// list walks the directory, parents before children, and refuses what a
// bundle cannot carry before anything is sent: a receiver is not made to
// take gigabytes of a bundle that was bound to fail.
func list(ctx context.Context, root *os.Root) ([]listed, error) {
	var entries []listed
	err := fs.WalkDir(root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name == "." {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := checkName(name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		t := d.Type()
		if !t.IsDir() && !t.IsRegular() {
			return fmt.Errorf("%s: %s, not a regular file or directory", name, kind(t))
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if err := checkMode(name, info.Mode()); err != nil {
			return err
		}
		entries = append(entries, listed{name: name, dir: t.IsDir(), mode: info.Mode().Perm(), info: info})
		return nil
	})
	return entries, err
}

// writeFile sends one file, hashing it as it goes. The frozen container
// does not change its image, so a file whose size changes while it is read
// is an error, not a race to paper over.
func writeFile(ctx context.Context, tw *tar.Writer, root *os.Root, e listed, bufs [2][]byte, h *asyncHash) (manifestEntry, error) {
	name := e.name
	// os.Root follows a symlink inside the root whatever the flags (it
	// ignores O_NOFOLLOW), so a file swapped since it was listed is caught
	// by its inode, below. O_NONBLOCK: a FIFO swapped in is not waited on.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return manifestEntry{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return manifestEntry{}, err
	}
	if !os.SameFile(info, e.info) {
		return manifestEntry{}, errors.New("replaced since it was listed (a symlink now?)")
	}
	if !info.Mode().IsRegular() {
		return manifestEntry{}, fmt.Errorf("%s, not a regular file", kind(info.Mode().Type()))
	}
	if err := checkMode(name, info.Mode()); err != nil {
		return manifestEntry{}, err
	}
	size, mode := info.Size(), info.Mode().Perm()
	if err := tw.WriteHeader(tarHeader(tar.TypeReg, name, mode, size)); err != nil {
		return manifestEntry{}, err
	}
	h.reset()
	for i, left := 0, size; left > 0; i++ {
		if err := ctx.Err(); err != nil {
			return manifestEntry{}, err
		}
		// Fill one buffer while the other is hashed.
		buf := bufs[i%2]
		n, err := io.ReadFull(f, buf[:min(int64(len(buf)), left)])
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return manifestEntry{}, fmt.Errorf("shrank from %d bytes while read", size)
			}
			return manifestEntry{}, err
		}
		h.write(buf[:n])
		if _, err := tw.Write(buf[:n]); err != nil {
			return manifestEntry{}, err
		}
		left -= int64(n)
	}
	sum := h.sum()
	var one [1]byte
	if n, _ := f.Read(one[:]); n > 0 {
		return manifestEntry{}, fmt.Errorf("grew beyond %d bytes while read", size)
	}
	return manifestEntry{Name: name, Type: typeFile, Mode: uint32(mode), Size: size,
		SHA256: hex.EncodeToString(sum)}, nil
}

func writeManifest(tw *tar.Writer, m manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	sum := sha256.Sum256(b)
	hdr := tarHeader(tar.TypeReg, manifestName, 0o644, int64(len(b)))
	hdr.PAXRecords = map[string]string{manifestDigestKey: hex.EncodeToString(sum[:])}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if _, err := tw.Write(b); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

// tarHeader sets a fixed time and no owner, so that the same directory
// always makes the same bundle: only names, contents and modes travel.
func tarHeader(typ byte, name string, mode fs.FileMode, size int64) *tar.Header {
	return &tar.Header{Typeflag: typ, Name: name, Mode: int64(mode), Size: size, ModTime: time.Unix(0, 0)}
}

func checkMode(name string, mode fs.FileMode) error {
	if special := mode & (fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky); special != 0 {
		return fmt.Errorf("%s: mode %v has set-id or sticky bits, which a bundle does not carry", name, mode)
	}
	return nil
}

func kind(t fs.FileMode) string {
	switch {
	case t&fs.ModeSymlink != 0:
		return "a symlink"
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeCharDevice != 0:
		return "a character device"
	case t&fs.ModeDevice != 0:
		return "a block device"
	}
	return fmt.Sprintf("of type %v", t)
}
