package unixsock

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// lockWait bounds how long Listen and Close wait for the directory lock.
// Holders of this package's lock keep it for a few system calls; a
// holder past this is something else, and waiting forever would hang the
// caller with no word why.
const lockWait = 10 * time.Second

// withDirLock runs fn holding an exclusive flock on the directory dfd.
// flock belongs to the open file description, so separate opens of the
// directory (separate Listen calls, even in one process) exclude each
// other.
func withDirLock(dfd int, dir string, fn func() error) error {
	deadline := time.Now().Add(lockWait)
	// Short first: holders of this package's lock release it within
	// microseconds.
	pause := 20 * time.Microsecond
	for {
		err := unix.Flock(dfd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("lock directory %s: %w", dir, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lock directory %s: still locked by another process after %v", dir, lockWait)
		}
		time.Sleep(pause)
		pause = min(2*pause, 5*time.Millisecond)
	}
	defer unix.Flock(dfd, unix.LOCK_UN) //nolint:errcheck // closing the descriptor unlocks too
	return fn()
}
