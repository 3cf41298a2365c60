package kube

import (
	"archive/tar"
	"bytes"
	"errors"
	"strings"
	"testing"
)

// tarEntry is one entry of a synthetic archive.
type tarEntry struct {
	name string
	body string
	typ  byte
}

func makeTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o600, Size: int64(len(e.body))}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if typ == tar.TypeSymlink {
			hdr.Linkname = "/etc/shadow"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

const testConfigDump = `{"id":"66bd1b9f","name":"redis_redis1_default_6b63_0","rootfsImage":"escape.local/redis:latest",` +
	`"rootfsImageRef":"sha256:5c0b2bbf","rootfsImageName":"escape.local/redis:latest","runtime":"io.containerd.runc.v2",` +
	`"checkpointedTime":"2026-12-03T13:33:08.103855217Z"}`

// validArchive has what ParseArchive requires, like the kubelet's.
func validArchive() []tarEntry {
	return []tarEntry{
		{name: "checkpoint/", typ: tar.TypeDir},
		{name: "checkpoint/inventory.img", body: "inventory"},
		{name: "checkpoint/pages-1.img", body: strings.Repeat("p", 4096)},
		{name: "config.dump", body: testConfigDump},
		{name: "spec.dump", body: `{"ociVersion":"1.2.0"}`},
		{name: "status.dump", body: `{"id":"66bd1b9f"}`},
		{name: "rootfs-diff.tar", body: ""},
	}
}

func TestParseArchiveReadsTheKubeletsArchive(t *testing.T) {
	info, err := ParseArchive(bytes.NewReader(makeTar(t, validArchive())))
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != "66bd1b9f" || info.RootfsImageName != "escape.local/redis:latest" || info.RootfsImageRef != "sha256:5c0b2bbf" {
		t.Errorf("info %+v", info)
	}
	if info.CheckpointedAt.IsZero() || info.Bytes < 4096 {
		t.Errorf("checkpointed at %v, %d bytes", info.CheckpointedAt, info.Bytes)
	}
}

func TestParseArchiveRefusesWhatCannotBeRestored(t *testing.T) {
	without := func(name string) []tarEntry {
		var out []tarEntry
		for _, e := range validArchive() {
			if e.name != name {
				out = append(out, e)
			}
		}
		return out
	}
	with := func(extra ...tarEntry) []tarEntry { return append(validArchive(), extra...) }
	replace := func(name, body string) []tarEntry {
		out := without(name)
		return append(out, tarEntry{name: name, body: body})
	}
	cases := map[string]struct {
		data []byte
		want string
	}{
		"not a tar":       {[]byte(strings.Repeat("garbage ", 200)), "read tar"},
		"empty":           {nil, "no config.dump"},
		"no config.dump":  {makeTar(t, without("config.dump")), "no config.dump"},
		"no spec.dump":    {makeTar(t, without("spec.dump")), "no spec.dump"},
		"no status.dump":  {makeTar(t, without("status.dump")), "no status.dump"},
		"no CRIU images":  {makeTar(t, without("checkpoint/inventory.img")), "no checkpoint/inventory.img"},
		"config not JSON": {makeTar(t, replace("config.dump", "{not json")), "not JSON"},
		"config no image": {makeTar(t, replace("config.dump", `{"id":"x"}`)), "names no container id or image"},
		"symlink":         {makeTar(t, with(tarEntry{name: "checkpoint/evil", typ: tar.TypeSymlink})), "neither a file nor a directory"},
		"climbs out":      {makeTar(t, with(tarEntry{name: "../../etc/cron.d/x", body: "x"})), "not a clean relative name"},
		"absolute":        {makeTar(t, with(tarEntry{name: "/etc/passwd", body: "x"})), "not a clean relative name"},
		"huge spec.dump":  {makeTar(t, replace("spec.dump", `"`+strings.Repeat("a", maxDumpFileBytes)+`"`)), "bytes"},
		"truncated":       {makeTar(t, validArchive())[:3000], "read tar"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseArchive(bytes.NewReader(c.data))
			if !errors.Is(err, ErrBadArchive) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("want ErrBadArchive mentioning %q, got %v", c.want, err)
			}
		})
	}
}

func FuzzParseArchive(f *testing.F) {
	f.Add(makeTar(f, validArchive()))
	f.Add(makeTar(f, []tarEntry{{name: "config.dump", body: testConfigDump}}))
	f.Add([]byte{})
	f.Add(makeTar(f, validArchive())[:700])
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := ParseArchive(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrBadArchive) {
				t.Fatalf("a refusal that is not ErrBadArchive: %v", err)
			}
			return
		}
		if info.ID == "" || info.RootfsImageRef == "" {
			t.Fatalf("accepted an archive without id or image: %+v", info)
		}
	})
}
