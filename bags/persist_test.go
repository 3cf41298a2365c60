package bags

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func trainedProfile(t testing.TB) *Profile {
	t.Helper()
	p := NewProfile(WithWindow(5), WithEpoch(200), WithThreshold(7), WithWorkload("nginx"),
		WithOnlineLearning(true), WithAutoStop(3), WithMaxBags(5000))
	r := rand.New(rand.NewPCG(5, 6))
	x, _ := NewWindower(5, 200)
	for i := 0; i < 20000; i++ {
		if e, ok := x.Push(uint16(r.IntN(6) * 7)); ok {
			if _, err := p.Train(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	return p
}

func TestPersistRoundTrip(t *testing.T) {
	p := trainedProfile(t)
	var buf bytes.Buffer
	if _, err := p.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	q, err := ReadProfile(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if p.Stats() != q.Stats() || q.Window() != 5 || q.EpochLen() != 200 || q.Threshold() != 7 ||
		q.Workload() != "nginx" || q.Arch() != "x86_64" {
		t.Fatalf("config/stats differ: %+v vs %+v", p.Stats(), q.Stats())
	}
	n := 0
	p.Range(func(b Bag, f uint32) bool {
		if g, ok := q.Freq(b); !ok || g != f {
			t.Fatalf("bag %v: %d/%v want %d", b, g, ok, f)
		}
		n++
		return true
	})
	if n == 0 || n != q.Stats().Bags {
		t.Fatalf("%d bags compared, %d loaded", n, q.Stats().Bags)
	}
	var again bytes.Buffer
	q.WriteTo(&again)
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Fatal("export is not deterministic")
	}
	if _, err := ReadProfile(bytes.NewReader(buf.Bytes()), WithWindow(6)); !errors.Is(err, ErrConfig) {
		t.Fatalf("window override accepted: %v", err)
	}
	if r, err := ReadProfile(bytes.NewReader(buf.Bytes()), WithThreshold(99)); err != nil || r.Threshold() != 99 {
		t.Fatalf("threshold override: %v", err)
	}
}

func TestCorruptAndTruncatedProfiles(t *testing.T) {
	var buf bytes.Buffer
	trainedProfile(t).WriteTo(&buf)
	good := buf.Bytes()
	cases := map[string][]byte{
		"empty":        {},
		"magic only":   []byte(fileMagic),
		"truncated":    good[:len(good)/2],
		"last byte":    good[:len(good)-1],
		"not profile":  []byte(strings.Repeat("hello world\n", 20)),
		"flipped body": flip(good, len(good)/2),
		"flipped sum":  flip(good, len(good)-3),
	}
	for name, data := range cases {
		_, err := ReadProfile(bytes.NewReader(data))
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
	v3 := append([]byte(nil), good...)
	v3[8] = 3
	if _, err := ReadProfile(bytes.NewReader(v3)); !errors.Is(err, ErrVersion) {
		t.Errorf("future version: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x40
	return c
}

func TestSaveFileAtomicAndKeepsCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nginx.bosc")
	p := trainedProfile(t)
	if err := p.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	q, err := LoadFile(path)
	if err != nil || q.Stats() != p.Stats() {
		t.Fatalf("load: %v", err)
	}
	// Corrupt the file on disk: loading must fail clearly and leave it as is.
	data, _ := os.ReadFile(path)
	bad := data[:len(data)-10]
	os.WriteFile(path, bad, 0o600)
	if _, err := LoadFile(path); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt load: %v", err)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, bad) {
		t.Fatal("failed load modified the file")
	}
	// Saving over a corrupt file keeps it aside instead of destroying it.
	if err := p.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var aside, tmp int
	for _, e := range ents {
		switch {
		case strings.Contains(e.Name(), ".corrupt-"):
			aside++
			if kept, _ := os.ReadFile(filepath.Join(dir, e.Name())); !bytes.Equal(kept, bad) {
				t.Fatal("aside copy differs from the corrupt file")
			}
		case strings.Contains(e.Name(), ".tmp-"):
			tmp++
		}
	}
	if aside != 1 || tmp != 0 {
		t.Fatalf("%d aside files, %d temp files left: %v", aside, tmp, ents)
	}
	if _, err := LoadFile(path); err != nil {
		t.Fatalf("new profile not loadable: %v", err)
	}
	if err := p.SaveFile(filepath.Join(dir, "missing", "x.bosc")); err == nil {
		t.Fatal("save into a missing directory succeeded")
	}
}

func FuzzReadProfile(f *testing.F) {
	var buf bytes.Buffer
	trainedProfile(f).WriteTo(&buf)
	f.Add(buf.Bytes())
	small := NewProfile(WithWindow(2))
	small.Train(ep(1, bc(1, 1, 2)))
	buf.Reset()
	small.WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte(fileMagic))
	if v1, err := os.ReadFile("testdata/v1.bosc"); err == nil {
		f.Add(v1)
	}
	f.Add(sequenceProfileBytes(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ReadProfile(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrConfig) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		// Anything accepted must re-export to the same bytes (canonical
		// form); a version 1 file re-exports as version 2, which must.
		var out bytes.Buffer
		if _, err := p.WriteTo(&out); err != nil {
			t.Fatal(err)
		}
		if data[8] == fileVersionV1 {
			q, err := ReadProfile(bytes.NewReader(out.Bytes()))
			if err != nil {
				t.Fatalf("re-export of a version 1 profile does not load: %v", err)
			}
			if q.Stats() != p.Stats() || q.Threshold() != p.Threshold() {
				t.Fatal("version 1 profile changed on re-export")
			}
			data = append([]byte(nil), out.Bytes()...)
			out.Reset()
			q.WriteTo(&out)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatal("accepted profile does not round-trip")
		}
	})
}
