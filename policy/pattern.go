package policy

import (
	"fmt"
	"path"
	"strings"
)

// Pattern is a compiled path pattern (see the package documentation).
type Pattern struct {
	s        string
	segs     []string
	baseOnly bool
}

// CompilePattern checks and compiles a pattern.
func CompilePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, fmt.Errorf("%w: empty", ErrBadPattern)
	}
	if !strings.Contains(s, "/") {
		if _, err := path.Match(s, ""); err != nil {
			return Pattern{}, fmt.Errorf("%w %q: %v", ErrBadPattern, s, err)
		}
		return Pattern{s: s, baseOnly: true}, nil
	}
	if !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "**/") {
		return Pattern{}, fmt.Errorf("%w %q: a pattern with / must be absolute or start with **/", ErrBadPattern, s)
	}
	clean := strings.TrimPrefix(s, "/")
	segs := strings.Split(clean, "/")
	for _, seg := range segs {
		if seg == "" {
			return Pattern{}, fmt.Errorf("%w %q: empty path segment", ErrBadPattern, s)
		}
		if seg == "." || seg == ".." {
			return Pattern{}, fmt.Errorf("%w %q: . and .. are not allowed", ErrBadPattern, s)
		}
		if seg != "**" && strings.Contains(seg, "**") {
			return Pattern{}, fmt.Errorf("%w %q: ** must be a whole path segment", ErrBadPattern, s)
		}
		if _, err := path.Match(seg, ""); err != nil {
			return Pattern{}, fmt.Errorf("%w %q: %v", ErrBadPattern, s, err)
		}
	}
	return Pattern{s: s, segs: segs}, nil
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.s }

// Match reports whether the absolute, clean path name matches.
func (p Pattern) Match(name string) bool {
	if p.baseOnly {
		ok, _ := path.Match(p.s, path.Base(name))
		return ok
	}
	return matchSegs(p.segs, strings.Split(strings.TrimPrefix(name, "/"), "/"))
}

// CouldContain reports whether some path below directory dir could match:
// the watcher uses it to decide which directories to watch.
func (p Pattern) CouldContain(dir string) bool {
	if p.baseOnly {
		return true
	}
	if dir == "/" {
		return true
	}
	return prefixMatch(p.segs, strings.Split(strings.TrimPrefix(dir, "/"), "/"))
}

// StaticPrefix is the longest directory named by the pattern before its
// first wildcard.
func (p Pattern) StaticPrefix() string {
	if p.baseOnly {
		return "/"
	}
	dir := "/"
	for _, s := range p.segs[:len(p.segs)-1] {
		if strings.ContainsAny(s, "*?[\\") {
			break
		}
		dir = path.Join(dir, s)
	}
	return dir
}

func matchSegs(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			for i := 0; i <= len(name); i++ {
				if matchSegs(rest, name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}

// prefixMatch reports whether dir's segments could be the start of a match.
func prefixMatch(pat, dir []string) bool {
	for len(dir) > 0 {
		if len(pat) == 0 {
			return false
		}
		if pat[0] == "**" {
			return true
		}
		if ok, _ := path.Match(pat[0], dir[0]); !ok {
			return false
		}
		pat, dir = pat[1:], dir[1:]
	}
	return len(pat) > 0
}
