// Package unixsock listens on local unix sockets meant for root (or one
// group) without changing anything around them, and tells a server who is
// on the other end of a connection.
//
// Listen leaves the system as it found it: it never changes the process
// umask (a process-wide setting other goroutines race with), never chmods a
// parent directory that already exists (a socket at /run/x.sock must not
// lock /run), and never deletes anything but a unix socket it has proved
// dead (connect refused). A regular file, symlink, directory, FIFO or
// device at the path is an error naming what is there, and a socket
// someone listens on is ErrInUse.
//
// The socket appears at its path already with its final mode and group:
// it is bound inside a fresh private directory (0700, made next to the
// path so the final step stays on one filesystem), chmodded and chowned
// there, then hard-linked onto the path, which fails rather than replaces
// if anything appeared there meanwhile. Every step works on directory file
// descriptors, so a parent renamed mid-way cannot redirect it, and binding
// goes through /proc/self/fd so the private directory's longer name never
// runs into the 108-byte limit of a socket address. (So the kernel's name
// for the socket, what getsockname and a client's getpeername report, is
// that /proc alias; the listener's Addr reports the path.)
//
// Concurrent Listen and Close calls on one directory, in this process or
// others using this package, take an exclusive flock(2) on the parent
// directory for the few system calls that inspect and change the path, so
// of many contenders exactly one wins and a closing listener removes only
// its own socket. Processes that do not take the lock cannot make Listen
// delete their files either: a dead socket is first moved aside into a
// private directory and deleted only if it is still the inode that refused
// the connection; anything else is put back. Probing a live socket makes
// one connection to it, closed at once, which its server sees as a client
// that said nothing.
//
// PeerCred reads a connection's SO_PEERCRED: the uid, gid and pid of the
// process that connected, fixed by the kernel at connect time and not
// forgeable by the peer. RootOnly refuses every peer but uid 0.
package unixsock
