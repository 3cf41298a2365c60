package syscalls

import "fmt"

// Arch is a system-call number space.
type Arch uint8

// The supported architectures.
const (
	X86_64 Arch = iota + 1
	I386
)

// ParseArch accepts "x86_64"/"amd64" and "i386"/"x86"/"386".
func ParseArch(s string) (Arch, error) {
	switch s {
	case "x86_64", "amd64":
		return X86_64, nil
	case "i386", "x86", "386":
		return I386, nil
	}
	return 0, fmt.Errorf("unknown arch %q (want x86_64 or i386)", s)
}

func (a Arch) String() string {
	switch a {
	case X86_64:
		return "x86_64"
	case I386:
		return "i386"
	}
	return fmt.Sprintf("arch(%d)", uint8(a))
}

func (a Arch) names() []string {
	switch a {
	case X86_64:
		return x86_64Names[:]
	case I386:
		return i386Names[:]
	}
	return nil
}

// Read-only lookup tables derived once from the generated arrays.
var (
	x86_64Numbers = index(x86_64Names[:])
	i386Numbers   = index(i386Names[:])
)

func index(names []string) map[string]uint16 {
	m := make(map[string]uint16, len(names))
	for nr, n := range names {
		if n != "" {
			m[n] = uint16(nr)
		}
	}
	return m
}

// Name returns the syscall name of nr in arch a.
func (a Arch) Name(nr uint16) (string, bool) {
	ns := a.names()
	if int(nr) >= len(ns) || ns[nr] == "" {
		return "", false
	}
	return ns[nr], true
}

// Number returns the syscall number of name in arch a.
func (a Arch) Number(name string) (uint16, bool) {
	var m map[string]uint16
	switch a {
	case X86_64:
		m = x86_64Numbers
	case I386:
		m = i386Numbers
	default:
		return 0, false
	}
	nr, ok := m[name]
	return nr, ok
}

// Count is the number of named syscalls in arch a.
func (a Arch) Count() int {
	n := 0
	for _, s := range a.names() {
		if s != "" {
			n++
		}
	}
	return n
}

// i386Equivalents maps i386-only names to the x86_64 call that does the
// same job (the 64-bit-offset, 32-bit-uid and old-ABI variants). These are
// approximate by construction, so Translate reports exact=false for them.
// socketcall and ipc multiplex many calls and have no single equivalent.
var i386Equivalents = map[string]string{
	"mmap2": "mmap", "_llseek": "lseek", "stat64": "stat", "lstat64": "lstat",
	"fstat64": "fstat", "fstatat64": "newfstatat", "fcntl64": "fcntl",
	"truncate64": "truncate", "ftruncate64": "ftruncate", "sendfile64": "sendfile",
	"statfs64": "statfs", "fstatfs64": "fstatfs", "ugetrlimit": "getrlimit",
	"_newselect": "select", "waitpid": "wait4", "sigreturn": "rt_sigreturn",
	"sigaction": "rt_sigaction", "sigprocmask": "rt_sigprocmask", "sigsuspend": "rt_sigsuspend",
	"sigpending": "rt_sigpending", "getuid32": "getuid", "getgid32": "getgid",
	"geteuid32": "geteuid", "getegid32": "getegid", "setuid32": "setuid", "setgid32": "setgid",
	"setreuid32": "setreuid", "setregid32": "setregid", "getgroups32": "getgroups",
	"setgroups32": "setgroups", "fchown32": "fchown", "chown32": "chown", "lchown32": "lchown",
	"setresuid32": "setresuid", "getresuid32": "getresuid", "setresgid32": "setresgid",
	"getresgid32": "getresgid", "setfsuid32": "setfsuid", "setfsgid32": "setfsgid",
	"fadvise64_64": "fadvise64", "oldfstat": "fstat", "oldstat": "stat", "oldlstat": "lstat",
}

// Translate maps nr from one arch to another by name. exact is false when
// the mapping went through an i386-only equivalent (e.g. mmap2 -> mmap);
// ok is false when there is no counterpart (e.g. socketcall).
func Translate(from, to Arch, nr uint16) (out uint16, exact, ok bool) {
	name, ok := from.Name(nr)
	if !ok {
		return 0, false, false
	}
	if out, ok := to.Number(name); ok {
		return out, true, true
	}
	if from == I386 && to == X86_64 {
		if eq, found := i386Equivalents[name]; found {
			out, ok := to.Number(eq)
			return out, false, ok
		}
	}
	if from == X86_64 && to == I386 {
		for i386name, eq := range i386Equivalents {
			if eq == name {
				if out, ok := to.Number(i386name); ok {
					return out, false, true
				}
			}
		}
	}
	return 0, false, false
}
