package policy

import (
	"fmt"
	"math/bits"
	"path"
	"strings"
)

// Pattern is a compiled path pattern (see the package documentation).
type Pattern struct {
	s        string
	segs     []string
	compiled []segment
	baseOnly bool
}

// segment is one compiled path segment of a pattern.
type segment struct {
	pat     string
	any     bool // "**": any number of segments
	literal bool // no wildcard: compared as is
}

func compileSegs(segs []string) []segment {
	out := make([]segment, len(segs))
	for i, s := range segs {
		out[i] = segment{pat: s, any: s == "**", literal: !strings.ContainsAny(s, `*?[\`)}
	}
	return out
}

func (s *segment) match(name string) bool {
	if s.literal {
		return s.pat == name
	}
	ok, _ := path.Match(s.pat, name)
	return ok
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
	return Pattern{s: s, segs: segs, compiled: compileSegs(segs)}, nil
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
	// Most patterns that do not match fail on the last segment: check it
	// first (a "**" there matches any segment).
	if len(p.compiled) == 0 {
		return false // the zero Pattern matches nothing
	}
	if last := &p.compiled[len(p.compiled)-1]; !last.any && !last.match(name[strings.LastIndexByte(name, '/')+1:]) {
		return false
	}
	return matchSegs(p.compiled, strings.TrimPrefix(name, "/"), nil)
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
	if p.baseOnly || len(p.segs) == 0 {
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
func matchSegs(pat []segment, name string, steps *int) bool {
	if len(pat) < 64 {
		return matchSegs64(pat, name, steps)
	}
	n := len(pat)
	cur, next := make([]bool, n+1), make([]bool, n+1)
	// closure adds the states reachable without reading a segment: a "**"
	// may match no segment at all.
	closure := func(set []bool) bool {
		any := false
		for i := 0; i <= n; i++ {
			if !set[i] {
				continue
			}
			any = true
			if i < n && pat[i].any {
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
			if pat[i].any {
				next[i] = true // "**" takes this segment and may take more
			} else if pat[i].match(seg) {
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

// matchSegs64 is matchSegs with the set of states in one word, for
// patterns of fewer than 64 segments.
func matchSegs64(pat []segment, name string, steps *int) bool {
	n := len(pat)
	var anyMask uint64 // the "**" states
	for i := range pat {
		if pat[i].any {
			anyMask |= 1 << i
		}
	}
	// closure adds the states reachable without reading a segment: from a
	// "**" state to the next, along runs of "**".
	closure := func(set uint64) uint64 {
		for {
			more := set | (set&anyMask)<<1
			if more == set {
				return set
			}
			set = more
		}
	}
	cur := closure(1)
	for {
		seg, rest, more := strings.Cut(name, "/")
		next := (cur & anyMask) // "**" takes this segment and may take more
		for live := cur &^ anyMask &^ (1 << n); live != 0; live &= live - 1 {
			i := bits.TrailingZeros64(live)
			if pat[i].match(seg) {
				next |= 1 << (i + 1)
			}
		}
		if steps != nil {
			*steps += bits.OnesCount64(cur &^ (1 << n))
		}
		cur = closure(next)
		if cur == 0 {
			return false
		}
		if !more {
			return cur&(1<<n) != 0
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
