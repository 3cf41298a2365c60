// Package bundle turns a checkpoint image directory into one compressed,
// checksummed stream, and back: Write on the source host's agent, Read on
// the destination's, any transport between them (a TLS gRPC stream, a TCP
// connection, a pipe). It is how a CRIU dump moves when hosts share no
// storage, while the container is frozen: so it is built to be fast as
// well as safe.
//
// # Format (version 1)
//
//	header    8 bytes "ESCBNDL\n", uint16 version = 1, uint16 flags = 0 (big-endian)
//	body      one zstd frame (content checksum on) holding a tar stream:
//	            every directory and regular file under the directory, parents
//	            before children, in lexical order: relative slash-separated
//	            names, permission bits, size; owner 0, time 0
//	            last entry ".escape-bundle-manifest.json": JSON
//	              {"version":1,"mode":<dir perm>,"entries":[{"name","type":"file"|"dir",
//	                "mode","size","sha256"}...]}
//	            with a PAX record ESCAPE.manifest.sha256 = hex SHA-256 of those bytes
//	end       the tar end blocks, the end of the zstd frame, the end of the stream
//
// Why tar in zstd rather than a framing of our own: both ends are the
// standard library's archive/tar and klauspost/compress (already a
// dependency), and a bundle can be inspected by hand with
// `tail -c +13 b | zstd -d | tar tv`. Why the digests go last, in a
// manifest: Write hashes each file while it streams it, in one read, so a
// digest is known only after its data; a tar header, which comes before
// the data, cannot hold it. The manifest also makes the stream's end
// explicit: a stream cut at an entry boundary has no manifest and fails.
// The same directory always gives the same bytes (no times, no owners).
//
// # Guarantees
//
// Read writes into a sibling directory named "."+base(dir)+".partial-*",
// checks each entry as it arrives (name, type, mode, parent, duplicates,
// limits), hashes each file while writing it, and at the end checks the
// manifest's digest, every entry against the manifest one for one and in
// order (name, type, mode, size, SHA-256), zstd's checksum, and that
// nothing follows. Only then does it fsync every file (already done as each
// ends) and directory, and rename the directory to dir with
// RENAME_NOREPLACE, so that a directory that appeared there meanwhile,
// even empty, is never replaced; then it fsyncs the parent.
//
// On any error (a truncated stream, a changed byte, a wrong digest, a
// missing, extra, duplicate, absolute or "../" name, a symlink, device or
// other non-regular entry, a limit passed, ctx ended, the disk) Read
// removes the sibling directory and returns an error naming the problem;
// dir never exists partly. errors.Is(err, ErrCorrupt) says the stream is
// not a whole, well-formed bundle; errors.Is(err, ErrLimit) that it passes
// a limit; ctx's error that ctx ended. So a failed transfer is restarted,
// not resumed: Read again into the same dir, from the start of a new
// stream. Only a crash of the receiving process can leave a ".partial-"
// directory behind, which is safe to delete.
//
// Write lists the directory first and refuses, before sending anything,
// symlinks, devices, sockets, pipes, set-id or sticky bits and the
// manifest's name at the top. Then it sends each listed file if it is still
// the same inode (a file swapped for a symlink since is refused), and fails
// if a file changes size while read: a frozen container's image does not
// change. Only names, contents and permission bits travel: not owners,
// times, extended attributes, hard links, sparseness.
//
// # Limits
//
// WithMaxBytes (default 64 GiB) bounds the files' total size and
// WithMaxFiles (default 100000) the number of entries. The whole
// decompressed stream, headers included, is bounded by these (plus 16 KiB
// an entry, plus the manifest's bound), so a zstd bomb of tar headers stops
// there too. The manifest may be at most 4 KiB + 256 bytes an entry + 6
// bytes a name byte. zstd windows above 8 MiB are refused, so decoding
// memory stays within a few tens of MiB. Names are at most 4096 bytes,
// each component 255.
//
// # Cancellation
//
// Both sides check ctx between chunks (1 MiB). A Read or Write blocked in
// a stream that has deadlines (net.Conn, os.File pipes) is unblocked at
// once by setting its deadline to the past when ctx ends, or when the call
// fails for another reason (a bad entry while the sender stalls); the
// deadline is then left set. A stream without deadlines must return from a
// blocked Read or Write itself when the transfer is cancelled (a gRPC
// stream does when its context ends). Read consumes r to its end: the
// bundle must be the whole stream.
//
// # Speed
//
// Each side reads and writes in 1 MiB chunks, hashes on its own goroutine
// (two alternating buffers) while the next chunk is read and this one
// written, and zstd encodes and decodes on goroutines of their own. Read
// starts the kernel writing each file to disk every 8 MiB
// (sync_file_range), so the fsync at a file's end waits only for the last
// few MiB.
//
// The level is LevelFastest by default, chosen by BenchmarkWriteRead
// (`go test -run '^$' -bench . -count 5 ./migrate/bundle/`): on a real
// CRIU dump of a process holding a heap, on half-zero pages and on random
// pages, every level shrinks the stream to within 7% of the others (zero
// pages to nothing, random pages not at all), while every level above
// fastest costs throughput on the dump, and random pages are no slower at
// fastest than at any other level. Medians of 5, MB/s of files, over TCP
// loopback on 2 vCPUs with both ends in one process (so sharing them);
// the baselines, in the same run: raw-copy is io.Copy of the same bytes
// into the socket, dropped at the other end; raw-to-file writes them to
// one file and fsyncs it. wire is the stream's size over the files'.
//
//	                 raw-copy  raw-to-file  fastest  default  better  best
//	CRIU dump (~100 MiB)
//	  MB/s             2202      1091         165      122      49     17
//	  x raw-copy       1         0.495        0.075    0.055   0.022  0.008
//	  wire             1         1            0.190    0.191   0.179  0.180
//	64 MiB, half zero pages
//	  MB/s             1721       972         281      227     118     33
//	  x raw-copy       1         0.565        0.163    0.132   0.069  0.019
//	  wire             1         1            0.500    0.499   0.499  0.498
//	64 MiB, random pages
//	  MB/s             1500       895         292      308     249    151
//	  x raw-copy       1         0.597        0.195    0.206   0.166  0.100
//	  wire             1         1            1.000    1.000   1.000  1.000
//
// Loopback is the worst case for compression: the bundle is bound by the
// CPU (SHA-256 and zstd on both ends, here on two shared cores), the raw
// copy by memory. On a real link the bundle of that dump is faster than a
// raw copy whenever the link carries less than about 165 MB/s (1.3 Gb/s)
// here, and more so with a core per end. zstd's concurrent-blocks mode
// encoded the dump 25% faster but random pages 35% slower (measured, not
// kept); dropping literal entropy coding made half-zero pages twice as fast
// to encode but the dump's stream 17% larger (not kept either).
package bundle
