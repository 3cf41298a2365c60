package syscalls

import "testing"

func TestKnownNumbers(t *testing.T) {
	cases := []struct {
		a    Arch
		name string
		nr   uint16
	}{
		{X86_64, "read", 0}, {X86_64, "write", 1}, {X86_64, "openat", 257}, {X86_64, "execve", 59},
		{X86_64, "exit_group", 231}, {I386, "exit", 1}, {I386, "close", 6}, {I386, "clone", 120},
		{I386, "exit_group", 252}, {I386, "socketcall", 102}, {I386, "mmap2", 192},
	}
	for _, c := range cases {
		if nr, ok := c.a.Number(c.name); !ok || nr != c.nr {
			t.Errorf("%v %s = %d %v, want %d", c.a, c.name, nr, ok, c.nr)
		}
		if n, ok := c.a.Name(c.nr); !ok || n != c.name {
			t.Errorf("%v %d = %q, want %s", c.a, c.nr, n, c.name)
		}
	}
	if X86_64.Count() < 330 || I386.Count() < 400 {
		t.Fatalf("tables too small: %d %d", X86_64.Count(), I386.Count())
	}
	if _, ok := X86_64.Name(0xFFFE); ok {
		t.Fatal("name for out-of-range number")
	}
	if _, ok := X86_64.Number("no_such_call"); ok {
		t.Fatal("number for unknown name")
	}
}

func TestTranslate(t *testing.T) {
	if out, exact, ok := Translate(I386, X86_64, 6); !ok || !exact || out != 3 {
		t.Fatalf("close i386->x86_64 = %d %v %v", out, exact, ok)
	}
	if out, exact, ok := Translate(I386, X86_64, 192); !ok || exact || out != 9 {
		t.Fatalf("mmap2 -> mmap = %d %v %v", out, exact, ok)
	}
	if _, _, ok := Translate(I386, X86_64, 102); ok {
		t.Fatal("socketcall translated")
	}
	// Every exact x86_64 name present in i386 round-trips.
	for nr := uint16(0); nr < 500; nr++ {
		out, exact, ok := Translate(X86_64, I386, nr)
		if !ok || !exact {
			continue
		}
		back, _, ok := Translate(I386, X86_64, out)
		if !ok || back != nr {
			t.Fatalf("x86_64 %d -> i386 %d -> %d", nr, out, back)
		}
	}
	if a, err := ParseArch("amd64"); err != nil || a != X86_64 || a.String() != "x86_64" {
		t.Fatal("ParseArch amd64")
	}
	if _, err := ParseArch("arm64"); err == nil {
		t.Fatal("arm64 accepted")
	}
}
