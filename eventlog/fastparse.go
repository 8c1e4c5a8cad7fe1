package eventlog

import (
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// errSlow sends a record to the general parser, which either accepts it or
// says precisely what is wrong. The fast parser accepts only the plain shape
// rimon and systemd write, and must give exactly what the general one gives
// (FuzzFastParse checks this).
var errSlow = errors.New("not in the fast parser's subset")

// fastParseRecord parses a record in the common shape without reflection.
func fastParseRecord(j []byte) (Record, error) {
	var raw rawRecord
	if !scanRecord(j, &raw) {
		return Record{}, errSlow
	}
	r, ok := raw.record()
	if !ok {
		return Record{}, errSlow
	}
	return r, nil
}

// fastParseContent parses a flat object of strings and plain integers.
func fastParseContent(j []byte) (Content, bool) {
	p := fastParser{b: j}
	p.ws()
	if !p.eat('{') {
		return nil, false
	}
	fields := make([]Field, 0, 8)
	p.ws()
	if p.eat('}') {
		c, err := NewContent()
		return c, err == nil
	}
	for {
		key, ok := p.key()
		if !ok || !p.colon() {
			return nil, false
		}
		if p.i < len(p.b) && p.b[p.i] == '"' {
			s, ok := p.str()
			if !ok {
				return nil, false
			}
			fields = append(fields, Field{Key: key, Str: s})
		} else {
			n, ok := p.uint()
			if !ok {
				return nil, false
			}
			fields = append(fields, Field{Key: key, Num: n, IsNum: true})
		}
		p.ws()
		if p.eat(',') {
			p.ws()
			continue
		}
		if !p.eat('}') {
			return nil, false
		}
		break
	}
	p.ws()
	if p.i != len(p.b) {
		return nil, false
	}
	c, err := NewContent(fields...)
	return c, err == nil
}

// key parses a string, returning a shared copy for the names rimon uses.
func (p *fastParser) key() (string, bool) {
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '"' {
		end := start + 1
		for end < len(p.b) && p.b[end] != '"' && p.b[end] != '\\' && p.b[end] >= 0x20 && p.b[end] < 0x80 {
			end++
		}
		if end < len(p.b) && p.b[end] == '"' {
			if k, ok := knownKeys[string(p.b[start+1:end])]; ok {
				p.i = end + 1
				return k, true
			}
		}
	}
	return p.str()
}

var knownKeys = map[string]string{}

// internKey returns a shared copy of the names rimon uses, a new string otherwise.
func internKey(b []byte) string {
	if k, ok := knownKeys[string(b)]; ok {
		return k
	}
	return string(b)
}

func init() {
	for _, k := range []string{"kind", "path", "sha256", "size", "reason", "time", "boot_id", ContentTypeRimon, ContentTypeSystemd} {
		knownKeys[k] = k
	}
}

type fastParser struct {
	b []byte
	i int
}

func (p *fastParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *fastParser) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *fastParser) colon() bool {
	p.ws()
	if !p.eat(':') {
		return false
	}
	p.ws()
	return true
}

// uint parses a JSON number that is a non-negative integer in plain decimal.
func (p *fastParser) uint() (uint64, bool) {
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	digits := p.b[start:p.i]
	if len(digits) == 0 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	var n uint64
	for _, c := range digits {
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false // overflow
		}
		n = n*10 + d
	}
	return n, true
}

// str parses a JSON string. It refuses what encoding/json would alter
// (invalid UTF-8, lone surrogates), leaving that to the general parser.
func (p *fastParser) str() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	start := p.i
	ascii := true
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			if !ascii && !utf8.Valid(s) {
				return "", false
			}
			return string(s), true
		case c == '\\':
			return p.escapedStr(start)
		case c < 0x20:
			return "", false
		case c >= 0x80:
			ascii = false
		}
		p.i++
	}
	return "", false
}

func (p *fastParser) escapedStr(start int) (string, bool) {
	out := append([]byte(nil), p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			if !utf8.Valid(out) {
				return "", false
			}
			return string(out), true
		case c < 0x20:
			return "", false
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			return "", false
		}
		e := p.b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", false
			}
			if utf16.IsSurrogate(r) {
				if p.i+1 >= len(p.b) || p.b[p.i] != '\\' || p.b[p.i+1] != 'u' {
					return "", false
				}
				p.i += 2
				r2, ok := p.hex4()
				if !ok {
					return "", false
				}
				r = utf16.DecodeRune(r, r2)
				if r == utf8.RuneError {
					return "", false
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", false
		}
	}
	return "", false
}

func (p *fastParser) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	p.i += 4
	return r, true
}

// skipFlatObject skips an object whose values are strings or numbers.
func (p *fastParser) skipFlatObject() bool {
	if !p.eat('{') {
		return false
	}
	p.ws()
	if p.eat('}') {
		return true
	}
	for {
		if _, ok := p.str(); !ok || !p.colon() {
			return false
		}
		if p.i < len(p.b) && p.b[p.i] == '"' {
			if _, ok := p.str(); !ok {
				return false
			}
		} else if _, ok := p.uint(); !ok {
			return false
		}
		p.ws()
		if p.eat(',') {
			p.ws()
			continue
		}
		return p.eat('}')
	}
}
