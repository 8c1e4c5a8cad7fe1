package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The artifacts in testdata/ were written by podman, crane and Docker
// (testdata/SOURCES.md says how).

const (
	podmanAMD64Manifest = "sha256:06c6f0dd4e2bb4cb93a667194155e1ef91532c589bcafdc82568bf3937a1d730"
	podmanARM64Manifest = "sha256:fed4612d88555f2361759bf4c4ae7b47859590e9aefeb7c83897140959ba8a02"
	podmanAMD64Config   = "sha256:d017c22fb6e1e10572267ec7abb3facf6a7012dd58a8b1cf3775dd05a13c67ee"
	podmanARM64Config   = "sha256:ea91dd4b91922e7d27eb1c7147558a44c8235873e86b4a60a1aac185392b81a0"
	podmanTwoConfig     = "sha256:b05efffe83a177566f92bc35a6d711456c952ce39dd02710b40961381ed0da88"
	podmanIndex         = "sha256:f07242a308484ef6b7cde9e438d5c92c70dc04aefaee112dc0e5f47df186ac3f"
)

func hexOf(d string) string { return strings.SplitN(d, ":", 2)[1] }

var ignoreTags = cmpopts.IgnoreFields(Result{}, "Tags")

// TestRecordsUnchanged pins the result of images that rimon read before
// it learnt the other formats: their records must not change.
func TestRecordsUnchanged(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Result
	}{
		{"testdata/podman/docker-archive.tar", Result{Digest: hexOf(podmanAMD64Config), ConfigDigest: podmanAMD64Config, Blobs: 2, Format: "docker-archive"}},
		{"testdata/podman/oci-archive.tar", Result{Digest: hexOf(podmanAMD64Manifest), ManifestDigest: podmanAMD64Manifest, ConfigDigest: podmanAMD64Config, Blobs: 3, Format: "oci-archive"}},
		{"testdata/podman/oci-dir", Result{Digest: hexOf(podmanAMD64Manifest), ManifestDigest: podmanAMD64Manifest, ConfigDigest: podmanAMD64Config, Blobs: 3, Format: "oci-layout"}},
		{"testdata/podman/multi-arch-oci", Result{Digest: hexOf(podmanIndex), ManifestDigest: podmanIndex, ConfigDigest: podmanAMD64Config + "," + podmanARM64Config, Blobs: 7, Format: "oci-layout"}},
		{"testdata/ggcr/test_image_1.tar", Result{Digest: "6e0b05049ed9c17d02e1a55e80d6599dbfcce7f4f4b022e3c673e685789c470e", ConfigDigest: "sha256:6e0b05049ed9c17d02e1a55e80d6599dbfcce7f4f4b022e3c673e685789c470e", Blobs: 2, Format: "docker-archive"}},
	} {
		got, err := Verify(context.Background(), tc.path)
		if err != nil {
			t.Errorf("Verify(%s) = %v", tc.path, err)
			continue
		}
		if d := cmp.Diff(tc.want, got, ignoreTags); d != "" {
			t.Errorf("Verify(%s) (-want +got):\n%s", tc.path, d)
		}
	}
}

