package unixsock

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// MaxPath is the longest path a client can connect to: a socket address
// holds 108 bytes, the last one the terminating NUL.
const MaxPath = 107

// DefaultMode is the mode of a socket when no WithMode is given: only root
// can connect.
const DefaultMode os.FileMode = 0o600

// ErrInUse is returned by Listen when a process is listening on the path.
var ErrInUse = errors.New("another process is listening on it")

// privateName is the name of the socket inside its private directory.
const privateName = "s"

// Option configures Listen.
type Option func(*options)

type options struct {
	mode os.FileMode
	gid  int
}

// WithMode sets the socket's permission bits (DefaultMode if not given).
// Connecting needs write permission on the socket, so 0o660 with WithGroup
// admits one group.
func WithMode(mode os.FileMode) Option { return func(o *options) { o.mode = mode } }

// WithGroup sets the socket's group, for modes such as 0o660.
func WithGroup(gid int) Option { return func(o *options) { o.gid = gid } }

// Listen listens on a stream unix socket at path, an absolute path, with
// the socket's mode and group as the options say; see the package
// documentation for what it refuses and why. Missing parent directories are
// created 0700; existing ones are left as they are. Closing the listener
// removes the socket, unless the path no longer names it.
func Listen(path string, opts ...Option) (net.Listener, error) {
	o := options{mode: DefaultMode, gid: -1}
	for _, opt := range opts {
		opt(&o)
	}
	l, err := listen(path, o)
	if err != nil {
		return nil, fmt.Errorf("listen on unix socket %q: %w", path, err)
	}
	return l, nil
}

func checkArgs(path string, o options) error {
	switch {
	case path == "":
		return errors.New("empty path")
	case !filepath.IsAbs(path):
		return errors.New("relative path: want an absolute one")
	case len(path) > MaxPath:
		return fmt.Errorf("path is %d bytes long: a unix socket path holds at most %d", len(path), MaxPath)
	case filepath.Clean(path) == "/":
		return errors.New("path names the root directory")
	case o.mode&^os.ModePerm != 0:
		return fmt.Errorf("mode %v has bits beyond the permission bits", o.mode)
	case o.gid < -1:
		return fmt.Errorf("group id %d is negative", o.gid)
	}
	return nil
}

func listen(path string, o options) (*listener, error) {
	if err := checkArgs(path, o); err != nil {
		return nil, err
	}
	path = filepath.Clean(path)
	dir, base := filepath.Dir(path), filepath.Base(path)
	if err := makeParents(dir); err != nil {
		return nil, err
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open parent directory %s: %w", dir, err)
	}
	l, err := place(dfd, dir, base, path, o)
	if err != nil {
		unix.Close(dfd)
		return nil, err
	}
	return l, nil
}

// place binds the socket privately, then links it onto path under the
// directory lock.
func place(dfd int, dir, base, path string, o options) (*listener, error) {
	priv, err := newPrivateDir(dfd, dir)
	if err != nil {
		return nil, err
	}
	defer priv.remove()
	ul, err := bindPrivate(priv, o)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(priv.fd, privateName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		ul.Close()
		return nil, fmt.Errorf("inspect the new socket: %w", err)
	}
	if err := withDirLock(dfd, dir, func() error { return linkInto(priv, dfd, dir, base, path) }); err != nil {
		ul.Close()
		return nil, err
	}
	return &listener{UnixListener: ul, addr: &net.UnixAddr{Name: path, Net: "unix"},
		dfd: dfd, dir: dir, base: base, dev: st.Dev, ino: st.Ino}, nil
}

// bindPrivate binds and listens inside priv and gives the socket its final
// mode and group before any other name for it exists.
func bindPrivate(priv *privateDir, o options) (*net.UnixListener, error) {
	// Through the directory's descriptor: the private directory's own
	// path may be too long for a socket address.
	addr := "/proc/self/fd/" + strconv.Itoa(priv.fd) + "/" + privateName
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("bind in %s: %w", priv.path, err)
	}
	// Go would unlink addr on Close, by then perhaps another directory's.
	ul.SetUnlinkOnClose(false)
	if o.gid >= 0 {
		if err := unix.Fchownat(priv.fd, privateName, -1, o.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			ul.Close()
			return nil, fmt.Errorf("set the socket's group to %d: %w", o.gid, err)
		}
	}
	if err := unix.Fchmodat(priv.fd, privateName, uint32(o.mode), 0); err != nil {
		ul.Close()
		return nil, fmt.Errorf("set the socket's mode to %v: %w", o.mode, err)
	}
	return ul, nil
}

// linkInto clears path of a dead socket and links the private socket onto
// it. Runs under the directory lock; a file appearing in between (from a
// process not taking the lock) makes the link fail, and the next round
// says what it is.
func linkInto(priv *privateDir, dfd int, dir, base, path string) error {
	const rounds = 3
	for round := 1; ; round++ {
		if err := clearDead(dfd, dir, base, path); err != nil {
			return err
		}
		err := unix.Linkat(priv.fd, privateName, dfd, base, 0)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EEXIST) || round == rounds {
			return fmt.Errorf("link the socket into place: %w", err)
		}
	}
}

// clearDead leaves base in dfd free: nothing there, or a dead socket it
// removes. Anything else is an error, and left alone.
func clearDead(dfd int, dir, base, path string) error {
	var st unix.Stat_t
	err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect what is at the path: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s is there, not a socket; refusing to remove it", kind(st.Mode))
	}
	switch state, err := probe(path); {
	case err != nil:
		return err
	case state == gone:
		return nil
	case state == live:
		return ErrInUse
	}
	return removeIfSame(dfd, dir, base, st.Dev, st.Ino)
}

