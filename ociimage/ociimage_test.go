package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// image is a small image built by the test: files of an OCI layout.
type image struct {
	files    map[string][]byte
	manifest string
	config   string
}

func buildOCI(t *testing.T) image {
	t.Helper()
	files := map[string][]byte{"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`)}
	blob := func(b []byte) descriptor {
		d := descriptor{Digest: digest(b), Size: int64(len(b))}
		files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")] = b
		return d
	}
	layer := blob([]byte("layer tar bytes, compressed in real life"))
	layer.MediaType = "application/vnd.oci.image.layer.v1.tar+gzip"
	cfg := blob([]byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	cfg.MediaType = "application/vnd.oci.image.config.v1+json"
	mb, _ := json.Marshal(manifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.manifest.v1+json", Config: cfg, Layers: []descriptor{layer}})
	md := blob(mb)
	md.MediaType = "application/vnd.oci.image.manifest.v1+json"
	ib, _ := json.Marshal(index{SchemaVersion: 2, Manifests: []descriptor{md}})
	files["index.json"] = ib
	return image{files: files, manifest: md.Digest, config: cfg.Digest}
}

func writeDir(t *testing.T, files map[string][]byte) string {
	dir := t.TempDir()
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeTar(t *testing.T, files map[string][]byte) string {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, b := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOCILayoutAndArchive(t *testing.T) {
	img := buildOCI(t)
	for name, p := range map[string]string{"oci-layout": writeDir(t, img.files), "oci-archive": writeTar(t, img.files)} {
		r, err := Verify(context.Background(), p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.ManifestDigest != img.manifest || r.ConfigDigest != img.config || r.Digest != strings.TrimPrefix(img.manifest, "sha256:") || r.Blobs != 3 || r.Format != name {
			t.Errorf("%s: Verify = %+v, want manifest %s config %s", name, r, img.manifest, img.config)
		}
	}
}

func TestDockerArchive(t *testing.T) {
	layer := []byte("uncompressed layer tar")
	cfg := []byte(`{"rootfs":{"type":"layers","diff_ids":["` + digest(layer) + `"]}}`)
	cfgName := strings.TrimPrefix(digest(cfg), "sha256:") + ".json"
	man, _ := json.Marshal([]dockerEntry{{Config: cfgName, RepoTags: []string{"web:1.0"}, Layers: []string{"abc/layer.tar"}}})
	files := map[string][]byte{"manifest.json": man, cfgName: cfg, "abc/layer.tar": layer}
	r, err := Verify(context.Background(), writeTar(t, files))
	if err != nil {
		t.Fatal(err)
	}
	if r.ConfigDigest != digest(cfg) || r.ManifestDigest != "" || r.Tags[0] != "web:1.0" || r.Format != "docker-archive" {
		t.Errorf("Verify = %+v", r)
	}
	files["abc/layer.tar"] = []byte("tampered layer tar!!!!")
	if _, err := Verify(context.Background(), writeTar(t, files)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "abc/layer.tar") {
		t.Errorf("Verify(tampered docker layer) = %v, want ErrCorrupt naming the layer", err)
	}
}

func TestCorruptImagesAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(img image)
		want string
	}{
		{"flipped_layer_byte", func(img image) {
			for n, b := range img.files {
				if bytes.HasPrefix(b, []byte("layer tar")) {
					img.files[n] = append([]byte("L"), b[1:]...)
				}
			}
		}, "hashes to"},
		{"missing_blob", func(img image) {
			for n, b := range img.files {
				if bytes.HasPrefix(b, []byte("layer tar")) {
					delete(img.files, n)
				}
			}
		}, "blob sha256:"},
		{"wrong_size", func(img image) {
			var ib index
			json.Unmarshal(img.files["index.json"], &ib)
			ib.Manifests[0].Size++
			img.files["index.json"], _ = json.Marshal(ib)
		}, "its descriptor says"},
		{"bad_layout_version", func(img image) { img.files["oci-layout"] = []byte(`{"imageLayoutVersion":"2"}`) }, "oci-layout version"},
		{"bad_digest", func(img image) {
			img.files["index.json"] = []byte(`{"schemaVersion":2,"manifests":[{"digest":"md5:abc","size":1}]}`)
		}, "only sha256"},
		{"escape", func(img image) {
			img.files["index.json"] = []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:../../../../etc/passwd","size":1}]}`)
		}, "only sha256"},
	} {
		for _, form := range []string{"dir", "tar"} {
			t.Run(tc.name+"_"+form, func(t *testing.T) {
				img := buildOCI(t)
				tc.edit(img)
				p := writeDir(t, img.files)
				if form == "tar" {
					p = writeTar(t, img.files)
				}
				_, err := Verify(context.Background(), p)
				if !errors.Is(err, ErrCorrupt) || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Verify = %v, want ErrCorrupt (not ErrNotExist) containing %q", err, tc.want)
				}
			})
		}
	}
}

func TestMissingImageIsAbsent(t *testing.T) {
	if _, err := Verify(context.Background(), filepath.Join(t.TempDir(), "none.tar")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Verify(missing) = %v, want ErrNotExist", err)
	}
}
