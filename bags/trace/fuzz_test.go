package trace

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/escape-mtd/escape/bags/syscalls"
)

// classified reports whether err is one of the package's documented errors.
func classified(err error) bool {
	for _, e := range []error{ErrSyntax, ErrLineTooLong, ErrUnknownSyscall, ErrEmpty, ErrTruncated, ErrChecksum, ErrFormat} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func fuzzReader(t *testing.T, r Reader, inputLen int) {
	for i := 0; ; i++ {
		_, err := r.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			if !classified(err) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if i > inputLen+1 {
			t.Fatalf("more events (%d) than input bytes (%d)", i, inputLen)
		}
	}
}

func FuzzADFA(f *testing.F) {
	for _, s := range []string{"6 6 63 6 42 120", "", "1 2 x", "99999 1", "\n\n\t5\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzReader(t, NewADFAReader(bytes.NewReader(data)), len(data))
		fuzzReader(t, NewADFAReader(bytes.NewReader(data), WithLenient(true), WithUnknown(UnknownSkip)), len(data))
	})
}

func FuzzSysdig(f *testing.F) {
	f.Add([]byte(sysdigSample))
	f.Add([]byte("1 0 1 p 1 read >\n1 0 1 p 1 read <\n"))
	f.Add([]byte("x y z > <\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzReader(t, NewSysdigReader(bytes.NewReader(data), WithMaxLine(128)), len(data))
		fuzzReader(t, NewSysdigReader(bytes.NewReader(data), WithLenient(true)), len(data))
	})
}

func FuzzStrace(f *testing.F) {
	f.Add([]byte(straceSample))
	f.Add([]byte("[pid 1] 1.5 read(0) = 0\n"))
	f.Add([]byte("12:99:00 read(\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzReader(t, NewStraceReader(bytes.NewReader(data), WithMaxLine(128)), len(data))
		fuzzReader(t, NewStraceReader(bytes.NewReader(data), WithLenient(true)), len(data))
	})
}

func FuzzRecording(f *testing.F) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Meta{Arch: syscalls.X86_64, ContainerID: "c"}, WithTimestamps(true), WithTIDs(true), WithFrameEvents(3))
	for i := 0; i < 10; i++ {
		w.Write(Event{Nr: uint16(i), TID: 1, TS: int64(i * 100)})
	}
	w.Close()
	f.Add(buf.Bytes())
	buf.Reset()
	w, _ = NewWriter(&buf, Meta{Arch: syscalls.I386})
	w.Write(Event{Nr: 6})
	w.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewRecordReader(bytes.NewReader(data))
		if err != nil {
			if !classified(err) {
				t.Fatalf("unclassified header error: %v", err)
			}
			return
		}
		fuzzReader(t, r, len(data))
	})
}
