package policy

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxExcludeAlternatives bounds the patterns one exclude may become.
const maxExcludeAlternatives = 32

// TranslateKeylimeExclude returns rimon patterns that, together, match
// exactly the paths the Keylime exclude re matches, among the clean
// absolute paths without a newline. Keylime tests an exclude with Python's
// re.match: anchored at the start of the path, not at its end unless the
// expression ends with "$". A path that holds a newline is never ignored
// (see [Reference.Ignored]): there rimon is stricter than Keylime.
//
// It translates literals, ".", character classes, "*", "+" and "?" after a
// single character, groups and "|", "^" at the start and "$" at the end. It
// refuses what it cannot translate exactly, or where Python and Go read the
// expression differently: escapes such as \d, \w and \s (Unicode-aware in
// Python), flags and look-around ("(?i)", "(?=..."), counted repetition, a
// repeated class narrower than "any character", and POSIX classes. An
// exclude that matches no clean absolute path (such as IMA's
// "boot_aggregate") gives no pattern and no error.
func TranslateKeylimeExclude(re string) ([]string, error) {
	if err := prescanExclude(re); err != nil {
		return nil, err
	}
	node, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("not a regular expression rimon can read: %v", err)
	}
	seqs, err := reAlternatives(node)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, seq := range seqs {
		pats, err := seqPatterns(seq)
		if err != nil {
			return nil, err
		}
		for _, p := range pats {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
		if len(out) > maxExcludeAlternatives {
			return nil, fmt.Errorf("more than %d rimon patterns would be needed", maxExcludeAlternatives)
		}
	}
	sort.Strings(out)
	return out, nil
}

// prescanExclude refuses syntax that Python's re and Go's regexp read
// differently, or that cannot be translated.
func prescanExclude(re string) error {
	for i := 0; i < len(re); i++ {
		switch c := re[i]; {
		case c == '\\' && i+1 < len(re):
			n := re[i+1]
			if n < utf8.RuneSelf && (unicode.IsLetter(rune(n)) || unicode.IsDigit(rune(n))) {
				return fmt.Errorf(`the escape \%c is not translated (Python and rimon read escapes and classes such as \d \w \s differently)`, n)
			}
			i++
		case c == '(' && strings.HasPrefix(re[i:], "(?") && !strings.HasPrefix(re[i:], "(?:") && !strings.HasPrefix(re[i:], "(?P<"):
			return errors.New("flags and look-around (?...) are not translated")
		case c == '{':
			return errors.New("counted repetition {m,n} is not translated")
		case c == '[' && (strings.HasPrefix(re[i:], "[:") || strings.HasPrefix(re[i:], "[[")):
			return errors.New("nested or POSIX character classes are not translated")
		}
	}
	return nil
}

// reTok is one element of a regular expression without alternation.
type reTok struct {
	kind   int    // tokLit, tokClass, tokStar, tokBegin, tokEnd
	ranges []rune // the characters, as lo-hi pairs (tokClass, tokStar)
}

const (
	tokClass = iota // one character from ranges
	tokStar         // zero or more characters from ranges
	tokBegin
	tokEnd
)

func litTok(r rune) reTok { return reTok{kind: tokClass, ranges: []rune{r, r}} }

