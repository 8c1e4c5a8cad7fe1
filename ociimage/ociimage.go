// Package ociimage verifies container images stored on disk and reports the
// digests a registry publishes for them.
//
// # Formats
//
// It reads an OCI image layout directory (oci-layout, index.json, blobs/)
// or a tar archive written by docker save, podman save, skopeo, crane or ko,
// in either the OCI layout or the docker layout (manifest.json, a config
// and one tar per layer):
//
//   - pre-25 docker save archives, whose repeated layers are symbolic or hard
//     links to another layer of the archive (`<id>/layer.tar` ->
//     `../<id2>/layer.tar`); links are resolved inside the archive and a link
//     that leaves it is refused;
//   - docker layout archives with gzip-compressed layers (crane, ko), checked
//     against the config's rootfs.diff_ids after decompression;
//   - configs named `<hex>.json`, `sha256:<hex>` or `blobs/<alg>/<hex>`;
//   - Docker 25 saves of an untagged image, whose index.json lists no
//     manifest while manifest.json lists the image;
//   - archives that hold several images: all are measured as one set, or one
//     is chosen with [Options.Ref];
//   - image indexes (multi-platform images), in full or, with
//     [Options.Platform], one platform of them, which is also how a
//     single-platform export of a multi-platform index is read;
//   - blobs named by sha256 or sha512 digests.
//
// # What is checked
//
// Every blob that is used is read and hashed with the algorithm of the digest
// that names it, and its size checked against the size its descriptor
// declares; JSON documents are parsed only from the bytes that were hashed,
// so nothing is parsed before it is checked and no file is read twice in
// between. For the docker layout, the config is checked against the digest
// in its name and each layer against the config's rootfs.diff_ids. Names
// that would leave the layout directory or the archive are refused.
//
// # Why not go-containerregistry
//
// go-containerregistry v0.22.1 (pkg/v1/tarball, layout, validate) reads these
// formats too, and was weighed against this parser; this parser was kept:
//
//   - sha512: its v1.Hash knows sha256 alone, so sha512 blobs are refused.
//   - Verification: tarball.Image presents an uncompressed docker archive as a
//     registry image by gzip-compressing each layer to compute a "manifest
//     digest", a synthetic value that depends on the compressor, costs a full
//     compression of every layer, and is nothing rimon records; validate.Image
//     then reads each layer twice (compressed and uncompressed).
//   - Links: it follows symbolic and hard links by name inside the archive (a
//     link cannot escape), but joins a hard link's target to the link's
//     directory, where tar names it from the archive's root.
//   - Several images: tarball.Image needs a tag when an archive holds more
//     than one image; there is no "measure them all".
//   - Memory and I/O: it finds each file by reading the archive from its
//     start, once per file (and per link hop).
//   - Weight: five more modules (go-containerregistry, klauspost/compress,
//     opencontainers/image-spec and go-digest, golang.org/x/sync) and about
//     1.6 MB of binary, with a package-level logger, in an agent whose parser
//     of these formats is a few hundred lines.
//
// This package indexes an archive's headers once, seeking over the data,
// then reads each blob it uses once, in place; only JSON documents (at most
// 4 MiB each) are held in memory, so memory does not grow with layer size.
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
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/rimon-dev/rimon/eventlog"
)

// ErrCorrupt means a blob does not match its digest or declared size, or
// the image's JSON is malformed.
var ErrCorrupt = errors.New("image is corrupt")

// ErrSelect means the image holds no image, or not exactly one image, that
// matches [Options]; the error lists what the image holds.
var ErrSelect = errors.New("image selection")

// maxJSON bounds the JSON documents (index, manifests, configs) read into memory.
const maxJSON = 4 << 20

// maxLinks bounds the chain of links followed to a file inside an archive.
const maxLinks = 16

