package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/rimon-dev/rimon/measure"
)

type tarEnt struct {
	name, link string
	typ        byte
	mode       int64
	body       string
}

func makeTar(t *testing.T, ents []tarEnt) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// writeLayout writes an OCI layout of one image with these layers (the
// first gzip-compressed) and returns its directory.
func writeLayout(t *testing.T, layers ...[]byte) string {
	t.Helper()
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs", "sha256")
	os.MkdirAll(blobs, 0o755)
	put := func(b []byte) map[string]any {
		d := sha(b)
		os.WriteFile(filepath.Join(blobs, d), b, 0o644)
		return map[string]any{"digest": "sha256:" + d, "size": len(b)}
	}
	var diffIDs []string
	var descs []any
	for i, l := range layers {
		diffIDs = append(diffIDs, "sha256:"+sha(l))
		blob, mt := l, "application/vnd.oci.image.layer.v1.tar"
		if i == 0 {
			var z bytes.Buffer
			zw := gzip.NewWriter(&z)
			zw.Write(l)
			zw.Close()
			blob, mt = z.Bytes(), mt+"+gzip"
		}
		d := put(blob)
		d["mediaType"] = mt
		descs = append(descs, d)
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	cd := put(cfg)
	cd["mediaType"] = "application/vnd.oci.image.config.v1+json"
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cd, "layers": descs})
	md := put(man)
	md["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{md}})
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	return dir
}

// TestRootfsDigest: the root file system two layers make (whiteouts, an
// opaque directory, a hard link, a symbolic link out of the root, a name
// climbing out with ../, implicit parents) has the tree digest that
// measure.Tree gives for the same tree unpacked on disk.
func TestRootfsDigest(t *testing.T) {
	l1 := makeTar(t, []tarEnt{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, body: "root:x:0:0\n"},
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/app", typ: tar.TypeReg, mode: 0o4755, body: "app v1"},
		{name: "bin/app2", typ: tar.TypeLink, link: "bin/app", mode: 0o644},
		{name: "lnk", typ: tar.TypeSymlink, link: "/etc/passwd", mode: 0o777},
		{name: "../../escape", typ: tar.TypeReg, mode: 0o644, body: "x"},
		{name: "old/", typ: tar.TypeDir, mode: 0o750},
		{name: "old/a", typ: tar.TypeReg, mode: 0o644, body: "a"},
		{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
	})
	l2 := makeTar(t, []tarEnt{
		{name: "etc/.wh.passwd", typ: tar.TypeReg, mode: 0o644},
		{name: "old/.wh..wh..opq", typ: tar.TypeReg, mode: 0o644},
		{name: "old/b", typ: tar.TypeReg, mode: 0o640, body: "b"},
		{name: "new/deep/file", typ: tar.TypeReg, mode: 0o600, body: "deep"},
	})
	r, err := RootfsDigest(context.Background(), writeLayout(t, l1, l2), Options{})
	if err != nil {
		t.Fatal(err)
	}

	// The same tree, unpacked by hand.
	root := t.TempDir()
	mk := func(rel string, mode os.FileMode, body *string) {
		p := filepath.Join(root, rel)
		if body == nil {
			os.MkdirAll(p, 0o755)
		} else if err := os.WriteFile(p, []byte(*body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	str := func(s string) *string { return &s }
	mk("etc", 0o755, nil)
	mk("bin", 0o755, nil)
	mk("bin/app", 0o755|os.ModeSetuid, str("app v1"))
	mk("bin/app2", 0o755|os.ModeSetuid, str("app v1"))
	os.Symlink("/etc/passwd", filepath.Join(root, "lnk"))
	mk("escape", 0o644, str("x"))
	mk("old", 0o750, nil)
	mk("old/b", 0o640, str("b"))
	mk("new", 0o755, nil)
	mk("new/deep", 0o755, nil)
	mk("new/deep/file", 0o600, str("deep"))
	mk("run", 0o755, nil)
	if err := syscall.Mkfifo(filepath.Join(root, "run", "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(root, "run", "fifo"), 0o600)
	os.Chmod(root, 0o755)
	want, err := measure.Tree(context.Background(), root, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Digest != want.Digest {
		got := measure.EncodeTree(r.Entries)
		t.Errorf("RootfsDigest = %s, measure.Tree of the unpacked tree = %s\ngot:\n%s\nwant:\n%s", r.Digest, want.Digest, got, measure.EncodeTree(want.Entries))
	}
}

func TestRootfsDigestRefuses(t *testing.T) {
	bad := makeTar(t, []tarEnt{{name: "x", typ: tar.TypeLink, link: "nowhere", mode: 0o644}})
	if _, err := RootfsDigest(context.Background(), writeLayout(t, bad), Options{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a hard link to nothing: %v, want ErrCorrupt", err)
	}
	dir := writeLayout(t, makeTar(t, []tarEnt{{name: "a", typ: tar.TypeReg, mode: 0o644, body: "a"}}))
	// A layer edited after the fact is refused before any digest is given.
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	for _, b := range blobs {
		data, _ := os.ReadFile(b)
		if bytes.HasPrefix(data, gzipMagic) {
			os.WriteFile(b, append(data, 0), 0o644)
		}
	}
	if _, err := RootfsDigest(context.Background(), dir, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("an edited layer: %v, want ErrCorrupt", err)
	}
}
