package eventlog

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"encoding/hex"
	"unicode/utf8"
)

// rawRecord is a record parsed without allocating: its content fields are
// slices of the input. It serves replay, which needs only the PCR, the
// digests and the canonical encoding of the content.
type rawRecord struct {
	recnum    uint64
	hasRecnum bool
	pcr       int
	ndig      int
	digs      [4]rawDigest
	rimon     bool
	nfields   int
	fields    [maxFields]rawField
}

type rawDigest struct {
	alg crypto.Hash
	val [64]byte
	n   int
}

type rawField struct {
	key, val []byte
	isNum    bool
}

// parseRaw parses the plainest shape of a rimon record: the fields rimon
// writes, content keys in order, no escapes in content strings. Anything
// else returns false and goes to [parseRecord]. When it returns true,
// parseRecord accepts the same bytes and yields the same PCR, record number,
// digests and canonical encoding (FuzzRawParse checks this).
func parseRaw(j []byte, r *rawRecord) bool {
	r.hasRecnum, r.recnum, r.pcr, r.ndig, r.rimon, r.nfields = false, 0, 0, 0, false, 0
	p := fastParser{b: j}
	var seen [5]bool
	var havePCR bool
	var haveContent bool
	p.ws()
	if !p.eat('{') {
		return false
	}
	p.ws()
	for {
		key, ok := p.plainStr()
		if !ok || !p.colon() {
			return false
		}
		var idx int
		switch string(key) {
		case "recnum":
			idx = 0
			n, ok := p.uint()
			if !ok {
				return false
			}
			r.recnum, r.hasRecnum = n, true
		case "pcr":
			idx = 1
			n, ok := p.uint()
			if !ok || n > 31 {
				return false
			}
			r.pcr, havePCR = int(n), true
		case "digests":
			idx = 2
			if !p.rawDigests(r) {
				return false
			}
		case "content_type":
			idx = 3
			s, ok := p.plainStr()
			if !ok || string(s) != ContentTypeRimon {
				return false
			}
			r.rimon = true
		case "content":
			idx = 4
			if !r.parseContent(&p) {
				return false
			}
			haveContent = true
		default:
			return false
		}
		if seen[idx] {
			return false
		}
		seen[idx] = true
		p.ws()
		if p.eat(',') {
			p.ws()
			continue
		}
		if !p.eat('}') {
			return false
		}
		break
	}
	p.ws()
	return p.i == len(j) && havePCR && r.ndig > 0 && r.rimon && haveContent
}

// parseContent parses the content object at p's position.
func (r *rawRecord) parseContent(p *fastParser) bool {
	if !p.eat('{') {
		return false
	}
	p.ws()
	if p.eat('}') {
		return true
	}
	for {
		if r.nfields == maxFields {
			return false
		}
		f := &r.fields[r.nfields]
		key, ok := p.plainStr()
		if !ok || !p.colon() || checkKeyBytes(key) != nil {
			return false
		}
		if r.nfields > 0 && bytes.Compare(r.fields[r.nfields-1].key, key) >= 0 {
			return false // out of order or repeated: the general parser decides
		}
		f.key = key
		if p.i < len(p.b) && p.b[p.i] == '"' {
			if f.val, ok = p.plainStr(); !ok {
				return false
			}
			f.isNum = false
		} else {
			start := p.i
			if _, ok := p.uint(); !ok {
				return false
			}
			f.val, f.isNum = p.b[start:p.i], true
		}
		r.nfields++
		p.ws()
		if p.eat(',') {
			p.ws()
			continue
		}
		return p.eat('}')
	}
}

// plainStr returns the bytes of a string without escapes that is valid UTF-8.
func (p *fastParser) plainStr() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	n := bytes.IndexByte(p.b[p.i:], '"')
	if n < 0 {
		return nil, false
	}
	s := p.b[p.i : p.i+n]
	if !plainASCII(s) {
		for _, c := range s {
			if c == '\\' || c < 0x20 {
				return nil, false
			}
		}
		if !utf8.Valid(s) {
			return nil, false
		}
	}
	p.i += n + 1
	return s, true
}

// plainASCII reports whether s holds only printable ASCII other than the
// backslash, looking at eight bytes at a time.
func plainASCII(s []byte) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for len(s) >= 8 {
		x := binary.LittleEndian.Uint64(s)
		bs := x ^ (lo * '\\')
		// A high bit is set for a byte >= 0x80, < 0x20, or equal to a backslash.
		if (x|(x-lo*0x20)&^x|(bs-lo)&^bs)&hi != 0 {
			return false
		}
		s = s[8:]
	}
	for _, c := range s {
		if c < 0x20 || c >= 0x80 || c == '\\' {
			return false
		}
	}
	return true
}

func (p *fastParser) rawDigests(r *rawRecord) bool {
	if !p.eat('[') {
		return false
	}
	p.ws()
	for {
		if r.ndig == len(r.digs) || !p.eat('{') {
			return false
		}
		p.ws()
		k1, ok := p.plainStr()
		if !ok || string(k1) != "hashAlg" || !p.colon() {
			return false
		}
		alg, ok := p.plainStr()
		if !ok {
			return false
		}
		p.ws()
		if !p.eat(',') {
			return false
		}
		p.ws()
		k2, ok := p.plainStr()
		if !ok || string(k2) != "digest" || !p.colon() {
			return false
		}
		dig, ok := p.plainStr()
		if !ok {
			return false
		}
		p.ws()
		if !p.eat('}') {
			return false
		}
		h := bankOf(alg)
		if h == 0 || len(dig) != 2*h.Size() {
			return false
		}
		d := &r.digs[r.ndig]
		if _, err := hex.Decode(d.val[:], dig); err != nil {
			return false
		}
		for i := 0; i < r.ndig; i++ {
			if r.digs[i].alg == h {
				return false
			}
		}
		d.alg, d.n = h, h.Size()
		r.ndig++
		p.ws()
		if p.eat(',') {
			p.ws()
			continue
		}
		return p.eat(']')
	}
}

// appendCanonical appends the canonical encoding of the content to b.
func (r *rawRecord) appendCanonical(b []byte) []byte {
	b = append(b, CanonicalHeader...)
	for _, f := range r.fields[:r.nfields] {
		if k := f.key; string(k) == "time" || string(k) == "boot_id" { // Unbound
			continue
		}
		b = appendU32(b, len(f.key))
		b = append(b, f.key...)
		if f.isNum {
			b = append(b, 'n')
		} else {
			b = append(b, 's')
		}
		b = appendU32(b, len(f.val))
		b = append(b, f.val...)
	}
	return b
}

func (r *rawRecord) digest(h crypto.Hash) ([]byte, bool) {
	for i := 0; i < r.ndig; i++ {
		if r.digs[i].alg == h {
			return r.digs[i].val[:r.digs[i].n], true
		}
	}
	return nil, false
}

func bankOf(name []byte) crypto.Hash {
	switch string(name) {
	case "sha1":
		return crypto.SHA1
	case "sha256":
		return crypto.SHA256
	case "sha384":
		return crypto.SHA384
	case "sha512":
		return crypto.SHA512
	}
	return 0
}

func appendU32(b []byte, n int) []byte {
	return append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func checkKeyBytes(k []byte) error {
	if len(k) == 0 || len(k) > maxKeyLen {
		return errSlow
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return errSlow
		}
	}
	return nil
}
