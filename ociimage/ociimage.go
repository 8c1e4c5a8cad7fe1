// Package ociimage verifies container images stored on disk and reports the
// digests a registry publishes for them.
//
// It reads an OCI image layout directory (oci-layout, index.json, blobs/)
// or a tar archive written by docker save or podman save, in either the OCI
// layout or the older docker layout (manifest.json, <config>.json,
// <layer>/layer.tar). Every blob is hashed and checked against the digest
// that names it, and its size against the size its descriptor declares;
// for the docker layout, each layer is checked against the config's
// rootfs.diff_ids. Nothing is trusted before it is checked.
package ociimage

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rimon-dev/rimon/eventlog"
)

// ErrCorrupt means a blob does not match its digest or declared size, or
// the image's JSON is malformed.
var ErrCorrupt = errors.New("image is corrupt")

// maxJSON bounds the JSON documents (index, manifests, configs) read into memory.
const maxJSON = 4 << 20

// Result describes a verified image.
type Result struct {
	// Digest is what rimon records as the image's sha256: the manifest
	// digest when there is one, else the config digest (hex, no prefix).
	Digest string
	// ManifestDigest is "sha256:…" of the image manifest (or of the index,
	// when the layout holds several manifests); empty for the docker layout.
	ManifestDigest string
	// ConfigDigest is "sha256:…" of the image configuration.
	ConfigDigest string
	// Tags are the names the archive gives the image (informational).
	Tags []string
	// Blobs is the number of blobs checked.
	Blobs int
	// Format is "oci-layout", "oci-archive" or "docker-archive".
	Format string
}

// Fields returns the extra record fields for the result.
func (r Result) Fields() []eventlog.Field {
	f := []eventlog.Field{{Key: "config_digest", Str: r.ConfigDigest}, {Key: "image_format", Str: r.Format}}
	if r.ManifestDigest != "" {
		f = append(f, eventlog.Field{Key: "manifest_digest", Str: r.ManifestDigest})
	}
	return f
}

