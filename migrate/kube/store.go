package kube

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// PodContainer names one container of one pod.
type PodContainer struct{ Namespace, Pod, Container string }

func (p PodContainer) String() string { return p.Namespace + "/" + p.Pod + "/" + p.Container }

// dnsLabel is what Kubernetes allows in namespace, pod and container
// names (pods may hold dots): nothing that could climb out of a directory.
var dnsName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

func (p PodContainer) check() error {
	for _, s := range []string{p.Namespace, p.Pod, p.Container} {
		if !dnsName.MatchString(s) || strings.Contains(s, "..") {
			return fmt.Errorf("pod container %s: %q is not a Kubernetes name", p, s)
		}
	}
	return nil
}

func (p PodContainer) dir() string { return p.Namespace + "_" + p.Pod + "_" + p.Container }

// A Store keeps the newest safe checkpoint archives of each pod container:
// at most perContainer of them, and at most maxBytes in all (the oldest
// go first). Archives are checked before they are kept.
type Store struct {
	dir          string
	perContainer int
	maxBytes     int64
	mu           sync.Mutex
}

// NewStore keeps archives under dir (created if missing).
func NewStore(dir string, perContainer int, maxBytes int64) (*Store, error) {
	if perContainer < 1 || maxBytes < 1 {
		return nil, fmt.Errorf("checkpoint store: keep at least one archive and one byte (got %d, %d)", perContainer, maxBytes)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("checkpoint store: %w", err)
	}
	return &Store{dir: dir, perContainer: perContainer, maxBytes: maxBytes}, nil
}

// Keep checks the archive at src and moves it into the store as pc's
// newest safe checkpoint, then prunes. A refused archive stays where it
// was, and nothing kept before is touched.
func (s *Store) Keep(pc PodContainer, src string) (string, error) {
	if err := pc.check(); err != nil {
		return "", err
	}
	if _, err := readArchiveInfo(src); err != nil {
		return "", fmt.Errorf("keep checkpoint of %s: %w", pc, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Join(s.dir, pc.dir())
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("keep checkpoint of %s: %w", pc, err)
	}
	dst := filepath.Join(dir, strconv.FormatInt(time.Now().UnixNano(), 10)+".tar")
	if err := moveFile(src, dst); err != nil {
		return "", fmt.Errorf("keep checkpoint of %s: %w", pc, err)
	}
	if err := s.prune(dst); err != nil {
		return dst, fmt.Errorf("keep checkpoint of %s: %w", pc, err)
	}
	return dst, nil
}

// Newest is pc's newest kept archive.
func (s *Store) Newest(pc PodContainer) (string, error) {
	if err := pc.check(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	all, err := s.archives()
	if err != nil {
		return "", err
	}
	for i := len(all) - 1; i >= 0; i-- {
		if filepath.Base(filepath.Dir(all[i].path)) == pc.dir() {
			return all[i].path, nil
		}
	}
	return "", fmt.Errorf("no safe checkpoint of %s: %w", pc, ErrNotFound)
}

type kept struct {
	path  string
	at    int64
	bytes int64
}

// archives lists every kept archive, oldest first.
func (s *Store) archives() ([]kept, error) {
	paths, err := filepath.Glob(filepath.Join(s.dir, "*", "*.tar"))
	if err != nil {
		return nil, err
	}
	var all []kept
	for _, p := range paths {
		at, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(p), ".tar"), 10, 64)
		st, serr := os.Stat(p)
		if err != nil || serr != nil {
			continue // not one of ours
		}
		all = append(all, kept{p, at, st.Size()})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].at < all[j].at })
	return all, nil
}

// prune removes the oldest archives past the bounds, never keep.
func (s *Store) prune(keep string) error {
	all, err := s.archives()
	if err != nil {
		return err
	}
	count := map[string]int{}
	var total int64
	for _, a := range all {
		count[filepath.Dir(a.path)]++
		total += a.bytes
	}
	var errs []error
	for _, a := range all {
		d := filepath.Dir(a.path)
		if a.path == keep || (count[d] <= s.perContainer && total <= s.maxBytes) {
			continue
		}
		if err := os.Remove(a.path); err != nil {
			errs = append(errs, err)
			continue
		}
		count[d]--
		total -= a.bytes
	}
	return errors.Join(errs...)
}

// moveFile renames src to dst, or, across file systems, copies it to a
// temporary beside dst, syncs and renames it there before removing src.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil || !errors.Is(err, syscall.EXDEV) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, in); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	return os.Remove(src)
}