// reAlternatives expands the expression into sequences without alternation.
func reAlternatives(n *syntax.Regexp) ([][]reTok, error) {
	single := func(n *syntax.Regexp) ([]rune, bool) {
		switch n.Op {
		case syntax.OpLiteral:
			if len(n.Rune) == 1 && n.Flags&syntax.FoldCase == 0 {
				return []rune{n.Rune[0], n.Rune[0]}, true
			}
		case syntax.OpCharClass:
			return n.Rune, true
		case syntax.OpAnyCharNotNL:
			return []rune{0, '\n' - 1, '\n' + 1, unicode.MaxRune}, true
		case syntax.OpAnyChar:
			return []rune{0, unicode.MaxRune}, true
		}
		return nil, false
	}
	switch n.Op {
	case syntax.OpEmptyMatch:
		return [][]reTok{{}}, nil
	case syntax.OpLiteral:
		if n.Flags&syntax.FoldCase != 0 {
			return nil, errors.New("case-insensitive matching is not translated")
		}
		seq := make([]reTok, len(n.Rune))
		for i, r := range n.Rune {
			seq[i] = litTok(r)
		}
		return [][]reTok{seq}, nil
	case syntax.OpCharClass, syntax.OpAnyCharNotNL, syntax.OpAnyChar:
		rs, _ := single(n)
		return [][]reTok{{{kind: tokClass, ranges: rs}}}, nil
	case syntax.OpBeginText, syntax.OpBeginLine:
		return [][]reTok{{{kind: tokBegin}}}, nil
	case syntax.OpEndText, syntax.OpEndLine:
		return [][]reTok{{{kind: tokEnd}}}, nil
	case syntax.OpCapture:
		return reAlternatives(n.Sub[0])
	case syntax.OpStar, syntax.OpPlus:
		rs, ok := single(n.Sub[0])
		if !ok {
			return nil, errors.New("repetition of more than one character is not translated")
		}
		star := reTok{kind: tokStar, ranges: rs}
		if n.Op == syntax.OpPlus {
			return [][]reTok{{{kind: tokClass, ranges: rs}, star}}, nil
		}
		return [][]reTok{{star}}, nil
	case syntax.OpQuest:
		sub, err := reAlternatives(n.Sub[0])
		if err != nil {
			return nil, err
		}
		return append([][]reTok{{}}, sub...), nil
	case syntax.OpAlternate:
		var out [][]reTok
		for _, s := range n.Sub {
			a, err := reAlternatives(s)
			if err != nil {
				return nil, err
			}
			out = append(out, a...)
			if len(out) > maxExcludeAlternatives {
				return nil, fmt.Errorf("more than %d alternatives", maxExcludeAlternatives)
			}
		}
		return out, nil
	case syntax.OpConcat:
		out := [][]reTok{{}}
		for _, s := range n.Sub {
			a, err := reAlternatives(s)
			if err != nil {
				return nil, err
			}
			var next [][]reTok
			for _, x := range out {
				for _, y := range a {
					next = append(next, append(append([]reTok(nil), x...), y...))
				}
			}
			if len(next) > maxExcludeAlternatives {
				return nil, fmt.Errorf("more than %d alternatives", maxExcludeAlternatives)
			}
			out = next
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s is not translated", n)
}

// Path tokens: what a sequence means for clean absolute paths without a
// newline.
const (
	pLit     = iota // one literal character (r)
	pClass          // one character of a class without '/' (glob)
	pSegStar        // any characters but '/'
	pAny            // any characters, '/' included
	pDStar          // "**": any number of whole segments
)

type pTok struct {
	kind int
	r    rune
	glob string // pClass: "?" or "[...]"
}

// seqPatterns turns one sequence into rimon patterns.
func seqPatterns(seq []reTok) ([]string, error) {
	anchored := false
	for i, t := range seq {
		switch t.kind {
		case tokBegin:
			if i != 0 {
				return nil, errors.New(`"^" inside the expression is not translated`)
			}
		case tokEnd:
			if i != len(seq)-1 {
				return nil, errors.New(`"$" before the end of the expression is not translated`)
			}
			anchored = true
		}
	}
	// Expand into path-token sequences.
	alts := [][]pTok{{}}
	add := func(choices ...[]pTok) error {
		var next [][]pTok
		for _, a := range alts {
			for _, c := range choices {
				next = append(next, append(append([]pTok(nil), a...), c...))
			}
		}
		if len(next) > maxExcludeAlternatives {
			return fmt.Errorf("more than %d rimon patterns would be needed", maxExcludeAlternatives)
		}
		alts = next
		return nil
	}
	if !anchored {
		seq = append(seq, reTok{kind: tokStar, ranges: []rune{0, unicode.MaxRune}})
	}
	for _, t := range seq {
		if t.kind == tokBegin || t.kind == tokEnd {
			continue
		}
		set := subtractRunes(t.ranges, '\n')
		hasSlash := containsRune(set, '/')
		noSlash := subtractRunes(set, '/')
		var err error
		switch t.kind {
		case tokClass:
			var choices [][]pTok
			if hasSlash {
				choices = append(choices, []pTok{{kind: pLit, r: '/'}})
			}
			if len(noSlash) > 0 {
				choices = append(choices, []pTok{classTok(noSlash)})
			}
			if len(choices) == 0 {
				return nil, nil // matches only a newline: no path here
			}
			err = add(choices...)
		case tokStar:
			everything := coversAllBut(noSlash, '/', '\n')
			switch {
			case len(noSlash) == 0 && !hasSlash:
				continue // repeats nothing: the empty string
			case len(noSlash) == 0:
				// "/*": a clean path never holds "//", so none or one.
				err = add([]pTok{}, []pTok{{kind: pLit, r: '/'}})
			case hasSlash && everything:
				err = add([]pTok{{kind: pAny}})
			case hasSlash:
				return nil, errors.New("a repeated class that holds / but not every character is not translated")
			case everything:
				err = add([]pTok{{kind: pSegStar}})
			default:
				return nil, errors.New("a repeated class narrower than any character (such as [a-z]*) is not translated")
			}
		}
		if err != nil {
			return nil, err
		}
	}
	var out []string
	for _, a := range alts {
		ps, err := pathPatterns(collapseStars(a))
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	return out, nil
}

// collapseStars merges runs of stars: "any" absorbs a neighbouring "*"
// (or "any"), and "*" "*" is "*".
func collapseStars(a []pTok) []pTok {
	var out []pTok
	for _, t := range a {
		if n := len(out); n > 0 && (t.kind == pAny || t.kind == pSegStar) {
			last := out[n-1].kind
			switch {
			case last == pAny:
				continue
			case last == pSegStar && t.kind == pAny:
				out[n-1] = t
				continue
			case last == pSegStar:
				continue
			}
		}
		out = append(out, t)
	}
	return out
}

// pathPatterns renders one path-token sequence, which must match a whole
// clean absolute path, as rimon patterns.
func pathPatterns(a []pTok) ([]string, error) {
	// The first character of an absolute path is '/'.
	for len(a) > 0 {
		t := a[0]
		if t.kind == pLit && t.r == '/' {
			break
		}
		switch t.kind {
		case pSegStar:
			a = a[1:] // it can only match the empty string here
			continue
		case pAny:
			// Empty, or "/" then anything.
			rest := append([]pTok{{kind: pLit, r: '/'}}, a...)
			p1, err := pathPatterns(a[1:])
			if err != nil {
				return nil, err
			}
			p2, err := pathPatterns(rest)
			if err != nil {
				return nil, err
			}
			return append(p1, p2...), nil
		}
		return nil, nil // a character other than '/': matches no absolute path
	}
	if len(a) == 0 {
		return nil, nil
	}
	a = a[1:]
	if len(a) == 0 {
		return nil, errors.New(`it matches the root "/" alone, which no rimon pattern expresses`)
	}
	// "/" followed by anything: every absolute path.
	if len(a) == 1 && a[0].kind == pAny {
		return []string{"/**"}, nil
	}
	// Expand pAny: at the end, "*/**" covers it; elsewhere it is either
	// within one segment ("*") or spans segments ("*/**/*").
	alts := [][]pTok{{}}
	for i, t := range a {
		var choices [][]pTok
		switch {
		case t.kind != pAny:
			choices = [][]pTok{{t}}
		case i == len(a)-1:
			choices = [][]pTok{{{kind: pSegStar}, {kind: pLit, r: '/'}, {kind: pDStar}}}
		default:
			choices = [][]pTok{{{kind: pSegStar}}, {{kind: pSegStar}, {kind: pLit, r: '/'}, {kind: pDStar}, {kind: pLit, r: '/'}, {kind: pSegStar}}}
		}
		var next [][]pTok
		for _, x := range alts {
			for _, c := range choices {
				next = append(next, append(append([]pTok(nil), x...), c...))
			}
		}
		if len(next) > maxExcludeAlternatives {
			return nil, fmt.Errorf("more than %d rimon patterns would be needed", maxExcludeAlternatives)
		}
		alts = next
	}
	var out []string
	for _, x := range alts {
		p, ok := renderPattern(x)
		if !ok {
			continue // an empty, "." or ".." segment: no clean path matches
		}
		if _, err := CompilePattern(p); err != nil {
			return nil, fmt.Errorf("rimon pattern %q: %v", p, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// renderPattern writes the tokens after the leading '/' as a pattern.
func renderPattern(a []pTok) (string, bool) {
	var segs []string
	var b strings.Builder
	literal := true // the segment so far is made of literals only
	var lit strings.Builder
	flush := func() bool {
		s := b.String()
		if s == "" || literal && (lit.String() == "." || lit.String() == "..") {
			return false
		}
		segs = append(segs, s)
		b.Reset()
		lit.Reset()
		literal = true
		return true
	}
	prevStar := false
	for _, t := range a {
		switch t.kind {
		case pLit:
			if t.r == '/' {
				if !flush() {
					return "", false
				}
				prevStar = false
				continue
			}
			if strings.ContainsRune(`*?[\`, t.r) {
				b.WriteByte('\\')
			}
			b.WriteRune(t.r)
			lit.WriteRune(t.r)
			prevStar = false
			continue
		case pClass:
			b.WriteString(t.glob)
		case pSegStar:
			if !prevStar {
				b.WriteByte('*')
			}
			prevStar = true
			literal = false
			continue
		case pDStar:
			b.WriteString("**")
		}
		prevStar = false
		literal = false
	}
	if !flush() {
		return "", false
	}
	return "/" + strings.Join(segs, "/"), true
}

// classTok renders a class without '/' as a glob: "?" for any character,
// else "[...]" or "[^...]", whichever is shorter. '/' and '\n' never occur
// where it is used, so they are left out of both forms.
func classTok(rs []rune) pTok {
	if len(rs) == 2 && rs[0] == rs[1] {
		return pTok{kind: pLit, r: rs[0]}
	}
	if coversAllBut(rs, '/', '\n') {
		return pTok{kind: pClass, glob: "?"}
	}
	comp := subtractRunes(subtractRunes(complementRunes(rs), '/'), '\n')
	neg := ""
	if len(comp) < len(rs) {
		rs, neg = comp, "^"
	}
	var b strings.Builder
	b.WriteString("[" + neg)
	for i := 0; i < len(rs); i += 2 {
		b.WriteString(`\` + string(rs[i]))
		if rs[i+1] != rs[i] {
			b.WriteString(`-\` + string(rs[i+1]))
		}
	}
	b.WriteString("]")
	return pTok{kind: pClass, glob: b.String()}
}

func containsRune(rs []rune, r rune) bool {
	for i := 0; i < len(rs); i += 2 {
		if rs[i] <= r && r <= rs[i+1] {
			return true
		}
	}
	return false
}

// subtractRunes removes r from sorted lo-hi pairs.
func subtractRunes(rs []rune, r rune) []rune {
	var out []rune
	for i := 0; i < len(rs); i += 2 {
		lo, hi := rs[i], rs[i+1]
		if r < lo || r > hi {
			out = append(out, lo, hi)
			continue
		}
		if lo < r {
			out = append(out, lo, r-1)
		}
		if r < hi {
			out = append(out, r+1, hi)
		}
	}
	return out
}

// complementRunes returns the runes not in rs (sorted lo-hi pairs).
func complementRunes(rs []rune) []rune {
	var out []rune
	next := rune(0)
	for i := 0; i < len(rs); i += 2 {
		if rs[i] > next {
			out = append(out, next, rs[i]-1)
		}
		next = rs[i+1] + 1
	}
	if next <= unicode.MaxRune {
		out = append(out, next, unicode.MaxRune)
	}
	return out
}

// coversAllBut reports whether rs holds every rune except, perhaps, those given.
func coversAllBut(rs []rune, except ...rune) bool {
	comp := complementRunes(rs)
	for _, e := range except {
		comp = subtractRunes(comp, e)
	}
	return len(comp) == 0
}