// Options choose what Verify measures in an image that holds several images
// or platforms. The zero value measures everything the image holds.
type Options struct {
	// Platform is "os/architecture" or "os/architecture/variant"
	// ("linux/arm64", "linux/arm/v7"). When set, only the image for that
	// platform is verified and recorded: in an image index, the manifest
	// whose platform matches (manifests of other platforms need not be
	// present); otherwise the image whose config names that platform. An
	// empty variant matches any variant, but must then match only one.
	Platform string
	// Ref chooses one image of several: a tag or name as the archive gives
	// it (docker's RepoTags, the OCI annotations
	// org.opencontainers.image.ref.name and io.containerd.image.name), a
	// manifest digest listed in index.json, or a config digest of a docker
	// layout archive ("sha256:…").
	Ref string
}

// Result describes a verified image.
type Result struct {
	// Digest is what rimon records as the image's sha256 (hex, no prefix):
	// the SHA-256 of the recorded manifest's bytes when there is a manifest
	// (equal to its digest when that digest is sha256), else the SHA-256 of
	// the config's bytes.
	Digest string
	// ManifestDigest is the digest of the image manifest as the layout names
	// it ("sha256:…" or "sha512:…"); when the image holds several images and
	// none is chosen, the sha256 of index.json (OCI) or manifest.json
	// (docker layout), which names the set. Empty for a docker layout
	// archive of one image.
	ManifestDigest string
	// ConfigDigest is the digest of the image configuration ("sha256:…");
	// for a set of images, their config digests sorted and joined by ",".
	ConfigDigest string
	// Tags are the names the archive gives the image (informational).
	Tags []string
	// Blobs is the number of blobs checked (manifests, indexes, configs and
	// layers; a layer used twice counts twice).
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

type platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
}

