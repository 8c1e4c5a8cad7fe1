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

// Match reports whether the absolute, clean path name matches. It takes
// time proportional to the number of pattern segments times the number of
// name segments, however many "**" the pattern holds.
func (p Pattern) Match(name string) bool {
	if p.baseOnly {
		ok, _ := path.Match(p.s, path.Base(name))
		return ok
	}
	return matchSegs(p.segs, strings.TrimPrefix(name, "/"), nil)
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

// matchSegs reports whether the "/"-separated segments of name match the
// pattern segments pat. It runs the pattern as a nondeterministic automaton
// whose state i means "pat[:i] matched the segments read so far": every
// name segment advances all states at once, so each (state, segment) pair
// is tried at most once, where a backtracking matcher tries a number of
// splits that grows exponentially with the number of "**". steps, when not
// nil, counts the segment comparisons (tests bound it).
func matchSegs(pat []string, name string, steps *int) bool {
	n := len(pat)
	cur := make([]bool, n+1)
	next := make([]bool, n+1)
	// closure adds the states reachable without reading a segment: a "**"
	// may match no segment at all.
	closure := func(set []bool) bool {
		any := false
		for i := 0; i <= n; i++ {
			if !set[i] {
				continue
			}
			any = true
			if i < n && pat[i] == "**" {
				set[i+1] = true
			}
		}
		return any
	}
	cur[0] = true
	closure(cur)
	for {
		seg, rest, more := strings.Cut(name, "/")
		clear(next)
		for i := 0; i < n; i++ {
			if !cur[i] {
				continue
			}
			if steps != nil {
				*steps++
			}
			if pat[i] == "**" {
				next[i] = true // "**" takes this segment and may take more
			} else if ok, _ := path.Match(pat[i], seg); ok {
				next[i+1] = true
			}
		}
		if !closure(next) {
			return false
		}
		cur, next = next, cur
		if !more {
			return cur[n]
		}
		name = rest
	}
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