// TestArchiveFormats reads the archives that were refused before.
func TestArchiveFormats(t *testing.T) {
	const (
		helloConfig = "sha256:ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44"
		craneConfig = "sha256:885c2772751ee60781b35b1517159974281b1456b0137ae5d81ea9d9ee3b32bf"
		link1Config = "sha256:6e0b05049ed9c17d02e1a55e80d6599dbfcce7f4f4b022e3c673e685789c470e"
		link3Config = "sha256:d4c9adacde69c3d92446e0484cea29493e9fd573cf0c8febfc700d80c46697a4"
	)
	sumOf := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return sha256Hex(b)
	}
	manifestOf := func(archive string) string {
		t.Helper()
		return sha256Hex(tarFile(t, archive, "manifest.json"))
	}
	for _, tc := range []struct {
		name string
		path string
		opts Options
		want Result
	}{
		// crane writes gzip-compressed layers, checked against diff_ids
		// after decompression, and names the config sha256:<hex>.
		{"crane_gzip_layers_sha256_config_name", "testdata/crane/crane-append.tar", Options{},
			Result{Digest: hexOf(craneConfig), ConfigDigest: craneConfig, Blobs: 2, Format: "docker-archive"}},
		// Docker 25 saves an untagged image with an empty index.json.
		{"docker25_untagged", "testdata/ggcr/hello-world-v25.tar", Options{},
			Result{Digest: hexOf(helloConfig), ConfigDigest: helloConfig, Blobs: 2, Format: "docker-archive"}},
		// Several images, measured as a set named by manifest.json.
		{"docker_two_images", "testdata/ggcr/test_bundle.tar", Options{},
			Result{Digest: manifestOf("testdata/ggcr/test_bundle.tar"), ManifestDigest: "sha256:" + manifestOf("testdata/ggcr/test_bundle.tar"),
				ConfigDigest: "sha256:6e0b05049ed9c17d02e1a55e80d6599dbfcce7f4f4b022e3c673e685789c470e,sha256:930705ce23e3b6ed4c08746b6fe880089c864fbaf62482702ae3fdd66b8c7fe9", Blobs: 4, Format: "docker-archive"}},
		{"podman_multi_image", "testdata/podman/multi-docker-archive.tar", Options{},
			Result{Digest: manifestOf("testdata/podman/multi-docker-archive.tar"), ManifestDigest: "sha256:" + manifestOf("testdata/podman/multi-docker-archive.tar"),
				ConfigDigest: podmanTwoConfig + "," + podmanAMD64Config, Blobs: 4, Format: "docker-archive"}},
		{"podman_multi_image_choose_tag", "testdata/podman/multi-docker-archive.tar", Options{Ref: "localhost/rimon-two:1"},
			Result{Digest: hexOf(podmanTwoConfig), ConfigDigest: podmanTwoConfig, Blobs: 2, Format: "docker-archive"}},
		{"podman_multi_image_choose_config", "testdata/podman/multi-docker-archive.tar", Options{Ref: podmanAMD64Config},
			Result{Digest: hexOf(podmanAMD64Config), ConfigDigest: podmanAMD64Config, Blobs: 2, Format: "docker-archive"}},
		// Pre-25 docker save: the second image's first layer is a symbolic
		// link to the first image's layer.
		{"docker_symlinked_layer", "testdata/ggcr/test_link.tar", Options{Ref: "bazel/v1/tarball:test_image_3"},
			Result{Digest: hexOf(link3Config), ConfigDigest: link3Config, Blobs: 3, Format: "docker-archive"}},
		{"docker_symlinked_layer_set", "testdata/ggcr/test_link.tar", Options{},
			Result{Digest: manifestOf("testdata/ggcr/test_link.tar"), ManifestDigest: "sha256:" + manifestOf("testdata/ggcr/test_link.tar"),
				ConfigDigest: link1Config + "," + link3Config, Blobs: 5, Format: "docker-archive"}},
		// A single-platform export of a multi-platform index: the record
		// is the platform's manifest, the same as podman's save of that image.
		{"single_platform_export", "testdata/podman/amd64-only-oci", Options{Platform: "linux/amd64"},
			Result{Digest: hexOf(podmanAMD64Manifest), ManifestDigest: podmanAMD64Manifest, ConfigDigest: podmanAMD64Config, Blobs: 4, Format: "oci-layout"}},
		{"single_platform_export_archive", "testdata/podman/amd64-only-oci-archive.tar", Options{Platform: "linux/amd64"},
			Result{Digest: hexOf(podmanAMD64Manifest), ManifestDigest: podmanAMD64Manifest, ConfigDigest: podmanAMD64Config, Blobs: 4, Format: "oci-archive"}},
		{"multi_arch_choose_arm64", "testdata/podman/multi-arch-oci", Options{Platform: "linux/arm64/v8"},
			Result{Digest: hexOf(podmanARM64Manifest), ManifestDigest: podmanARM64Manifest, ConfigDigest: podmanARM64Config, Blobs: 4, Format: "oci-layout"}},
		// A platform read from the config when the descriptor has none.
		{"platform_of_plain_image", "testdata/podman/oci-dir", Options{Platform: "linux/amd64"},
			Result{Digest: hexOf(podmanAMD64Manifest), ManifestDigest: podmanAMD64Manifest, ConfigDigest: podmanAMD64Config, Blobs: 3, Format: "oci-layout"}},
		{"oci_choose_ref_name", "testdata/podman/oci-dir", Options{Ref: "localhost/rimon-test:amd64"},
			Result{Digest: hexOf(podmanAMD64Manifest), ManifestDigest: podmanAMD64Manifest, ConfigDigest: podmanAMD64Config, Blobs: 3, Format: "oci-layout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := VerifyWith(context.Background(), tc.path, tc.opts)
			if err != nil {
				t.Fatalf("VerifyWith(%s, %+v) = %v", tc.path, tc.opts, err)
			}
			if d := cmp.Diff(tc.want, got, ignoreTags); d != "" {
				t.Errorf("VerifyWith(%s, %+v) (-want +got):\n%s", tc.path, tc.opts, d)
			}
		})
	}
	if got := sumOf("testdata/podman/oci-dir/blobs/sha256/" + hexOf(podmanAMD64Manifest)); got != hexOf(podmanAMD64Manifest) {
		t.Errorf("testdata: manifest hashes to %s", got)
	}
}

