package ociimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/rimon-dev/rimon/measure"
)

// Rootfs is the root file system an image's layers make.
type Rootfs struct {
	// Image is the verified image.
	Image Result
	// Digest is the tree digest of the root file system (docs/FORMAT.md
	// section 3), as rimon measure --tree gives it for the unpacked image.
	Digest measure.Digest
	// Entries are the tree's entries, sorted.
	Entries []measure.Entry
}

// RootfsDigest verifies the image at p (as [VerifyWith]) and computes the
// tree digest of the root file system its layers make when unpacked in
// order onto an empty directory: what `rimon measure --tree` gives for
// that directory, and what the OCI hook records for a container whose root
// file system is that image, unchanged. The layers are read from the tar
// streams as they are verified, never written to disk: entry names are
// resolved inside the root ("../" cannot leave it), whiteouts (.wh.NAME)
// delete NAME, opaque whiteouts (.wh..wh..opq) empty their directory of
// what lower layers put there, a hard link takes its target's content and
// mode, parent directories a layer does not list are 0755, and the root
// directory is 0755 unless a layer gives "./" a mode. Owners, times and
// extended attributes are not part of a tree digest. The image must be
// one image: opts chooses one in an archive of several.
func RootfsDigest(ctx context.Context, p string, opts Options) (Rootfs, error) {
	var want platform
	if opts.Platform != "" {
		var err error
		if want, err = parsePlatform(opts.Platform); err != nil {
			return Rootfs{}, err
		}
	}
	fi, err := os.Stat(p)
	if err != nil {
		return Rootfs{}, fmt.Errorf("image %s: %w", p, err)
	}
	tb := newTreeBuilder()
	v := &verifier{opts: opts, want: want, done: map[string]bool{}, tree: tb}
	r, err := v.verify(ctx, p, fi)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Rootfs{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		return Rootfs{}, err
	}
	if strings.Contains(r.ConfigDigest, ",") {
		return Rootfs{}, fmt.Errorf("image %s: %w: it holds several images (%s); choose one with a reference or a platform", p, ErrSelect, r.ConfigDigest)
	}
	entries := tb.entries()
	return Rootfs{Image: r, Digest: measure.TreeDigest(entries), Entries: entries}, nil
}

// node is one object of the root file system being built.
type node struct {
	typ   byte
	perm  uint32
	value string
	layer int // the layer that put it there
}

// treeBuilder applies layers, in order, to an in-memory tree.
type treeBuilder struct {
	nodes  map[string]*node // by path relative to the root; "." is the root
	layers int
}

func newTreeBuilder() *treeBuilder {
	return &treeBuilder{nodes: map[string]*node{".": {typ: 'd', perm: 0o755}}}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// layer hashes a layer blob into h (every byte of it) while applying the
// tar stream it holds (decompressed when gzip) to the tree. It returns the
// number of bytes hashed.
func (tb *treeBuilder) layer(r io.Reader, h hash.Hash) (int64, error) {
	raw := &countingReader{r: io.TeeReader(r, h)}
	br := bufio.NewReader(raw)
	magic, _ := br.Peek(4)
	var tr io.Reader = br
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return 0, fmt.Errorf("%w: layer: gzip: %v", ErrCorrupt, err)
		}
		tr = zr
	case bytes.Equal(magic, zstdMagic):
		return 0, fmt.Errorf("%w: a zstd-compressed layer, which rimon cannot unpack", ErrCorrupt)
	}
	tb.layers++
	if err := tb.apply(tar.NewReader(tr)); err != nil {
		return 0, err
	}
	// The rest of the blob (tar padding, compression trailer) is hashed too.
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return 0, fmt.Errorf("%w: layer: %v", ErrCorrupt, err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return 0, fmt.Errorf("%w: layer: %v", ErrCorrupt, err)
	}
	return raw.n, nil
}

// clean resolves a tar entry's name inside the root: "" or "." is the root.
func clean(name string) string {
	c := strings.TrimPrefix(path.Clean("/"+name), "/")
	if c == "" {
		return "."
	}
	return c
}

