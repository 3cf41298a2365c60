package bundle

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// staging is the sibling directory a Read fills, renamed to the final
// path only once the bundle verified. Its name starts with "." + the final
// name + ".partial-": a crash (not an error) of the receiving process can
// leave one behind, which is safe to delete.
type staging struct {
	dir  string // the final path
	tmp  string
	root *os.Root
	dirs []stagedDir // in creation order: parents first
}

type stagedDir struct {
	name string
	mode fs.FileMode
}

func newStaging(dir string) (*staging, error) {
	dir = filepath.Clean(dir)
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("%s already exists", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	parent := filepath.Dir(dir)
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".partial-")
	if err != nil {
		return nil, fmt.Errorf("create staging directory: %w", err)
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("create staging directory: %w", err)
	}
	return &staging{dir: dir, tmp: tmp, root: root}, nil
}

// mkdir creates a directory owner-writable: its mode is set by commit, once
// everything in it is written.
func (s *staging) mkdir(name string, mode fs.FileMode) error {
	if err := s.root.Mkdir(name, 0o700); err != nil {
		return fmt.Errorf("directory %q: %w", name, err)
	}
	s.dirs = append(s.dirs, stagedDir{name, mode})
	return nil
}

// create makes a new file; os.Root keeps it inside the staging directory
// whatever the name, and O_EXCL refuses any name already there, symlinks
// included (the staging directory holds none: Read makes none).
func (s *staging) create(name string) (*os.File, error) {
	return s.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// writeback writes a file and starts the kernel writing it to disk every
// few MiB, so that the fsync at its end waits for the last few only rather
// than for all of it: the disk works while the stream still flows.
type writeback struct {
	f       *os.File
	fd      int
	written int64
	flushed int64
}

const writebackEvery = 8 << 20

func newWriteback(f *os.File) *writeback {
	return &writeback{f: f, fd: int(f.Fd())}
}

func (w *writeback) write(b []byte) error {
	if _, err := w.f.Write(b); err != nil {
		return err
	}
	w.written += int64(len(b))
	if w.written-w.flushed >= writebackEvery {
		// Only a hint: the fsync in finish is what makes the file durable.
		_ = unix.SyncFileRange(w.fd, w.flushed, w.written-w.flushed, unix.SYNC_FILE_RANGE_WRITE)
		w.flushed = w.written
	}
	return nil
}

// finish gives a written file its mode and makes it durable.
func (s *staging) finish(f *os.File, mode fs.FileMode) error {
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// commit gives the directories their modes, makes them durable, and moves
// the staging directory to the final path: at once, and only if nothing is
// there (RENAME_NOREPLACE: a plain rename would replace an empty directory).
func (s *staging) commit(rootMode uint32) error {
	// Children first: a directory keeps its owner-writable mode until what
	// is in it is done.
	for _, d := range slices.Backward(s.dirs) {
		if err := s.syncDir(d.name, d.mode); err != nil {
			return err
		}
	}
	if err := s.syncDir(".", fs.FileMode(rootMode)); err != nil {
		return err
	}
	if err := unix.Renameat2(unix.AT_FDCWD, s.tmp, unix.AT_FDCWD, s.dir, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("move %s into place: %w", s.tmp, err)
	}
	s.tmp = ""
	_ = s.root.Close()
	if err := syncPath(filepath.Dir(s.dir)); err != nil {
		// Whole but perhaps not durable: not the promised dir.
		return errors.Join(err, s.remove(s.dir))
	}
	return nil
}

// syncDir sets a staged directory's mode through a descriptor opened
// before, so that a mode without search or write bits does not stop it,
// and syncs it: its entries and its mode are durable.
func (s *staging) syncDir(name string, mode fs.FileMode) error {
	d, err := s.root.Open(name)
	if err != nil {
		return fmt.Errorf("sync directory %q: %w", name, err)
	}
	defer d.Close()
	if err := d.Chmod(mode); err != nil {
		return fmt.Errorf("directory %q: %w", name, err)
	}
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %q: %w", name, err)
	}
	return nil
}

func syncPath(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// abandon removes the staging directory after err, and says so if it
// cannot.
func (s *staging) abandon(err error) error {
	if s.tmp == "" {
		return err
	}
	_ = s.root.Close()
	if rerr := s.remove(s.tmp); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// remove deletes a received tree, first making its directories writable
// again (a mode like 0o555 stops an unprivileged RemoveAll).
func (s *staging) remove(dir string) error {
	if os.RemoveAll(dir) == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