// TestPlatformInIndexJSON: index.json itself lists the platform manifests
// (no nested index), as some tools write it.
func TestPlatformInIndexJSON(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "layout")
	if err := os.CopyFS(dir, os.DirFS("testdata/podman/multi-arch-oci")); err != nil {
		t.Fatal(err)
	}
	inner, err := os.ReadFile(filepath.Join(dir, "blobs/sha256", hexOf(podmanIndex)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), inner, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := VerifyWith(context.Background(), dir, Options{Platform: "linux/arm64"})
	want := Result{Digest: hexOf(podmanARM64Manifest), ManifestDigest: podmanARM64Manifest, ConfigDigest: podmanARM64Config, Blobs: 3, Format: "oci-layout"}
	if err != nil || !cmp.Equal(got, want, ignoreTags) {
		t.Errorf("VerifyWith(platform manifests in index.json) = %+v, %v; want %+v", got, err, want)
	}
}

func TestSelectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		opts       Options
		is         error
		want       string
	}{
		{"single_platform_export_without_platform", "testdata/podman/amd64-only-oci", Options{}, ErrCorrupt, "choose the platform with --platform"},
		{"missing_platform", "testdata/podman/amd64-only-oci", Options{Platform: "linux/arm64"}, ErrCorrupt, podmanARM64Manifest},
		{"unknown_platform", "testdata/podman/multi-arch-oci", Options{Platform: "linux/s390x"}, ErrSelect, "linux/amd64, linux/arm64"},
		{"ambiguous_platform", "testdata/podman/multi-docker-archive.tar", Options{Platform: "linux/amd64"}, ErrSelect, "2 images"},
		{"unknown_ref", "testdata/podman/multi-docker-archive.tar", Options{Ref: "nope:1"}, ErrSelect, "localhost/rimon-two:1"},
		{"unknown_oci_ref", "testdata/podman/oci-dir", Options{Ref: "nope:1"}, ErrSelect, "localhost/rimon-test:amd64"},
		{"bad_platform", "testdata/podman/oci-dir", Options{Platform: "amd64"}, nil, "want os/architecture"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyWith(context.Background(), tc.path, tc.opts)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("VerifyWith(%s, %+v) = %v, want %v containing %q", tc.path, tc.opts, err, tc.is, tc.want)
			}
		})
	}
	if err := (Options{Platform: "linux/"}).Validate(); err == nil {
		t.Error(`Options{Platform: "linux/"}.Validate() = nil, want an error`)
	}
}

