package policy

import (
	"fmt"
	"path"
	"strings"
	"testing"
	"time"
)

// backtrack is the obvious recursive matcher: correct, but exponential in
// the number of "**". matchSegs must agree with it.
func backtrack(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(name); i++ {
				if backtrack(pat[1:], name[i:]) {
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

// manyStars is a pattern with k "**" that a path of depth ones "a"
// segments followed by "x/c" does not match (it wants "b/c" at the end),
// though its last segment does: a backtracking matcher tries every way to
// split the path among the "**".
func manyStars(k, depth int) (pat, name string) {
	pat = "/" + strings.Repeat("**/a/", k) + "b/c"
	name = "/" + strings.Repeat("a/", depth) + "x/c"
	return pat, name
}

// TestMatchStepsBounded counts the segment comparisons of a 12-"**" pattern
// over a 40-deep path: at most one per (pattern segment, name segment)
// pair. The backtracking matcher this replaced needed about 10^11 (it ran
// for minutes), and ignored SIGTERM meanwhile.
func TestMatchStepsBounded(t *testing.T) {
	for _, k := range []int{1, 4, 12, 30} {
		pat, name := manyStars(k, 40)
		p, err := CompilePattern(pat)
		if err != nil {
			t.Fatal(err)
		}
		steps := 0
		if matchSegs(p.compiled, strings.TrimPrefix(name, "/"), &steps) {
			t.Errorf("%q matched %q", pat, name)
		}
		limit := len(p.segs) * (strings.Count(name, "/") + 1)
		if steps > limit {
			t.Errorf("%d \"**\" over depth 40: %d comparisons, want at most %d", k, steps, limit)
		}
	}
}

func TestZeroPatternMatchesNothing(t *testing.T) {
	var p Pattern
	for _, name := range []string{"", "/", "/a"} {
		if p.Match(name) {
			t.Errorf("Pattern{}.Match(%q) = true", name)
		}
	}
	if got := p.StaticPrefix(); got != "/" {
		t.Errorf("Pattern{}.StaticPrefix() = %q, want /", got)
	}
}

// TestMatchManyDoubleStarsEnds is the same case through the public API,
// with a deadline of minutes: a regression to backtracking never returns.
func TestMatchManyDoubleStarsEnds(t *testing.T) {
	pat, name := manyStars(12, 40)
	p, err := CompilePattern(pat)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan bool, 1)
	go func() { done <- p.Match(name) }()
	select {
	case got := <-done:
		if got {
			t.Errorf("%q matched %q", pat, name)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("%q.Match(%q) still running after 2 minutes", pat, name)
	}
}

// TestMatchAgreesWithBacktracking compares the automaton with the
// recursive matcher on every combination of a few segments.
func TestMatchAgreesWithBacktracking(t *testing.T) {
	patSegs := []string{"**", "a", "*", "b?", "[ab]", `\a`}
	nameSegs := []string{"a", "b", "bc", "ab"}
	var pats [][]string
	var gen func(cur []string, n int)
	gen = func(cur []string, n int) {
		if len(cur) > 0 {
			pats = append(pats, append([]string(nil), cur...))
		}
		if n == 0 {
			return
		}
		for _, s := range patSegs {
			gen(append(cur, s), n-1)
		}
	}
	gen(nil, 4)
	var names [][]string
	var genN func(cur []string, n int)
	genN = func(cur []string, n int) {
		names = append(names, append([]string(nil), cur...))
		if n == 0 {
			return
		}
		for _, s := range nameSegs {
			genN(append(cur, s), n-1)
		}
	}
	genN(nil, 5)
	for _, pat := range pats {
		for _, name := range names {
			if len(name) == 0 {
				name = []string{""} // the root, "/"
			}
			want := backtrack(pat, name)
			if got := matchSegs(compileSegs(pat), strings.Join(name, "/"), nil); got != want {
				t.Fatalf("match(%q, %q) = %v, want %v", strings.Join(pat, "/"), strings.Join(name, "/"), got, want)
			}
		}
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("/etc/**/*.conf", "/etc/x/y/a.conf")
	f.Add("**/a/**/b", "/a/a/b/b")
	f.Fuzz(func(t *testing.T, pat, name string) {
		p, err := CompilePattern(pat)
		if err != nil || p.baseOnly || strings.Count(pat, "**") > 4 || strings.Count(name, "/") > 12 {
			return
		}
		want := backtrack(p.segs, strings.Split(strings.TrimPrefix(name, "/"), "/"))
		if got := p.Match(name); got != want {
			t.Errorf("%q.Match(%q) = %v, backtracking says %v", pat, name, got, want)
		}
	})
}

// BenchmarkMatchManyDoubleStars: go test ./policy -bench MatchMany -run ^$
func BenchmarkMatchManyDoubleStars(b *testing.B) {
	pat, name := manyStars(12, 40)
	p, err := CompilePattern(pat)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		p.Match(name)
	}
}

// BenchmarkMatchDeepPath is two "**" over a 1000-deep path, as a hostile
// evidence log may carry: linear, where backtracking was quadratic.
func BenchmarkMatchDeepPath(b *testing.B) {
	p, err := CompilePattern("/opt/**/x/**/y/z")
	if err != nil {
		b.Fatal(err)
	}
	name := "/opt/" + strings.Repeat("x/", 1000) + "q/z"
	for b.Loop() {
		p.Match(name)
	}
}

// BenchmarkLookupDeepPath looks up a 500-deep path among 100 pattern
// entries, as a reference check does for each record of hostile evidence.
func BenchmarkLookupDeepPath(b *testing.B) {
	var entries []RefEntry
	for i := range 100 {
		pat := fmt.Sprintf("/opt/**/x%d/**/w/y", i)
		p, err := CompilePattern(pat)
		if err != nil {
			b.Fatal(err)
		}
		entries = append(entries, RefEntry{Path: pat, Pattern: &p})
	}
	name := "/opt/" + strings.Repeat("x1/", 500) + "q/y"
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Lookup(entries, name); ok {
			b.Fatal("matched")
		}
	}
}
