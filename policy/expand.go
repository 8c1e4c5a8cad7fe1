package policy

import (
	"io/fs"
	"path/filepath"
	"sort"
)

// Expand lists what p covers now, in path order (and kind order for one
// path): the files of its file, glob and dir rules (directories walked, the
// exclude lists and the symbolic link rule applied), its trees and its
// images. Each path in keep that p still covers as a target of its own is
// listed too, whether or not it exists, so that a caller that measured it
// before finds it deleted. Unreadable directories are skipped.
func Expand(p *Policy, keep ...string) []Target {
	type key struct {
		kind Kind
		path string
	}
	seen := map[key]bool{}
	var out []Target
	add := func(t Target) {
		k := key{t.Kind, t.Path}
		if !seen[k] {
			seen[k] = true
			out = append(out, t)
		}
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		switch r.Kind {
		case File, Tree, Image:
			add(Target{Kind: r.Kind, Path: r.Path, Rule: r})
		case Glob, Dir:
			root, want := r.Path, func(string) bool { return true }
			if r.Kind == Glob {
				root, want = r.Pattern.StaticPrefix(), r.Pattern.CouldContain
			}
			filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return nil
				}
				if d.IsDir() {
					if path != root && (!want(path) || (r.Kind == Dir && p.Excluded(r, path))) {
						return filepath.SkipDir
					}
					return nil
				}
				if d.Type()&fs.ModeSymlink != 0 && p.Symlinks == Skip {
					return nil
				}
				if !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
					return nil
				}
				if t, ok := p.TargetFor(path); ok && t.Kind == File {
					add(t)
				}
				return nil
			})
		}
	}
	for _, path := range keep {
		if t, ok := p.TargetFor(path); ok && t.Path == path {
			add(t)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}