// tarEntries reads an archive's entries in order.
type tarItem struct {
	hdr  tar.Header
	data []byte
}

func readTar(t *testing.T, p string) []tarItem {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var items []tarItem
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return items
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, tarItem{*h, b})
	}
}

func writeItems(t *testing.T, items []tarItem) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, it := range items {
		h := it.hdr
		h.Size = int64(len(it.data))
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write(it.data)
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func tarFile(t *testing.T, p, name string) []byte {
	t.Helper()
	for _, it := range readTar(t, p) {
		if it.hdr.Name == name {
			return it.data
		}
	}
	t.Fatalf("%s has no %s", p, name)
	return nil
}

// edit rewrites the archive at p with fn applied to every entry.
func edit(t *testing.T, p string, fn func(it *tarItem)) string {
	items := readTar(t, p)
	for i := range items {
		fn(&items[i])
	}
	return writeItems(t, items)
}

const linkedLayer = "b159278ac0c8813245b6c3b22cbbe7abefe3b2ec3fac6c7e87138811e1ef2a88/layer.tar"

// oneImage keeps only the second image of test_link.tar (whose first layer
// is a link) in its manifest.json.
func oneImage(it *tarItem) {
	if it.hdr.Name == "manifest.json" {
		var es []json.RawMessage
		json.Unmarshal(it.data, &es)
		it.data, _ = json.Marshal(es[1:])
	}
}

func TestSymlinkedLayer(t *testing.T) {
	const link3Config = "sha256:d4c9adacde69c3d92446e0484cea29493e9fd573cf0c8febfc700d80c46697a4"
	r, err := Verify(context.Background(), edit(t, "testdata/ggcr/test_link.tar", oneImage))
	if err != nil || r.ConfigDigest != link3Config {
		t.Fatalf("Verify(test_link.tar with one image) = %+v, %v; want config %s", r, err, link3Config)
	}
	// The same archive with the link made a hard link reads the same.
	hard := edit(t, "testdata/ggcr/test_link.tar", func(it *tarItem) {
		oneImage(it)
		if it.hdr.Name == linkedLayer {
			it.hdr.Typeflag, it.hdr.Linkname = tar.TypeLink, "6e77476643c3155b1e9ae07dd5a4c8288bdb6590c131c222b7a3f277dec1e266/layer.tar"
		}
	})
	if r2, err := Verify(context.Background(), hard); err != nil || !cmp.Equal(r, r2) || r2.ConfigDigest != link3Config {
		t.Errorf("Verify(hard link) = %+v, %v", r2, err)
	}
	for _, tc := range []struct {
		name, target string
		typ          byte
		want         string
	}{
		{"absolute", "/etc/passwd", tar.TypeSymlink, "leaves the archive"},
		{"dotdot", "../../../etc/passwd", tar.TypeSymlink, "leaves the archive"},
		{"hard_dotdot", "../etc/passwd", tar.TypeLink, "leaves the archive"},
		{"loop", "layer.tar", tar.TypeSymlink, "more than 16 links"},
		{"missing", "../nothere/layer.tar", tar.TypeSymlink, "not in the archive"},
		{"other_file", "../6e0b05049ed9c17d02e1a55e80d6599dbfcce7f4f4b022e3c673e685789c470e.json", tar.TypeSymlink, "diff_ids[0] says"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := edit(t, "testdata/ggcr/test_link.tar", func(it *tarItem) {
				oneImage(it)
				if it.hdr.Name == linkedLayer {
					it.hdr.Typeflag, it.hdr.Linkname = tc.typ, tc.target
				}
			})
			_, err := Verify(context.Background(), p)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Verify(link to %s) = %v, want ErrCorrupt containing %q", tc.target, err, tc.want)
			}
		})
	}
}