type descriptor struct {
	MediaType string            `json:"mediaType"`
	Digest    string            `json:"digest"`
	Size      int64             `json:"size"`
	Platform  map[string]string `json:"platform,omitempty"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
	Manifests     []descriptor `json:"manifests"` // when this is a nested index
}

// store gives access to blobs by path inside the layout.
type store interface {
	// hash returns the sha256 (hex) and size of the file at name.
	hash(ctx context.Context, name string) (string, int64, error)
	// read returns the content of a small file.
	read(name string) ([]byte, error)
	has(name string) bool
}

// Verify checks the image at path (a directory or an archive).
func Verify(ctx context.Context, p string) (Result, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return Result{}, fmt.Errorf("image %s: %w", p, err)
	}
	r, err := verify(ctx, p, fi)
	if err != nil && errors.Is(err, fs.ErrNotExist) {
		// Something the image names is missing: the image is corrupt, not absent.
		return Result{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return r, err
}

func verify(ctx context.Context, p string, fi fs.FileInfo) (Result, error) {
	if fi.IsDir() {
		r, err := verifyOCI(ctx, dirStore{p})
		if err != nil {
			return Result{}, fmt.Errorf("image %s: %w", p, err)
		}
		r.Format = "oci-layout"
		return r, nil
	}
	st, err := readArchive(ctx, p)
	if err != nil {
		return Result{}, fmt.Errorf("image %s: %w", p, err)
	}
	var r Result
	switch {
	case st.has("index.json"):
		r, err = verifyOCI(ctx, st)
		r.Format = "oci-archive"
		if err == nil && st.has("manifest.json") {
			r.Tags, _ = dockerTags(st)
		}
	case st.has("manifest.json"):
		r, err = verifyDocker(ctx, st)
		r.Format = "docker-archive"
	default:
		err = fmt.Errorf("%w: neither index.json nor manifest.json: not an OCI layout or docker save archive", ErrCorrupt)
	}
	if err != nil {
		return Result{}, fmt.Errorf("image %s: %w", p, err)
	}
	return r, nil
}

func parseDigest(d string) (string, error) {
	alg, hexd, ok := strings.Cut(d, ":")
	if !ok || alg != "sha256" || len(hexd) != 64 {
		return "", fmt.Errorf("%w: digest %q: only sha256:<64 hex> is supported", ErrCorrupt, d)
	}
	if _, err := hex.DecodeString(hexd); err != nil || strings.ToLower(hexd) != hexd {
		return "", fmt.Errorf("%w: digest %q is not lowercase hex", ErrCorrupt, d)
	}
	return hexd, nil
}

// checkBlob verifies a descriptor's blob.
func checkBlob(ctx context.Context, st store, d descriptor) error {
	hexd, err := parseDigest(d.Digest)
	if err != nil {
		return err
	}
	name := "blobs/sha256/" + hexd
	got, size, err := st.hash(ctx, name)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if got != hexd {
		return fmt.Errorf("%w: blob %s hashes to sha256:%s", ErrCorrupt, d.Digest, got)
	}
	if d.Size != size {
		return fmt.Errorf("%w: blob %s is %d bytes, its descriptor says %d", ErrCorrupt, d.Digest, size, d.Size)
	}
	return nil
}

func readJSON(st store, name string, v any) error {
	b, err := st.read(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
	}
	return nil
}

func verifyOCI(ctx context.Context, st store) (Result, error) {
	var layout struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := readJSON(st, "oci-layout", &layout); err != nil {
		return Result{}, fmt.Errorf("oci-layout: %w", err)
	}
	if layout.Version != "1.0.0" {
		return Result{}, fmt.Errorf("%w: oci-layout version %q (want 1.0.0)", ErrCorrupt, layout.Version)
	}
	var idx index
	if err := readJSON(st, "index.json", &idx); err != nil {
		return Result{}, err
	}
	if len(idx.Manifests) == 0 {
		return Result{}, fmt.Errorf("%w: index.json lists no manifest", ErrCorrupt)
	}
	var r Result
	var configs []string
	for _, md := range idx.Manifests {
		n, cfg, err := verifyManifest(ctx, st, md, 0)
		if err != nil {
			return Result{}, err
		}
		r.Blobs += n
		configs = append(configs, cfg...)
	}
	if len(idx.Manifests) == 1 {
		r.ManifestDigest = idx.Manifests[0].Digest
	} else {
		// Several images: the digest of index.json itself names the set.
		b, _ := st.read("index.json")
		sum := sha256.Sum256(b)
		r.ManifestDigest = "sha256:" + hex.EncodeToString(sum[:])
	}
	sort.Strings(configs)
	r.ConfigDigest = strings.Join(configs, ",")
	r.Digest = strings.TrimPrefix(r.ManifestDigest, "sha256:")
	return r, nil
}

// verifyManifest checks a manifest (or nested index) and every blob it
// names; it returns the number of blobs and the config digests.
func verifyManifest(ctx context.Context, st store, d descriptor, depth int) (int, []string, error) {
	if depth > 4 {
		return 0, nil, fmt.Errorf("%w: indexes nested too deep", ErrCorrupt)
	}
	if err := checkBlob(ctx, st, d); err != nil {
		return 0, nil, err
	}
	hexd, _ := parseDigest(d.Digest)
	var m manifest
	if err := readJSON(st, "blobs/sha256/"+hexd, &m); err != nil {
		return 0, nil, err
	}
	n := 1
	if len(m.Manifests) > 0 {
		var cfgs []string
		for _, sub := range m.Manifests {
			k, c, err := verifyManifest(ctx, st, sub, depth+1)
			if err != nil {
				return 0, nil, err
			}
			n += k
			cfgs = append(cfgs, c...)
		}
		return n, cfgs, nil
	}
	if m.Config.Digest == "" {
		return 0, nil, fmt.Errorf("%w: manifest %s has no config", ErrCorrupt, d.Digest)
	}
	if err := checkBlob(ctx, st, m.Config); err != nil {
		return 0, nil, fmt.Errorf("config of manifest %s: %w", d.Digest, err)
	}
	n++
	for i, l := range m.Layers {
		if err := checkBlob(ctx, st, l); err != nil {
			return 0, nil, fmt.Errorf("layer %d of manifest %s: %w", i, d.Digest, err)
		}
		n++
	}
	return n, []string{m.Config.Digest}, nil
}

type dockerEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

func dockerTags(st store) ([]string, error) {
	var entries []dockerEntry
	if err := readJSON(st, "manifest.json", &entries); err != nil {
		return nil, err
	}
	var tags []string
	for _, e := range entries {
		tags = append(tags, e.RepoTags...)
	}
	return tags, nil
}

// verifyDocker checks the older docker save layout: the config is named by
// its digest, and each layer.tar is checked against rootfs.diff_ids.
func verifyDocker(ctx context.Context, st store) (Result, error) {
	var entries []dockerEntry
	if err := readJSON(st, "manifest.json", &entries); err != nil {
		return Result{}, err
	}
	if len(entries) != 1 {
		return Result{}, fmt.Errorf("%w: manifest.json lists %d images; rimon measures archives of one image", ErrCorrupt, len(entries))
	}
	e := entries[0]
	want := strings.TrimSuffix(path.Base(e.Config), ".json")
	sum, _, err := st.hash(ctx, e.Config)
	if err != nil {
		return Result{}, fmt.Errorf("config %s: %w", e.Config, err)
	}
	if sum != want {
		return Result{}, fmt.Errorf("%w: config %s hashes to sha256:%s", ErrCorrupt, e.Config, sum)
	}
	var cfg struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := readJSON(st, e.Config, &cfg); err != nil {
		return Result{}, err
	}
	if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
		return Result{}, fmt.Errorf("%w: %d layers but the config lists %d diff_ids", ErrCorrupt, len(e.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, l := range e.Layers {
		hexd, err := parseDigest(cfg.RootFS.DiffIDs[i])
		if err != nil {
			return Result{}, err
		}
		got, _, err := st.hash(ctx, l)
		if err != nil {
			return Result{}, fmt.Errorf("layer %s: %w", l, err)
		}
		if got != hexd {
			return Result{}, fmt.Errorf("%w: layer %s hashes to sha256:%s, the config says %s", ErrCorrupt, l, got, cfg.RootFS.DiffIDs[i])
		}
	}
	return Result{Digest: want, ConfigDigest: "sha256:" + want, Tags: e.RepoTags, Blobs: 1 + len(e.Layers)}, nil
}

// dirStore is an OCI layout directory.
type dirStore struct{ root string }

func (d dirStore) file(name string) (string, error) {
	clean := path.Clean(name)
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%w: path %q leaves the layout", ErrCorrupt, name)
	}
	return filepath.Join(d.root, filepath.FromSlash(clean)), nil
}

func (d dirStore) hash(ctx context.Context, name string) (string, int64, error) {
	p, err := d.file(name)
	if err != nil {
		return "", 0, err
	}
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, ctx.Err()
}

func (d dirStore) read(name string) ([]byte, error) {
	p, err := d.file(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJSON+1))
	if err == nil && len(b) > maxJSON {
		err = fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, name, maxJSON)
	}
	return b, err
}

func (d dirStore) has(name string) bool {
	p, err := d.file(name)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// archiveStore is a tar archive read once: every regular file is hashed as
// it streams by, and small files are kept for their JSON.
type archiveStore struct {
	sums  map[string]string
	sizes map[string]int64
	small map[string][]byte
}

func readArchive(ctx context.Context, p string) (*archiveStore, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st := &archiveStore{sums: map[string]string{}, sizes: map[string]int64{}, small: map[string][]byte{}}
	tr := tar.NewReader(f)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: not a readable tar archive: %v", ErrCorrupt, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if _, dup := st.sums[name]; dup {
			return nil, fmt.Errorf("%w: %s appears twice in the archive", ErrCorrupt, name)
		}
		h := sha256.New()
		var w io.Writer = h
		var buf *sliceWriter
		if hdr.Size <= maxJSON {
			buf = &sliceWriter{}
			w = io.MultiWriter(h, buf)
		}
		n, err := io.Copy(w, tr)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
		}
		if buf != nil {
			st.small[name] = buf.b
		}
		st.sizes[name] = n
		st.sums[name] = hex.EncodeToString(h.Sum(nil))
	}
	return st, nil
}

type sliceWriter struct{ b []byte }

func (s *sliceWriter) Write(p []byte) (int, error) { s.b = append(s.b, p...); return len(p), nil }

func (a *archiveStore) hash(ctx context.Context, name string) (string, int64, error) {
	name = path.Clean(name)
	s, ok := a.sums[name]
	if !ok {
		return "", 0, fmt.Errorf("%s is not in the archive: %w", name, fs.ErrNotExist)
	}
	return s, a.sizes[name], nil
}

func (a *archiveStore) read(name string) ([]byte, error) {
	name = path.Clean(name)
	b, ok := a.small[name]
	if !ok {
		if _, big := a.sums[name]; big {
			return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, name, maxJSON)
		}
		return nil, fmt.Errorf("%s is not in the archive: %w", name, fs.ErrNotExist)
	}
	return b, nil
}

func (a *archiveStore) has(name string) bool {
	_, ok := a.sums[path.Clean(name)]
	return ok
}
