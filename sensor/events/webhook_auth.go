package events

import (
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxAuthFile bounds the auth header file: a header, not a document.
const maxAuthFile = 8 << 10

// AuthHeader is one HTTP header line the webhook sends with every request.
type AuthHeader struct {
	Name  string
	Value string
}

// forbiddenAuthHeaders are headers the sink itself sets or that the
// transport owns: an auth file naming one would break the request.
var forbiddenAuthHeaders = map[string]bool{"Host": true, "Content-Type": true, "Content-Length": true,
	"Transfer-Encoding": true, "Connection": true, "Te": true, "Trailer": true, "Upgrade": true}

// ParseAuthHeader reads the content of an auth header file. It is one line,
// in one of two forms:
//
//   - a header, "Name: value" (a colon then a space or tab), sent as is:
//     "Authorization: Bearer eyJ...", "Authorization: Basic dXNlcjpwdw==",
//     "X-Api-Key: 0123abcd";
//   - a bare token (token68 characters only: letters, digits and -._~+/,
//     then '=' padding), sent as "Authorization: Bearer <token>".
//
// Leading and trailing white space (a final newline) is ignored. Errors
// never quote the content: it is a secret.
func ParseAuthHeader(data []byte) (AuthHeader, error) {
	s := strings.TrimSpace(string(data))
	if s == "" {
		return AuthHeader{}, errors.New("empty: want \"Name: value\" or a bare token")
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return AuthHeader{}, errors.New("more than one line: want one header or one token")
	}
	if name, value, ok := cutHeader(s); ok {
		if !isToken(name) {
			return AuthHeader{}, fmt.Errorf("header name of %d bytes is not an HTTP token", len(name))
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		if forbiddenAuthHeaders[name] {
			return AuthHeader{}, fmt.Errorf("header %s is the sink's own: name an auth header", name)
		}
		value = strings.TrimSpace(value)
		if value == "" || !isFieldValue(value) {
			return AuthHeader{}, fmt.Errorf("header %s: the value is empty or holds control characters", name)
		}
		return AuthHeader{Name: name, Value: value}, nil
	}
	if !isToken68(s) {
		return AuthHeader{}, errors.New("neither \"Name: value\" (a colon then a space) nor a bare token (letters, digits, -._~+/ and = padding)")
	}
	return AuthHeader{Name: "Authorization", Value: "Bearer " + s}, nil
}

// cutHeader splits "Name: value" at its first colon, if a space or tab
// follows it and the name has no white space.
func cutHeader(s string) (string, string, bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 || i+1 >= len(s) || (s[i+1] != ' ' && s[i+1] != '\t') {
		return "", "", false
	}
	if strings.ContainsAny(s[:i], " \t") {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

func isFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func isToken68(s string) bool {
	body := strings.TrimRight(s, "=")
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("-._~+/", c) >= 0) {
			return false
		}
	}
	return body != ""
}

// authFile is an auth header file, re-read whenever it changes (a
// rotation: rewritten in place, renamed over, or a Kubernetes Secret's
// symlink swapped), checked on every request by a stat. A file that turns
// unreadable or invalid keeps the last good header: the error is
// reported once per change, without the content.
type authFile struct {
	path string
	mu   sync.Mutex
	cur  AuthHeader
	seen fileStamp
	bad  fileStamp // the last stamp whose content was refused
}

// fileStamp tells one version of a file from another.
type fileStamp struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func stampOf(fi os.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(sys.Dev), sys.Ino
	}
	return st
}

// openAuthFile reads and checks path: a daemon must not start with an
// auth file it cannot use.
func openAuthFile(path string) (*authFile, error) {
	a := &authFile{path: path}
	h, st, err := a.read()
	if err != nil {
		return nil, err
	}
	a.cur, a.seen = h, st
	return a, nil
}

func (a *authFile) read() (AuthHeader, fileStamp, error) {
	f, err := os.Open(a.path)
	if err != nil {
		return AuthHeader{}, fileStamp{}, fmt.Errorf("webhook auth header file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return AuthHeader{}, fileStamp{}, fmt.Errorf("webhook auth header file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return AuthHeader{}, fileStamp{}, fmt.Errorf("webhook auth header file %s: not a regular file", a.path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxAuthFile+1))
	if err != nil {
		return AuthHeader{}, fileStamp{}, fmt.Errorf("webhook auth header file: %w", err)
	}
	st := stampOf(fi)
	if len(data) > maxAuthFile {
		return AuthHeader{}, st, fmt.Errorf("webhook auth header file %s: larger than %d bytes", a.path, maxAuthFile)
	}
	h, err := ParseAuthHeader(data)
	if err != nil {
		return AuthHeader{}, st, fmt.Errorf("webhook auth header file %s: %w", a.path, err)
	}
	return h, st, nil
}

// header returns the current header, re-reading the file if it changed.
// The error, when not nil, is news: the file changed into something that
// cannot be used (the last good header is returned with it).
func (a *authFile) header() (AuthHeader, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fi, err := os.Stat(a.path)
	if err != nil {
		if a.bad == (fileStamp{}) {
			a.bad = fileStamp{size: -1}
			return a.cur, fmt.Errorf("webhook auth header file: %w (the last header read is kept)", err)
		}
		return a.cur, nil
	}
	st := stampOf(fi)
	if st == a.seen || st == a.bad {
		return a.cur, nil
	}
	h, st, err := a.read()
	if err != nil {
		a.bad = st
		return a.cur, fmt.Errorf("%w (the last header read is kept)", err)
	}
	a.cur, a.seen, a.bad = h, st, fileStamp{}
	return a.cur, nil
}