func (tb *treeBuilder) apply(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: layer %d: %v", ErrCorrupt, tb.layers, err)
		}
		rel := clean(hdr.Name)
		dir, base := path.Split(rel)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		if base == ".wh..wh..opq" {
			tb.removeBelow(dir, true)
			continue
		}
		if name, ok := strings.CutPrefix(base, ".wh."); ok {
			target := path.Join(dir, name)
			if dir == "." {
				target = name
			}
			delete(tb.nodes, target)
			tb.removeBelow(target, false)
			continue
		}
		n := &node{perm: uint32(hdr.Mode) & 0o7777, layer: tb.layers}
		switch hdr.Typeflag {
		case tar.TypeReg, '\x00': // '\x00': regular file in old tars
			sum := sha256.New()
			if _, err := io.Copy(sum, tr); err != nil {
				return fmt.Errorf("%w: layer %d: %s: %v", ErrCorrupt, tb.layers, hdr.Name, err)
			}
			n.typ, n.value = 'f', hex.EncodeToString(sum.Sum(nil))
		case tar.TypeDir:
			n.typ = 'd'
		case tar.TypeSymlink:
			n.typ, n.value = 'l', hdr.Linkname
		case tar.TypeLink:
			target, ok := tb.nodes[clean(hdr.Linkname)]
			if !ok || target.typ == 'd' {
				return fmt.Errorf("%w: layer %d: hard link %s to %s, which is not a file of the image", ErrCorrupt, tb.layers, hdr.Name, hdr.Linkname)
			}
			n.typ, n.value, n.perm = target.typ, target.value, target.perm
		case tar.TypeChar, tar.TypeBlock:
			n.typ = 'c'
			if hdr.Typeflag == tar.TypeBlock {
				n.typ = 'b'
			}
			n.value = strconv.FormatInt(hdr.Devmajor, 10) + ":" + strconv.FormatInt(hdr.Devminor, 10)
		case tar.TypeFifo:
			n.typ = 'p'
		case tar.TypeXGlobalHeader:
			continue
		default:
			return fmt.Errorf("%w: layer %d: %s: unsupported tar entry type %q", ErrCorrupt, tb.layers, hdr.Name, hdr.Typeflag)
		}
		if rel == "." && n.typ != 'd' {
			return fmt.Errorf("%w: layer %d: the root is not a directory", ErrCorrupt, tb.layers)
		}
		tb.parents(rel)
		if old, ok := tb.nodes[rel]; ok && (old.typ != 'd' || n.typ != 'd') {
			tb.removeBelow(rel, false)
		}
		tb.nodes[rel] = n
	}
}

// parents makes the directories above rel that do not exist (0755), and
// replaces a non-directory on the way by one, as unpacking does.
func (tb *treeBuilder) parents(rel string) {
	if rel == "." {
		return
	}
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		p := strings.Join(parts[:i], "/")
		if n, ok := tb.nodes[p]; !ok || n.typ != 'd' {
			tb.nodes[p] = &node{typ: 'd', perm: 0o755, layer: tb.layers}
		}
	}
}

// removeBelow deletes what lies below dir; lowerOnly keeps what the
// current layer put there (an opaque whiteout hides lower layers only).
func (tb *treeBuilder) removeBelow(dir string, lowerOnly bool) {
	prefix := dir + "/"
	if dir == "." {
		prefix = ""
	}
	for p, n := range tb.nodes {
		if p != "." && strings.HasPrefix(p, prefix) && p != dir && (!lowerOnly || n.layer < tb.layers) {
			delete(tb.nodes, p)
		}
	}
}

func (tb *treeBuilder) entries() []measure.Entry {
	out := make([]measure.Entry, 0, len(tb.nodes))
	for p, n := range tb.nodes {
		out = append(out, measure.Entry{Rel: p, Type: n.typ, Perm: n.perm, Value: n.value})
	}
	return out
}
