package bundle

import (
	"crypto/sha256"
	"hash"
)

// asyncHash computes SHA-256 on its own goroutine, so that hashing a chunk
// overlaps reading the next one and writing this one: on either side it
// costs about as much CPU as zstd at its fastest level.
//
// A chunk handed to write must stay unchanged until the next write, sum or
// wait: callers alternate two buffers.
type asyncHash struct {
	h    hash.Hash
	in   chan []byte
	done chan struct{}
	busy bool
}

func newAsyncHash() *asyncHash {
	a := &asyncHash{h: sha256.New(), in: make(chan []byte), done: make(chan struct{})}
	go func() {
		for b := range a.in {
			a.h.Write(b)
			a.done <- struct{}{}
		}
		close(a.done)
	}()
	return a
}

// write hashes b once the previous chunk is hashed.
func (a *asyncHash) write(b []byte) {
	a.wait()
	a.busy = true
	a.in <- b
}

// wait returns once the last chunk handed to write is hashed.
func (a *asyncHash) wait() {
	if a.busy {
		<-a.done
		a.busy = false
	}
}

// sum returns the digest of everything written since the last reset.
func (a *asyncHash) sum() []byte {
	a.wait()
	return a.h.Sum(nil)
}

func (a *asyncHash) reset() {
	a.wait()
	a.h.Reset()
}

// close ends the goroutine.
func (a *asyncHash) close() {
	a.wait()
	close(a.in)
}
