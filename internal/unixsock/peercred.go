package unixsock

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// ErrNotRoot is returned by RootOnly for a peer whose uid is not 0.
var ErrNotRoot = errors.New("permission denied: root only")

// Cred is who connected, as the kernel recorded it at connect(2). The pid
// is as seen from this process's pid namespace (0 if the peer's is not
// visible from it).
type Cred struct {
	PID      int32
	UID, GID uint32
}

// PeerCred returns the credentials of the process at the other end of c,
// which must be a *net.UnixConn.
func PeerCred(c net.Conn) (Cred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Cred{}, fmt.Errorf("peer credentials: %T is not a unix socket connection", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return Cred{}, fmt.Errorf("peer credentials: SO_PEERCRED: %w", cerr)
	}
	return Cred{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

// RootOnly returns nil if the peer of c is root (uid 0), an error wrapping
// ErrNotRoot that names the peer's uid and pid if not, or the error that
// kept it from knowing.
func RootOnly(c net.Conn) error {
	cred, err := PeerCred(c)
	if err != nil {
		return err
	}
	if cred.UID != 0 {
		return fmt.Errorf("%w (peer uid=%d pid=%d)", ErrNotRoot, cred.UID, cred.PID)
	}
	return nil
}