type socketState int

const (
	dead socketState = iota
	live
	gone
)

// probe connects to the socket at path to learn whether anyone listens.
func probe(path string) (socketState, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("probe the socket at the path: %w", err)
	}
	defer unix.Close(fd)
	switch err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); {
	// EAGAIN: a listener whose backlog is full.
	case err == nil, errors.Is(err, unix.EAGAIN):
		return live, nil
	case errors.Is(err, unix.ECONNREFUSED):
		return dead, nil
	case errors.Is(err, unix.ENOENT):
		return gone, nil
	case errors.Is(err, unix.EPROTOTYPE):
		return 0, errors.New("a datagram or seqpacket socket is bound there; refusing to remove it")
	default:
		return 0, fmt.Errorf("probe the socket at the path: %w", err)
	}
}

// removeIfSame removes base from dfd if it is the inode dev/ino. It moves
// the file aside first, atomically, so that what it checks is what it
// deletes; a different file is moved back.
func removeIfSame(dfd int, dir, base string, dev, ino uint64) error {
	aside, err := newPrivateDir(dfd, dir)
	if err != nil {
		return err
	}
	defer aside.remove()
	if err := unix.Renameat(dfd, base, aside.fd, privateName); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("move the dead socket aside: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(aside.fd, privateName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("inspect the file moved aside to %s: %w (left there)", aside.keep(), err)
	}
	if st.Dev == dev && st.Ino == ino {
		if err := unix.Unlinkat(aside.fd, privateName, 0); err != nil {
			return fmt.Errorf("remove the dead socket: %w", err)
		}
		return nil
	}
	if err := unix.Linkat(aside.fd, privateName, dfd, base, 0); err != nil {
		return fmt.Errorf("the file at the path changed while it was being replaced, and could not be put back: %w (left in %s)", err, aside.keep())
	}
	return errors.New("the file at the path changed while it was being replaced; left in place")
}

// kind names a file type for an error message.
func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a named pipe (FIFO)"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return fmt.Sprintf("a file of unknown type %#o", mode&unix.S_IFMT)
}

// makeParents creates dir and its missing ancestors, each 0700. Existing
// directories are not touched.
func makeParents(dir string) error {
	st, err := os.Stat(dir)
	if err == nil {
		if !st.IsDir() {
			return fmt.Errorf("parent %s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("inspect parent directory: %w", err)
	}
	if err := makeParents(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Made concurrently by someone else: theirs, not ours to set.
			return makeParents(dir)
		}
		return fmt.Errorf("create parent directory: %w", err)
	}
	return fixCreatedMode(dir)
}

// fixCreatedMode restores 0700 on a directory just created, if the umask
// took owner bits away from it (never adds any for others).
func fixCreatedMode(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open created directory %s: %w", dir, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("inspect created directory %s: %w", dir, err)
	}
	if st.Mode&0o7777 == 0o700 {
		return nil
	}
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return fmt.Errorf("set created directory %s to 0700: %w", dir, err)
	}
	return nil
}

// privateDir is a fresh directory next to the socket's path, reachable by
// root only, held open by descriptor.
type privateDir struct {
	parent     int
	name, path string
	fd         int
	kept       bool
}

func newPrivateDir(dfd int, dir string) (*privateDir, error) {
	for {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("create a private directory: %w", err)
		}
		name := ".unixsock-" + hex.EncodeToString(b[:])
		// The umask can only take bits away from 0700.
		err := unix.Mkdirat(dfd, name, 0o700)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create a private directory in %s: %w", dir, err)
		}
		path := filepath.Join(dir, name)
		fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			_ = unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
			return nil, fmt.Errorf("open private directory %s: %w", path, err)
		}
		return &privateDir{parent: dfd, name: name, path: path, fd: fd}, nil
	}
}

// keep marks the directory as holding something that must not be lost.
func (p *privateDir) keep() string {
	p.kept = true
	return p.path
}

func (p *privateDir) remove() {
	if !p.kept {
		// The socket's private name, if it still exists; the path has its
		// own link to the inode.
		_ = unix.Unlinkat(p.fd, privateName, 0)
		_ = unix.Unlinkat(p.parent, p.name, unix.AT_REMOVEDIR)
	}
	unix.Close(p.fd)
}

// listener removes its socket on Close.
type listener struct {
	*net.UnixListener
	addr      *net.UnixAddr
	dfd       int
	dir, base string
	dev, ino  uint64

	once     sync.Once
	closeErr error
}

// Addr is the socket's path (the bound address is a /proc alias).
func (l *listener) Addr() net.Addr { return l.addr }

// Close removes the socket file if the path still names it, then stops
// listening. Later calls only report that it is closed.
func (l *listener) Close() error {
	first := false
	l.once.Do(func() {
		first = true
		rerr := withDirLock(l.dfd, l.dir, l.removeOwn)
		if rerr != nil {
			rerr = fmt.Errorf("remove unix socket %s: %w", l.addr.Name, rerr)
		}
		l.closeErr = errors.Join(rerr, l.UnixListener.Close())
		unix.Close(l.dfd)
	})
	if !first {
		return l.UnixListener.Close()
	}
	return l.closeErr
}

func (l *listener) removeOwn() error {
	var st unix.Stat_t
	err := unix.Fstatat(l.dfd, l.base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	if st.Dev != l.dev || st.Ino != l.ino {
		return nil // replaced by someone else's file: theirs
	}
	return removeIfSame(l.dfd, l.dir, l.base, l.dev, l.ino)
}
