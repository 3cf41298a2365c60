package main

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// libDirs are where Debian's dynamic loader finds the libraries of the
// machine's own programs (multiarch first, as in /etc/ld.so.conf.d).
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// closure returns the files a dynamically linked program needs to run:
// its interpreter and every library it names (DT_NEEDED), recursively,
// found in libDirs. It reads the ELF headers rather than running ldd, so
// nothing of the machine's is executed. A static program needs nothing.
func closure(bins ...string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	var visit func(file string) error
	visit = func(file string) error {
		f, err := elf.Open(file)
		if err != nil {
			return fmt.Errorf("read ELF %s: %w", file, err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return fmt.Errorf("%s: read interpreter: %w", file, err)
			}
			interp := string(b[:len(b)-1]) // NUL-terminated
			if !seen[interp] {
				seen[interp] = true
				out = append(out, interp)
			}
		}
		needed, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("%s: dynamic section: %w", file, err)
		}
		for _, lib := range needed {
			p, err := findLib(lib)
			if err != nil {
				return fmt.Errorf("%s needs %s: %w", file, lib, err)
			}
			if seen[p] {
				continue
			}
			seen[p] = true
			out = append(out, p)
			if err := visit(p); err != nil {
				return err
			}
		}
		return nil
	}
	for _, b := range bins {
		if err := visit(b); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func findLib(name string) (string, error) {
	for _, d := range libDirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("not found in " + fmt.Sprint(libDirs))
}