func gzipped(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func gunzipped(t *testing.T, b []byte) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCraneArchiveTampered(t *testing.T) {
	const crane = "testdata/crane/crane-append.tar"
	const layer = "d33ec25e384288d885323b412efdfce8eaa364833aa2c2cd9856cd54a1080284.tar.gz"
	const config = "sha256:885c2772751ee60781b35b1517159974281b1456b0137ae5d81ea9d9ee3b32bf"
	for _, tc := range []struct {
		name string
		fn   func(it *tarItem)
		want string
	}{
		{"layer_content", func(it *tarItem) {
			if it.hdr.Name == layer {
				plain := gunzipped(t, it.data)
				plain[len(plain)/3] ^= 1
				it.data = gzipped(t, plain)
			}
		}, "(uncompressed) hashes to"},
		{"layer_not_gzip", func(it *tarItem) {
			if it.hdr.Name == layer {
				it.data = gunzipped(t, it.data)[1:]
			}
		}, "diff_ids[0] says"},
		{"layer_truncated_gzip", func(it *tarItem) {
			if it.hdr.Name == layer {
				it.data = it.data[:len(it.data)-10]
			}
		}, layer},
		{"layer_zstd", func(it *tarItem) {
			if it.hdr.Name == layer {
				it.data = append([]byte{0x28, 0xb5, 0x2f, 0xfd}, it.data...)
			}
		}, "zstd"},
		// The message names the two digests that differ.
		{"config", func(it *tarItem) {
			if it.hdr.Name == config {
				it.data = bytes.Replace(it.data, []byte("layers"), []byte("Layers"), 1)
			}
		}, "its name says " + config + ", its bytes hash to sha256:" + sha256Hex(bytes.Replace(tarFile(t, crane, config), []byte("layers"), []byte("Layers"), 1))},
		{"layer_path_dotdot", func(it *tarItem) {
			if it.hdr.Name == "manifest.json" {
				it.data = bytes.Replace(it.data, []byte(layer), []byte("../../"+layer), 1)
			}
		}, "leaves the archive"},
		{"layer_path_absolute", func(it *tarItem) {
			if it.hdr.Name == "manifest.json" {
				it.data = bytes.Replace(it.data, []byte(layer), []byte("/tmp/"+layer), 1)
			}
		}, "leaves the archive"},
		{"config_path_dotdot", func(it *tarItem) {
			if it.hdr.Name == "manifest.json" {
				it.data = bytes.Replace(it.data, []byte(`"`+config), []byte(`"../`+config), 1)
			}
		}, "leaves the archive"},
		{"config_name_without_digest", func(it *tarItem) {
			if it.hdr.Name == config {
				it.hdr.Name = "config.json"
			}
			if it.hdr.Name == "manifest.json" {
				it.data = bytes.Replace(it.data, []byte(config), []byte("config.json"), 1)
			}
		}, "carries no digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(context.Background(), edit(t, crane, tc.fn))
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Verify = %v, want ErrCorrupt containing %q", err, tc.want)
			}
		})
	}
}

func TestDocker25Tampered(t *testing.T) {
	const layer = "blobs/sha256/12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43"
	p := edit(t, "testdata/ggcr/hello-world-v25.tar", func(it *tarItem) {
		if it.hdr.Name == layer {
			it.data[600] ^= 1
		}
	})
	if _, err := Verify(context.Background(), p); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), layer) {
		t.Errorf("Verify(tampered Docker 25 layer) = %v, want ErrCorrupt naming %s", err, layer)
	}
}

// TestLayoutLinkOutside: a blob of a layout directory that is a link to a
// file outside the directory is refused, even with the right content.
func TestLayoutLinkOutside(t *testing.T) {
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	if err := os.CopyFS(layout, os.DirFS("testdata/podman/oci-dir")); err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(layout, "blobs/sha256/42b4d56de60125dff4a2460fe50d82022c905c50cf028cbf5baeda5dc7f738d6")
	if err := os.Rename(blob, filepath.Join(dir, "outside")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../outside", blob); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(context.Background(), layout); !errors.Is(err, ErrCorrupt) || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Verify(layout with a blob linked outside) = %v, want ErrCorrupt", err)
	}
	// A link inside the layout is fine.
	os.Remove(blob)
	os.Rename(filepath.Join(dir, "outside"), filepath.Join(layout, "blobs/elsewhere"))
	os.Symlink("../elsewhere", blob)
	if _, err := Verify(context.Background(), layout); err != nil {
		t.Errorf("Verify(layout with a blob linked inside) = %v", err)
	}
}

