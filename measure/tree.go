package measure

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// TreeHeader opens the canonical encoding of a tree (docs/FORMAT.md, "Tree
// digest").
const TreeHeader = "rimon-tree-v1\n"

// Entry is one object in a measured tree.
type Entry struct {
	// Rel is the slash-separated path relative to the tree's root; "." is the root.
	Rel string
	// Type is one of 'f' (regular file), 'd' (directory), 'l' (symbolic link),
	// 'p' (FIFO), 's' (socket), 'c' (character device), 'b' (block device).
	Type byte
	// Perm holds the permission, setuid, setgid and sticky bits (07777).
	Perm uint32
	// Value is the file's SHA-256 in lowercase hex, the link's target,
	// "MAJOR:MINOR" for device nodes, and empty otherwise.
	Value string
}

// TreeResult is the measurement of a directory tree.
type TreeResult struct {
	Path    string
	Digest  Digest
	Entries []Entry
	// Bytes is the total size of the regular files in the tree.
	Bytes int64
}

// ErrNotDirectory means a tree measurement was asked for something that is not a directory.
var ErrNotDirectory = errors.New("not a directory")

// Tree measures the directory tree rooted at root as one digest. A
// symbolic link at root (or on the way to it) is followed, as [File] follows
// one, under the same rule; links inside the tree are not followed: a link
// is recorded with its target. Regular files are hashed in parallel with up
// to workers in flight.
func Tree(ctx context.Context, root string, workers int) (TreeResult, error) {
	return TreeWith(ctx, root, Options{Workers: workers})
}

// TreeWith is [Tree] within the budgets of o, which apply to each file.
func TreeWith(ctx context.Context, root string, o Options) (TreeResult, error) {
	fi, err := os.Lstat(root)
	if err != nil {
		return TreeResult{}, fmt.Errorf("measure tree %s: %w", root, unwrapPathError(err))
	}
	walk := root
	if fi.Mode()&fs.ModeSymlink != 0 {
		if walk, err = resolvedPath(root); err != nil {
			return TreeResult{}, fmt.Errorf("measure tree %s: %w", root, err)
		}
		if fi, err = os.Lstat(walk); err != nil {
			return TreeResult{}, fmt.Errorf("measure tree %s: %w", root, unwrapPathError(err))
		}
	}
	if !fi.IsDir() {
		return TreeResult{}, fmt.Errorf("measure tree %s: %w", root, ErrNotDirectory)
	}
	var entries []Entry
	var files []int // indexes into entries of regular files
	err = filepath.WalkDir(walk, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("measure tree %s: %w", root, unwrapPathError(err))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rel, err := filepath.Rel(walk, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("measure tree %s: %s: %w", root, rel, unwrapPathError(err))
		}
		e := Entry{Rel: filepath.ToSlash(rel), Perm: uint32(info.Mode().Perm())}
		m := info.Mode()
		if m&fs.ModeSetuid != 0 {
			e.Perm |= 04000
		}
		if m&fs.ModeSetgid != 0 {
			e.Perm |= 02000
		}
		if m&fs.ModeSticky != 0 {
			e.Perm |= 01000
		}
		switch {
		case m.IsRegular():
			e.Type = 'f'
			files = append(files, len(entries))
		case m.IsDir():
			e.Type = 'd'
		case m&fs.ModeSymlink != 0:
			e.Type = 'l'
			if e.Value, err = os.Readlink(p); err != nil {
				return fmt.Errorf("measure tree %s: %s: %w", root, rel, unwrapPathError(err))
			}
		case m&fs.ModeNamedPipe != 0:
			e.Type = 'p'
		case m&fs.ModeSocket != 0:
			e.Type = 's'
		case m&fs.ModeDevice != 0:
			e.Type = 'b'
			if m&fs.ModeCharDevice != 0 {
				e.Type = 'c'
			}
			if major, minor, ok := deviceNumbers(info); ok {
				e.Value = strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10)
			}
		default:
			return fmt.Errorf("measure tree %s: %s: unsupported file type %v", root, rel, m.Type())
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return TreeResult{}, err
	}
	var total int64
	errs := make([]error, len(files))
	sizes := make([]int64, len(files))
	forEach(ctx, len(files), o.Workers, func(i int) {
		e := &entries[files[i]]
		r, err := FileWith(ctx, filepath.Join(walk, filepath.FromSlash(e.Rel)), o)
		if err != nil {
			errs[i] = err
			return
		}
		e.Value = r.Digest.String()
		sizes[i] = r.Size
	})
	if err := ctx.Err(); err != nil {
		return TreeResult{}, err
	}
	if err := errors.Join(errs...); err != nil {
		return TreeResult{}, fmt.Errorf("measure tree %s: %w", root, err)
	}
	for _, s := range sizes {
		total += s
	}
	return TreeResult{Path: root, Digest: TreeDigest(entries), Entries: entries, Bytes: total}, nil
}

// TreeDigest is the SHA-256 of [EncodeTree](entries).
func TreeDigest(entries []Entry) Digest {
	return sha256.Sum256(EncodeTree(entries))
}

// EncodeTree returns the canonical encoding of a tree (docs/FORMAT.md):
// [TreeHeader], then one line per entry in bytewise order of Rel:
//
//	TYPE SP PERM SP LEN ":" REL SP LEN ":" VALUE LF
//
// where PERM is four octal digits and each LEN is the decimal byte length of
// the string that follows it. It sorts entries in place.
func EncodeTree(entries []Entry) []byte {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Rel < entries[j].Rel })
	var b bytes.Buffer
	b.WriteString(TreeHeader)
	for _, e := range entries {
		b.WriteByte(e.Type)
		fmt.Fprintf(&b, " %04o %d:%s %d:%s\n", e.Perm, len(e.Rel), e.Rel, len(e.Value), e.Value)
	}
	return b.Bytes()
}
