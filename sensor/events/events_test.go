package events_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/escape-mtd/escape/sensor/events"
)

func ev(i int) events.Event {
	return events.Event{Schema: events.SchemaVersion, Time: time.Unix(int64(i), 0).UTC(), Type: events.TypeAnomaly,
		Severity: events.SevCritical, Sensor: "h1", Container: &events.Container{Identity: "escape/c", ID: "c"},
		Epoch: &events.Epoch{Seq: uint32(i), Mismatches: 42}}
}

func TestFileSinkRotatesBySize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	s, err := events.NewFileSink(path, 2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := s.Emit(context.Background(), ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seqs := map[uint32]bool{}
	for _, p := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if st.Size() > 2048 || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %d bytes, mode %v", p, st.Size(), st.Mode())
		}
		f, _ := os.Open(p)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var e events.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("%s: line %q: %v", p, sc.Text(), err)
			}
			seqs[e.Epoch.Seq] = true
		}
		f.Close()
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("more backups than kept: %v", err)
	}
	if !seqs[99] || seqs[0] {
		t.Errorf("kept seqs %v: want the newest, not the oldest", len(seqs))
	}
}

func TestFileSinkRejectsBadConfig(t *testing.T) {
	for _, c := range []struct {
		path string
		max  int64
		keep int
	}{{"", 4096, 1}, {"x", 10, 1}, {"x", 4096, 0}, {"/nonexistent-dir/x", 4096, 1}} {
		if _, err := events.NewFileSink(c.path, c.max, c.keep); err == nil {
			t.Errorf("NewFileSink(%q, %d, %d) accepted", c.path, c.max, c.keep)
		}
	}
}

func TestWebhookRetriesWithBackoff(t *testing.T) {
	var calls atomic.Int32
	got := make(chan events.Event, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		var e events.Event
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &e); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook body %q: %v", b, err)
		}
		got <- e
	}))
	defer srv.Close()
	s, err := events.NewWebhookSink(srv.URL, events.WithInsecureHTTP(), events.WithRetry(5, 10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Emit(context.Background(), ev(7)); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-got:
		if e.Epoch.Seq != 7 {
			t.Errorf("delivered %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not delivered after retries")
	}
	s.Close()
	if calls.Load() != 3 || s.Sent.Load() != 1 || s.Dropped.Load() != 0 {
		t.Errorf("calls %d sent %d dropped %d", calls.Load(), s.Sent.Load(), s.Dropped.Load())
	}
}

func TestWebhookGivesUpOnClientErrorsAndBadURLs(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "no", http.StatusBadRequest)
	}))
	defer srv.Close()
	s, err := events.NewWebhookSink(srv.URL, events.WithInsecureHTTP(), events.WithRetry(5, 10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s.Emit(context.Background(), ev(1))
	s.Close()
	if calls.Load() != 1 || s.Dropped.Load() != 1 {
		t.Errorf("4xx: %d calls, %d dropped; want 1 and 1 (not retried)", calls.Load(), s.Dropped.Load())
	}
	for _, u := range []string{"", "ftp://x", "http://", "::"} {
		if _, err := events.NewWebhookSink(u, events.WithInsecureHTTP()); err == nil {
			t.Errorf("URL %q accepted", u)
		}
	}
}

// The intervention mark is an addition to schema 1: absent from unmarked
// events (their JSON is as before), round-tripped on marked ones, and an
// event written with it reads in a reader that predates it.
func TestInterventionSchema(t *testing.T) {
	plain, err := json.Marshal(ev(3))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(plain), "intervention") {
		t.Errorf("unmarked event names an intervention: %s", plain)
	}
	e := ev(4)
	e.Severity = events.SevWarning
	e.Intervention = &events.Intervention{Kind: "checkpoint", By: "agent"}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"intervention":{"kind":"checkpoint","by":"agent"}`) {
		t.Errorf("marked event: %s", b)
	}
	var back events.Event
	if err := json.Unmarshal(b, &back); err != nil || back.Intervention == nil || *back.Intervention != *e.Intervention {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	// A reader of schema 1 before the mark: the same fields, none unknown
	// to it that it must understand.
	var old struct {
		Schema   int    `json:"schema"`
		Type     string `json:"type"`
		Severity string `json:"severity"`
		Epoch    *struct {
			Seq uint32 `json:"seq"`
		} `json:"epoch"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&old); err != nil || old.Schema != events.SchemaVersion || old.Type != events.TypeAnomaly ||
		old.Epoch == nil || old.Epoch.Seq != 4 {
		t.Errorf("old reader: %+v %v", old, err)
	}
}

// Any JSON that decodes as an event encodes and decodes back to the same
// event: the schema has no field that does not survive its own encoding.
func FuzzEventJSON(f *testing.F) {
	for _, e := range []events.Event{ev(1), func() events.Event {
		e := ev(2)
		e.Intervention = &events.Intervention{Kind: "restore", By: "agent"}
		e.Epoch.Unseen = []events.Syscall{{Name: "execve", Nr: 59, Windows: 3, Novel: true}}
		return e
	}()} {
		b, _ := json.Marshal(e)
		f.Add(b)
	}
	f.Add([]byte(`{"schema":1,"intervention":null}`))
	f.Add([]byte(`{"container":{"id":"c","pod":{"namespace":"n","name":"p","uid":"u","container":"x","owner":"pod/p"}}}`))
	f.Add([]byte(`{"intervention":{"kind":"","by":""}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var e events.Event
		if json.Unmarshal(data, &e) != nil {
			return
		}
		b, err := json.Marshal(e)
		if err != nil {
			return // e.g. a time outside what encoding/json writes
		}
		var back events.Event
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("re-decode %s: %v", b, err)
		}
		b2, err := json.Marshal(back)
		if err != nil || string(b2) != string(b) {
			t.Fatalf("not stable:\n%s\n%s (%v)", b, b2, err)
		}
	})
}

// The pod is an addition to schema 1: absent from a plain container's
// event, round-tripped on a pod's, and ignored by a reader that predates it.
func TestPodSchema(t *testing.T) {
	plain, err := json.Marshal(ev(5))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(plain), `"pod"`) {
		t.Errorf("a plain container's event names a pod: %s", plain)
	}
	e := ev(6)
	e.Container.Pod = &events.Pod{Namespace: "shop", Name: "web-7d9c-x2k4q", UID: "0e6f", Container: "nginx", Owner: "deployment/web"}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"pod":{"namespace":"shop","name":"web-7d9c-x2k4q","uid":"0e6f","container":"nginx","owner":"deployment/web"}`) {
		t.Errorf("pod event: %s", b)
	}
	var back events.Event
	if err := json.Unmarshal(b, &back); err != nil || back.Container.Pod == nil || *back.Container.Pod != *e.Container.Pod {
		t.Fatalf("round trip: %+v %v", back.Container, err)
	}
	var old struct {
		Container struct {
			Identity string `json:"identity"`
			ID       string `json:"id"`
		} `json:"container"`
	}
	if err := json.Unmarshal(b, &old); err != nil || old.Container.ID != "c" || old.Container.Identity != "escape/c" {
		t.Errorf("old reader: %+v %v", old, err)
	}
}