// sha512Layout is buildOCI with sha512 digests.
func sha512Layout(t *testing.T) (files map[string][]byte, manifestDigest, manifestSHA256, configDigest string) {
	files = map[string][]byte{"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`)}
	blob := func(mt string, b []byte) descriptor {
		s := sha512.Sum512(b)
		d := descriptor{MediaType: mt, Digest: "sha512:" + hex.EncodeToString(s[:]), Size: int64(len(b))}
		files["blobs/sha512/"+hex.EncodeToString(s[:])] = b
		return d
	}
	layer := blob("application/vnd.oci.image.layer.v1.tar+gzip", gzipped(t, []byte("layer tar bytes")))
	cfg := blob("application/vnd.oci.image.config.v1+json", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	mb, _ := json.Marshal(manifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.manifest.v1+json", Config: cfg, Layers: []descriptor{layer}})
	md := blob("application/vnd.oci.image.manifest.v1+json", mb)
	files["index.json"], _ = json.Marshal(index{SchemaVersion: 2, Manifests: []descriptor{md}})
	s := sha256.Sum256(mb)
	return files, md.Digest, hex.EncodeToString(s[:]), cfg.Digest
}

func TestSHA512Blobs(t *testing.T) {
	files, md, msum, cd := sha512Layout(t)
	for _, form := range []string{"oci-layout", "oci-archive"} {
		p := writeDir(t, files)
		if form == "oci-archive" {
			p = writeTar(t, files)
		}
		got, err := Verify(context.Background(), p)
		want := Result{Digest: msum, ManifestDigest: md, ConfigDigest: cd, Blobs: 3, Format: form}
		if err != nil || !cmp.Equal(got, want) {
			t.Errorf("Verify(sha512 %s) = %+v, %v; want %+v", form, got, err, want)
		}
	}
	for name, b := range files {
		if strings.HasPrefix(name, "blobs/") && bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
			files[name] = append(b[:len(b):len(b)], 0)
			files[name] = files[name][1:]
		}
	}
	if _, err := Verify(context.Background(), writeDir(t, files)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "hashes to sha512:") {
		t.Errorf("Verify(tampered sha512 layer) = %v, want ErrCorrupt", err)
	}
}

// FuzzVerifyArchive feeds mutated archives to Verify: it must not panic,
// and whatever it accepts must still be an image whose recorded digest is
// the SHA-256 of one of the archive's files (manifest, config or the list
// of images). The seeds are whole archives (up to 20 KiB): run it with
// -fuzzminimizetime 1s, or the default minute spent minimizing each new
// input stalls it.
func FuzzVerifyArchive(f *testing.F) {
	for _, p := range []string{"testdata/crane/crane-append.tar", "testdata/podman/docker-archive.tar", "testdata/podman/oci-archive.tar",
		"testdata/ggcr/hello-world-v25.tar", "testdata/podman/amd64-only-oci-archive.tar"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "")
		f.Add(b, "linux/amd64")
	}
	p := filepath.Join(f.TempDir(), "a.tar") // one file: inputs run one at a time
	f.Fuzz(func(t *testing.T, archive []byte, plat string) {
		if err := os.WriteFile(p, archive, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := VerifyWith(context.Background(), p, Options{Platform: plat})
		if err != nil {
			return
		}
		sums := map[string]bool{}
		tr := tar.NewReader(bytes.NewReader(archive))
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if h.Typeflag == tar.TypeReg {
				b, _ := io.ReadAll(tr)
				sums[sha256Hex(b)] = true
			}
		}
		if !sums[r.Digest] {
			t.Errorf("VerifyWith accepted an archive with no file of SHA-256 %s (%+v)", r.Digest, r)
		}
	})
}
