package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// readCRIUStats reads CRIU's stats-dump from dumpDir and stats-restore from
// restoreDir (either may be empty). Missing files leave their fields zero.
func readCRIUStats(dumpDir, restoreDir string) (migrate.CRIUStats, error) {
	var s migrate.CRIUStats
	var errs []error
	if dumpDir != "" {
		f, err := readStats(filepath.Join(dumpDir, "stats-dump"))
		if err != nil {
			errs = append(errs, err)
		} else if d, ok := f[1]; ok {
			// DumpStatsEntry: 1 freezing_time, 2 frozen_time, 3 memdump_time,
			// 4 memwrite_time (microseconds), 7 pages_written.
			m, err := protoFields(d.bytes)
			if err != nil {
				errs = append(errs, fmt.Errorf("stats-dump: %w", err))
			}
			s.Freezing, s.Frozen = us(m[1].varint), us(m[2].varint)
			s.MemDump, s.MemWrite, s.PagesWritten = us(m[3].varint), us(m[4].varint), m[7].varint
		}
	}
	if restoreDir != "" {
		f, err := readStats(filepath.Join(restoreDir, "stats-restore"))
		if err != nil {
			errs = append(errs, err)
		} else if r, ok := f[2]; ok {
			// RestoreStatsEntry: 3 forking_time, 4 restore_time.
			m, err := protoFields(r.bytes)
			if err != nil {
				errs = append(errs, fmt.Errorf("stats-restore: %w", err))
			}
			s.Forking, s.Restore = us(m[3].varint), us(m[4].varint)
		}
	}
	return s, errors.Join(errs...)
}

func us(v uint64) time.Duration { return time.Duration(v) * time.Microsecond }

// readStats parses a CRIU stats image: two magics, a length, then one
// StatsEntry message (1: dump, 2: restore).
func readStats(path string) (map[int]protoField, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("criu stats: %w", err)
	}
	if len(b) < 12 {
		return nil, fmt.Errorf("criu stats %s: %d bytes, too short", path, len(b))
	}
	n := int(binary.LittleEndian.Uint32(b[8:12]))
	if 12+n > len(b) {
		return nil, fmt.Errorf("criu stats %s: entry of %d bytes in %d", path, n, len(b))
	}
	m, err := protoFields(b[12 : 12+n])
	if err != nil {
		return nil, fmt.Errorf("criu stats %s: %w", path, err)
	}
	return m, nil
}

type protoField struct {
	varint uint64
	bytes  []byte
}

// protoFields decodes the varint and length-delimited fields of one
// protobuf message (all CRIU's stats use), keyed by field number.
func protoFields(b []byte) (map[int]protoField, error) {
	out := map[int]protoField{}
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return out, errors.New("bad field key")
		}
		b = b[n:]
		num := int(key >> 3)
		switch key & 7 {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return out, fmt.Errorf("field %d: bad varint", num)
			}
			b = b[n:]
			out[num] = protoField{varint: v}
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return out, fmt.Errorf("field %d: bad length", num)
			}
			out[num] = protoField{bytes: b[n : n+int(l)]}
			b = b[n+int(l):]
		default:
			return out, fmt.Errorf("field %d: unsupported wire type %d", num, key&7)
		}
	}
	return out, nil
}
