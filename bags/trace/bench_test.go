package trace

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/bags/syscalls"

	"github.com/escape-mtd/escape/internal/datasets"
)

func benchRead(b *testing.B, data []byte, mk func(io.Reader) Reader) {
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	var events int
	for i := 0; i < b.N; i++ {
		r := mk(bytes.NewReader(data))
		events = 0
		for {
			if _, err := r.Next(); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
			events++
		}
	}
	b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mevents/s")
}

// BenchmarkParseADFA parses the real ADFA-LD validation traces (~5 MB) as one
// stream when present, else a synthetic one of the same shape.
func BenchmarkParseADFA(b *testing.B) {
	var data []byte
	dir, _ := datasets.Path("adfa-ld", "Validation_Data_Master")
	if ents, err := os.ReadDir(dir); err == nil && dir != "" {
		for _, e := range ents[:1000] {
			d, _ := os.ReadFile(dir + "/" + e.Name())
			data = append(append(data, d...), '\n')
		}
	} else {
		data = []byte(strings.Repeat("6 6 63 6 42 120 6 195 120 6 6 114 114 1 1 252 ", 100000))
	}
	benchRead(b, data, func(r io.Reader) Reader { return NewADFAReader(r) })
}

func BenchmarkParseSysdig(b *testing.B) {
	path, err := datasets.Path("lid-ds-2021-sample", "aggressive_nightingale_1018.sc")
	data, rerr := os.ReadFile(path)
	if err != nil || rerr != nil {
		data = []byte(sysdigSample)
	}
	data = bytes.Repeat(data, 20) // the sample alone is too small to time
	benchRead(b, data, func(r io.Reader) Reader { return NewSysdigReader(r) })
}

func BenchmarkParseStrace(b *testing.B) {
	data := bytes.Repeat([]byte(straceSample), 20000)
	benchRead(b, data, func(r io.Reader) Reader { return NewStraceReader(r) })
}

// BenchmarkParseStraceLegacy is the parser before the byte scanner, on the
// same input, for a side-by-side figure.
func BenchmarkParseStraceLegacy(b *testing.B) {
	data := bytes.Repeat([]byte(straceSample), 20000)
	benchRead(b, data, func(r io.Reader) Reader { return newLegacyStraceReader(r) })
}

func BenchmarkParseRecording(b *testing.B) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Meta{Arch: syscalls.X86_64}, WithTimestamps(true), WithTIDs(true))
	for i := 0; i < 1<<20; i++ {
		w.Write(Event{Nr: uint16(i % 300), TID: uint32(i % 7), TS: int64(i) * 1500})
	}
	w.Close()
	benchRead(b, buf.Bytes(), func(r io.Reader) Reader {
		rr, err := NewRecordReader(r)
		if err != nil {
			b.Fatal(err)
		}
		return rr
	})
}