func (p platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
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

type imageConfig struct {
	platform
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// Media types of image indexes.
const (
	mediaOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mediaDockerIndex = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// store gives access to the files of a layout directory or an archive.
type store interface {
	// open opens the regular file at name (a clean slash-separated path
	// inside the image), following links that stay inside the image.
	open(name string) (io.ReadCloser, error)
	has(name string) bool
	close() error
}

// Verify checks the image at path (a directory or an archive) and everything
// it holds; it is VerifyWith with zero [Options].
func Verify(ctx context.Context, p string) (Result, error) {
	return VerifyWith(ctx, p, Options{})
}

// VerifyWith checks the image at path (a directory or an archive), or the
// image that opts choose in it. Every blob it uses is checked against its
// digest before the result is returned.
func VerifyWith(ctx context.Context, p string, opts Options) (Result, error) {
	var want platform
	if opts.Platform != "" {
		var err error
		if want, err = parsePlatform(opts.Platform); err != nil {
			return Result{}, err
		}
	}
	fi, err := os.Stat(p)
	if err != nil {
		return Result{}, fmt.Errorf("image %s: %w", p, err)
	}
	v := &verifier{opts: opts, want: want, done: map[string]bool{}}
	r, err := v.verify(ctx, p, fi)
	if err != nil && errors.Is(err, fs.ErrNotExist) {
		// Something the image names is missing: the image is corrupt, not absent.
		return Result{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return r, err
}

// Validate checks the options' syntax, so that a caller can refuse a bad
// argument before it does anything.
func (o Options) Validate() error {
	if o.Platform == "" {
		return nil
	}
	_, err := parsePlatform(o.Platform)
	return err
}

// parsePlatform parses "os/architecture[/variant]".
func parsePlatform(s string) (platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
		return platform{}, fmt.Errorf("platform %q: want os/architecture or os/architecture/variant (linux/arm64, linux/arm/v7)", s)
	}
	p := platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

type verifier struct {
	st   store
	opts Options
	want platform
	// done holds the blobs (by name, algorithm and decompression) already
	// verified, so that a layer several images share is read once.
	done map[string]bool
	// tree, when set, is given every layer as it is hashed (rootfs.go).
	tree *treeBuilder
}

func (v *verifier) verify(ctx context.Context, p string, fi fs.FileInfo) (Result, error) {
	var format string
	if fi.IsDir() {
		root, err := os.OpenRoot(p)
		if err != nil {
			return Result{}, fmt.Errorf("image %s: %w", p, err)
		}
		v.st, format = dirStore{root}, "oci-layout"
	} else {
		st, err := openArchive(ctx, p, fi)
		if err != nil {
			return Result{}, fmt.Errorf("image %s: %w", p, err)
		}
		v.st = st
	}
	defer v.st.close()
	var r Result
	var err error
	switch {
	case format == "oci-layout":
		r, err = v.verifyOCI(ctx, false)
	case v.st.has("index.json"):
		format = "oci-archive"
		r, err = v.verifyOCI(ctx, v.st.has("manifest.json"))
		if errors.Is(err, errNoManifest) && v.st.has("manifest.json") {
			// Docker 25 saves an untagged image with an empty index.json:
			// manifest.json alone names it.
			format = "docker-archive"
			r, err = v.verifyDocker(ctx)
		}
	case v.st.has("manifest.json"):
		format = "docker-archive"
		r, err = v.verifyDocker(ctx)
	default:
		err = fmt.Errorf("%w: neither index.json nor manifest.json: not an OCI layout or docker save archive", ErrCorrupt)
	}
	if err != nil {
		return Result{}, fmt.Errorf("image %s: %w", p, err)
	}
	r.Format = format
	return r, nil
}

var errNoManifest = fmt.Errorf("%w: index.json lists no manifest", ErrCorrupt)

// parseDigest splits "alg:hex" and checks it names a supported algorithm
// with lowercase hex of its size.
func parseDigest(d string) (alg, hexd string, err error) {
	alg, hexd, ok := strings.Cut(d, ":")
	size := map[string]int{"sha256": 64, "sha512": 128}[alg]
	if !ok || size == 0 || len(hexd) != size {
		return "", "", fmt.Errorf("%w: digest %q: only sha256:<64 hex> or sha512:<128 hex> is supported", ErrCorrupt, d)
	}
	if _, err := hex.DecodeString(hexd); err != nil || strings.ToLower(hexd) != hexd {
		return "", "", fmt.Errorf("%w: digest %q is not lowercase hex", ErrCorrupt, d)
	}
	return alg, hexd, nil
}

func newHash(alg string) hash.Hash {
	if alg == "sha512" {
		return sha512.New()
	}
	return sha256.New()
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ctxReader stops a long read when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readSmall reads a JSON document of at most maxJSON bytes.
func (v *verifier) readSmall(name string) ([]byte, error) {
	f, err := v.st.open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJSON+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(b) > maxJSON {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, name, maxJSON)
	}
	return b, nil
}

func unmarshal(b []byte, name string, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
	}
	return nil
}

func blobName(alg, hexd string) string { return "blobs/" + alg + "/" + hexd }

// readBlob reads a small blob (a manifest, index or config), checks it
// against the descriptor's digest and size, and returns its bytes.
func (v *verifier) readBlob(d descriptor) ([]byte, error) {
	alg, hexd, err := parseDigest(d.Digest)
	if err != nil {
		return nil, err
	}
	b, err := v.readSmall(blobName(alg, hexd))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	h := newHash(alg)
	h.Write(b)
	if got := hex.EncodeToString(h.Sum(nil)); got != hexd {
		return nil, fmt.Errorf("%w: blob %s hashes to %s:%s", ErrCorrupt, d.Digest, alg, got)
	}
	if d.Size != int64(len(b)) {
		return nil, fmt.Errorf("%w: blob %s is %d bytes, its descriptor says %d", ErrCorrupt, d.Digest, len(b), d.Size)
	}
	return b, nil
}

// checkLayer streams a layer blob through its hash and checks digest and size.
func (v *verifier) checkLayer(ctx context.Context, d descriptor) error {
	alg, hexd, err := parseDigest(d.Digest)
	if err != nil {
		return err
	}
	key := fmt.Sprintf("blob %s %d", d.Digest, d.Size)
	if v.done[key] && v.tree == nil {
		return nil
	}
	got, size, err := v.hashFile(ctx, blobName(alg, hexd), alg, false)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if got != hexd {
		return fmt.Errorf("%w: blob %s hashes to %s:%s", ErrCorrupt, d.Digest, alg, got)
	}
	if d.Size != size {
		return fmt.Errorf("%w: blob %s is %d bytes, its descriptor says %d", ErrCorrupt, d.Digest, size, d.Size)
	}
	v.done[key] = true
	return nil
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// hashFile hashes the file at name with alg; with gunzip, a file that starts
// with the gzip magic is hashed after decompression. It returns the hex
// digest and the number of bytes hashed.
func (v *verifier) hashFile(ctx context.Context, name, alg string, gunzip bool) (string, int64, error) {
	f, err := v.st.open(name)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	var r io.Reader = ctxReader{ctx, f}
	if gunzip {
		var magic [4]byte
		n, err := io.ReadFull(r, magic[:])
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			return "", 0, fmt.Errorf("%s: %w", name, err)
		}
		r = io.MultiReader(bytes.NewReader(magic[:n]), r)
		switch {
		case bytes.HasPrefix(magic[:n], gzipMagic):
			zr, err := gzip.NewReader(r)
			if err != nil {
				return "", 0, fmt.Errorf("%w: %s: gzip: %v", ErrCorrupt, name, err)
			}
			r = zr
		case bytes.Equal(magic[:n], zstdMagic):
			return "", 0, fmt.Errorf("%w: %s is zstd-compressed, which rimon cannot decompress to check it against its diff_id", ErrCorrupt, name)
		}
	}
	h := newHash(alg)
	var n int64
	if v.tree != nil {
		n, err = v.tree.layer(r, h) // rootfs.go: applies the layer as it hashes it
	} else {
		n, err = io.Copy(h, r)
	}
	if err != nil {
		if ctx.Err() != nil {
			return "", 0, ctx.Err()
		}
		return "", 0, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// verifyOCI checks an OCI layout. withDocker says the archive also holds a
// docker manifest.json, whose tags are reported.
func (v *verifier) verifyOCI(ctx context.Context, withDocker bool) (Result, error) {
	lb, err := v.readSmall("oci-layout")
	if err != nil {
		return Result{}, fmt.Errorf("oci-layout: %w", err)
	}
	var layout struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := unmarshal(lb, "oci-layout", &layout); err != nil {
		return Result{}, err
	}
	if layout.Version != "1.0.0" {
		return Result{}, fmt.Errorf("%w: oci-layout version %q (want 1.0.0)", ErrCorrupt, layout.Version)
	}
	ib, err := v.readSmall("index.json")
	if err != nil {
		return Result{}, err
	}
	var idx index
	if err := unmarshal(ib, "index.json", &idx); err != nil {
		return Result{}, err
	}
	if len(idx.Manifests) == 0 {
		return Result{}, errNoManifest
	}
	tops := idx.Manifests
	if v.opts.Ref != "" {
		var names []string
		tops = nil
		for _, d := range idx.Manifests {
			ns := []string{d.Digest, d.Annotations["org.opencontainers.image.ref.name"], d.Annotations["io.containerd.image.name"]}
			for _, n := range ns {
				if n == v.opts.Ref {
					tops = append(tops, d)
					break
				}
			}
			names = append(names, strings.Join(compact(ns), " "))
		}
		if len(tops) != 1 {
			return Result{}, fmt.Errorf("%w: index.json lists %d images named %q; it lists: %s", ErrSelect, len(tops), v.opts.Ref, strings.Join(names, "; "))
		}
	}
	var r Result
	if withDocker {
		if mb, err := v.readSmall("manifest.json"); err == nil {
			var entries []dockerEntry
			if json.Unmarshal(mb, &entries) == nil {
				for _, e := range entries {
					r.Tags = append(r.Tags, e.RepoTags...)
				}
			}
		}
	}
	if v.opts.Platform != "" {
		var seen []string
		md, n, err := v.findPlatform(tops, 0, &seen)
		if err != nil {
			return Result{}, err
		}
		if md.Digest == "" {
			return Result{}, fmt.Errorf("%w: no manifest for platform %s; the image holds: %s", ErrSelect, v.opts.Platform, strings.Join(seen, ", "))
		}
		k, cfgs, mbytes, err := v.verifyManifest(ctx, md, 0)
		if err != nil {
			return Result{}, err
		}
		r.Blobs = n + k
		r.ManifestDigest, r.Digest = md.Digest, sha256Hex(mbytes)
		r.ConfigDigest = strings.Join(cfgs, ",")
		return r, nil
	}
	var configs []string
	var first []byte
	for _, md := range tops {
		n, cfg, mbytes, err := v.verifyManifest(ctx, md, 0)
		if err != nil {
			return Result{}, err
		}
		r.Blobs += n
		configs = append(configs, cfg...)
		first = mbytes
	}
	if len(tops) == 1 {
		r.ManifestDigest, r.Digest = tops[0].Digest, sha256Hex(first)
	} else {
		// Several images: the digest of index.json itself names the set.
		r.Digest = sha256Hex(ib)
		r.ManifestDigest = "sha256:" + r.Digest
	}
	sort.Strings(configs)
	r.ConfigDigest = strings.Join(configs, ",")
	return r, nil
}

func compact(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func isIndex(mediaType string) bool {
	return mediaType == mediaOCIIndex || mediaType == mediaDockerIndex
}

// matches says whether p is the wanted platform. An empty wanted variant
// matches any variant; arm64's variant v8 is its default.
func (v *verifier) matches(p platform) bool {
	if p.OS != v.want.OS || p.Architecture != v.want.Architecture {
		return false
	}
	if v.want.Variant == "" {
		return true
	}
	pv, wv := p.Variant, v.want.Variant
	if p.Architecture == "arm64" {
		if pv == "" {
			pv = "v8"
		}
		if wv == "" {
			wv = "v8"
		}
	}
	return pv == wv
}

// findPlatform walks descriptors (reading indexes, each checked before it is
// parsed) for the one image manifest of the wanted platform. It returns the
// manifest's descriptor (empty when none matches) and the number of index
// blobs it checked; seen collects the platforms it met. A manifest whose
// descriptor names another platform is not read, so it need not be present.
func (v *verifier) findPlatform(ds []descriptor, depth int, seen *[]string) (descriptor, int, error) {
	if depth > 4 {
		return descriptor{}, 0, fmt.Errorf("%w: indexes nested too deep", ErrCorrupt)
	}
	var found descriptor
	checked := 0
	pick := func(d descriptor) error {
		if found.Digest != "" && found.Digest != d.Digest {
			return fmt.Errorf("%w: platform %s matches both %s and %s; name the variant", ErrSelect, v.opts.Platform, found.Digest, d.Digest)
		}
		found = d
		return nil
	}
	for _, d := range ds {
		if d.Platform != nil && !isIndex(d.MediaType) {
			*seen = append(*seen, d.Platform.String())
			if v.matches(*d.Platform) {
				if err := pick(d); err != nil {
					return descriptor{}, 0, err
				}
			}
			continue
		}
		// An index, or a manifest whose descriptor does not say its
		// platform: read it (checked first).
		b, err := v.readBlob(d)
		if err != nil {
			return descriptor{}, 0, err
		}
		var m manifest
		if err := unmarshal(b, "manifest "+d.Digest, &m); err != nil {
			return descriptor{}, 0, err
		}
		if len(m.Manifests) > 0 {
			sub, n, err := v.findPlatform(m.Manifests, depth+1, seen)
			if err != nil {
				return descriptor{}, 0, err
			}
			checked += 1 + n
			if sub.Digest != "" {
				if err := pick(sub); err != nil {
					return descriptor{}, 0, err
				}
			}
			continue
		}
		cb, err := v.readBlob(m.Config)
		if err != nil {
			return descriptor{}, 0, fmt.Errorf("config of manifest %s: %w", d.Digest, err)
		}
		var c imageConfig
		if err := unmarshal(cb, "config "+m.Config.Digest, &c); err != nil {
			return descriptor{}, 0, err
		}
		*seen = append(*seen, c.platform.String())
		if v.matches(c.platform) {
			if err := pick(d); err != nil {
				return descriptor{}, 0, err
			}
		}
	}
	return found, checked, nil
}

// verifyManifest checks a manifest (or nested index) and every blob it
// names; it returns the number of blobs, the config digests and the
// manifest's bytes.
func (v *verifier) verifyManifest(ctx context.Context, d descriptor, depth int) (int, []string, []byte, error) {
	if depth > 4 {
		return 0, nil, nil, fmt.Errorf("%w: indexes nested too deep", ErrCorrupt)
	}
	b, err := v.readBlob(d)
	if err != nil {
		return 0, nil, nil, err
	}
	var m manifest
	if err := unmarshal(b, "manifest "+d.Digest, &m); err != nil {
		return 0, nil, nil, err
	}
	n := 1
	if len(m.Manifests) > 0 {
		var cfgs []string
		for _, sub := range m.Manifests {
			k, c, _, err := v.verifyManifest(ctx, sub, depth+1)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && !v.st.has(blobPath(sub.Digest)) {
					p := "a manifest"
					if sub.Platform != nil {
						p = "the manifest for " + sub.Platform.String()
					}
					return 0, nil, nil, fmt.Errorf("index %s: %s (%s) is missing: a single-platform export? choose the platform with --platform: %w", d.Digest, p, sub.Digest, err)
				}
				return 0, nil, nil, err
			}
			n += k
			cfgs = append(cfgs, c...)
		}
		return n, cfgs, b, nil
	}
	if m.Config.Digest == "" {
		return 0, nil, nil, fmt.Errorf("%w: manifest %s has no config", ErrCorrupt, d.Digest)
	}
	if _, err := v.readBlob(m.Config); err != nil {
		return 0, nil, nil, fmt.Errorf("config of manifest %s: %w", d.Digest, err)
	}
	n++
	for i, l := range m.Layers {
		if err := v.checkLayer(ctx, l); err != nil {
			return 0, nil, nil, fmt.Errorf("layer %d of manifest %s: %w", i, d.Digest, err)
		}
		n++
	}
	return n, []string{m.Config.Digest}, b, nil
}

func blobPath(d string) string {
	alg, hexd, err := parseDigest(d)
	if err != nil {
		return ""
	}
	return blobName(alg, hexd)
}

type dockerEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// configDigest returns the digest a docker layout config's name carries:
// "<hex>.json" (docker save before 25), "sha256:<hex>" (crane, ko) or
// "blobs/<alg>/<hex>" (docker save 25 and later).
func configDigest(name string) (string, error) {
	base := strings.TrimSuffix(path.Base(name), ".json")
	d := base
	switch dir := path.Dir(name); {
	case strings.Contains(base, ":"):
	case path.Dir(dir) == "blobs" && (path.Base(dir) == "sha256" || path.Base(dir) == "sha512"):
		d = path.Base(dir) + ":" + base
	default:
		d = "sha256:" + base
	}
	if _, _, err := parseDigest(d); err != nil {
		return "", fmt.Errorf("%w: config %q: its name carries no digest (want <hex>.json, sha256:<hex> or blobs/sha256/<hex>)", ErrCorrupt, name)
	}
	return d, nil
}

type dockerImage struct {
	e      dockerEntry
	digest string // of the config, as its name says
	bytes  []byte // the config, checked against digest
	cfg    imageConfig
}

// verifyDocker checks the docker save layout: each config is named by its
// digest, and each layer is checked against rootfs.diff_ids.
func (v *verifier) verifyDocker(ctx context.Context) (Result, error) {
	mb, err := v.readSmall("manifest.json")
	if err != nil {
		return Result{}, err
	}
	var entries []dockerEntry
	if err := unmarshal(mb, "manifest.json", &entries); err != nil {
		return Result{}, err
	}
	if len(entries) == 0 {
		return Result{}, fmt.Errorf("%w: manifest.json lists no image", ErrCorrupt)
	}
	var images []dockerImage
	var names []string
	for i, e := range entries {
		if v.opts.Ref != "" {
			names = append(names, strings.Join(append(e.RepoTags, e.Config), " "))
			d, _ := configDigest(e.Config)
			if !contains(e.RepoTags, v.opts.Ref) && (d == "" || d != v.opts.Ref) {
				continue
			}
		}
		im, err := v.dockerConfig(e)
		if err != nil {
			return Result{}, fmt.Errorf("manifest.json image %d: %w", i, err)
		}
		if v.opts.Platform != "" {
			names = append(names, im.cfg.platform.String())
			if !v.matches(im.cfg.platform) {
				continue
			}
		}
		images = append(images, im)
	}
	if (v.opts.Ref != "" || v.opts.Platform != "") && len(images) != 1 {
		return Result{}, fmt.Errorf("%w: manifest.json lists %d images for %s; it lists: %s", ErrSelect, len(images), strings.Trim(v.opts.Ref+" "+v.opts.Platform, " "), strings.Join(names, "; "))
	}
	var r Result
	var configs []string
	for _, im := range images {
		if err := v.dockerLayers(ctx, im); err != nil {
			return Result{}, err
		}
		r.Blobs += 1 + len(im.e.Layers)
		r.Tags = append(r.Tags, im.e.RepoTags...)
		configs = append(configs, im.digest)
	}
	if len(images) == 1 {
		r.Digest, r.ConfigDigest = sha256Hex(images[0].bytes), images[0].digest
		return r, nil
	}
	// Several images: the digest of manifest.json, which names every
	// config by its digest, names the set.
	sort.Strings(configs)
	r.ConfigDigest = strings.Join(configs, ",")
	r.Digest = sha256Hex(mb)
	r.ManifestDigest = "sha256:" + r.Digest
	return r, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// dockerConfig reads a docker layout config and checks it against the
// digest its name carries.
func (v *verifier) dockerConfig(e dockerEntry) (dockerImage, error) {
	d, err := configDigest(e.Config)
	if err != nil {
		return dockerImage{}, err
	}
	alg, want, _ := parseDigest(d)
	b, err := v.readSmall(path.Clean(e.Config))
	if err != nil {
		return dockerImage{}, fmt.Errorf("config %s: %w", e.Config, err)
	}
	h := newHash(alg)
	h.Write(b)
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return dockerImage{}, fmt.Errorf("%w: config %s: its name says %s, its bytes hash to %s:%s", ErrCorrupt, e.Config, d, alg, got)
	}
	im := dockerImage{e: e, digest: d, bytes: b}
	if err := unmarshal(b, e.Config, &im.cfg); err != nil {
		return dockerImage{}, err
	}
	return im, nil
}

// dockerLayers checks each layer of a docker layout image against the
// config's diff_ids, after decompression when the layer is gzip-compressed.
func (v *verifier) dockerLayers(ctx context.Context, im dockerImage) error {
	ids := im.cfg.RootFS.DiffIDs
	if len(ids) != len(im.e.Layers) {
		return fmt.Errorf("%w: config %s: %d layers but the config lists %d diff_ids", ErrCorrupt, im.e.Config, len(im.e.Layers), len(ids))
	}
	for i, l := range im.e.Layers {
		alg, hexd, err := parseDigest(ids[i])
		if err != nil {
			return fmt.Errorf("config %s: diff_ids[%d]: %w", im.e.Config, i, err)
		}
		key := "layer " + path.Clean(l) + " " + ids[i]
		if v.done[key] && v.tree == nil {
			continue
		}
		got, _, err := v.hashFile(ctx, path.Clean(l), alg, true)
		if err != nil {
			return fmt.Errorf("layer %s: %w", l, err)
		}
		if got != hexd {
			return fmt.Errorf("%w: layer %s (uncompressed) hashes to %s:%s, the config's diff_ids[%d] says %s", ErrCorrupt, l, alg, got, i, ids[i])
		}
		v.done[key] = true
	}
	return nil
}

// dirStore is an OCI layout directory; os.Root keeps every open, links
// included, inside it.
type dirStore struct{ root *os.Root }

func (d dirStore) open(name string) (io.ReadCloser, error) {
	f, err := d.root.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, err
		}
		// Among others, a link that leaves the layout.
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%w: %s is not a regular file", ErrCorrupt, name)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (d dirStore) has(name string) bool {
	_, err := d.root.Stat(name)
	return err == nil
}

func (d dirStore) close() error { return d.root.Close() }

// archiveStore is a tar archive whose headers were read once: regular files
// are read in place (the archive is seekable), links are resolved inside
// the archive.
type archiveStore struct {
	f       *os.File
	entries map[string]tarEntry
}

type tarEntry struct {
	link     string // target of a link, as a clean archive path; "" for a regular file
	off, len int64
}

func cleanName(name string) (string, bool) {
	c := path.Clean(strings.TrimPrefix(name, "./"))
	if path.IsAbs(c) || c == ".." || strings.HasPrefix(c, "../") {
		return c, false
	}
	return c, true
}

func openArchive(ctx context.Context, p string, fi fs.FileInfo) (*archiveStore, error) {
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a directory or a regular file", ErrCorrupt)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	st := &archiveStore{f: f, entries: map[string]tarEntry{}}
	if err := st.index(ctx); err != nil {
		f.Close()
		return nil, err
	}
	return st, nil
}

// index reads every header, seeking over the data.
func (a *archiveStore) index(ctx context.Context) error {
	tr := tar.NewReader(a.f)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: not a readable tar archive: %v", ErrCorrupt, err)
		}
		name, ok := cleanName(hdr.Name)
		var e tarEntry
		switch hdr.Typeflag {
		case tar.TypeReg:
			for k := range hdr.PAXRecords {
				if strings.HasPrefix(k, "GNU.sparse.") {
					return fmt.Errorf("%w: %s is a sparse file, which no image archive holds", ErrCorrupt, hdr.Name)
				}
			}
			off, err := a.f.Seek(0, io.SeekCurrent)
			if err != nil {
				return err
			}
			e = tarEntry{off: off, len: hdr.Size}
		case tar.TypeSymlink:
			e.link = hdr.Linkname // absolute: leaves the archive, refused if used
			if !path.IsAbs(hdr.Linkname) {
				e.link = path.Join(path.Dir(name), hdr.Linkname)
			}
		case tar.TypeLink:
			e.link = path.Clean(hdr.Linkname)
		default:
			continue
		}
		if !ok {
			continue // a name outside the archive's root is never looked up
		}
		if _, dup := a.entries[name]; dup {
			return fmt.Errorf("%w: %s appears twice in the archive", ErrCorrupt, name)
		}
		a.entries[name] = e
	}
}

func (a *archiveStore) open(name string) (io.ReadCloser, error) {
	orig := name
	name, ok := cleanName(name)
	for hops := 0; ; hops++ {
		if !ok {
			return nil, fmt.Errorf("%w: %s: the path leaves the archive", ErrCorrupt, orig)
		}
		e, found := a.entries[name]
		if !found {
			return nil, fmt.Errorf("%s is not in the archive: %w", name, fs.ErrNotExist)
		}
		if e.link == "" {
			return io.NopCloser(io.NewSectionReader(a.f, e.off, e.len)), nil
		}
		if hops == maxLinks {
			return nil, fmt.Errorf("%w: %s: more than %d links", ErrCorrupt, orig, maxLinks)
		}
		name, ok = cleanName(e.link)
	}
}

func (a *archiveStore) has(name string) bool {
	c, ok := cleanName(name)
	_, found := a.entries[c]
	return ok && found
}

func (a *archiveStore) close() error { return a.f.Close() }
