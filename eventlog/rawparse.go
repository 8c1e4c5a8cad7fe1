package eventlog

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"unicode/utf8"
)

// rawRecord is a record parsed without allocating: its strings are slices
// of the input. Replay needs only the PCR, the digests and the canonical
// encoding of the content; [rawRecord.record] turns it into a [Record].
type rawRecord struct {
	recnum    uint64
	hasRecnum bool
	pcr       int
	ndig      int
	digs      [4]rawDigest
	ctype     []byte // content_type
	content   []byte // the content object as written
	// inPlace says that fields hold the content: a flat object in key
	// order whose strings have no escapes.
	inPlace bool
	nfields int
	fields  [maxFields]rawField
}

type rawDigest struct {
	alg crypto.Hash
	val [64]byte
	n   int
}

type rawField struct {
	key, val []byte // val: a string's bytes, or an integer's digits
	num      uint64
	isNum    bool
}

// scanRecord parses the top level of a record in the plain shape rimon and
// systemd write: the five known fields (in any order), digests whose
// strings need no escapes, a flat content object. A rimon content in key
// order without escapes is parsed in place (inPlace). Anything else
// returns false and is left to [slowParseRecord]. Every field of r is
// set anew, so nothing of the previous record survives.
func scanRecord(j []byte, r *rawRecord) bool {
	r.recnum, r.hasRecnum, r.pcr, r.ndig = 0, false, 0, 0
	r.ctype, r.content, r.inPlace, r.nfields = nil, nil, false, 0
	p := fastParser{b: j}
	var seen [5]bool
	var havePCR bool
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
			if !ok || n > MaxPCR {
				return false
			}
			r.pcr, havePCR = int(n), true
		case "digests":
			idx = 2
			if !p.digestList(r) {
				return false
			}
		case "content_type":
			idx = 3
			s, ok := p.plainStr()
			if !ok || len(s) == 0 {
				return false
			}
			r.ctype = s
		case "content":
			idx = 4
			start := p.i
			if r.inPlace = r.parseContent(&p); !r.inPlace {
				r.nfields, p.i = 0, start
				if !p.skipFlatObject() {
					return false
				}
			}
			r.content = j[start:p.i]
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
	return p.i == len(j) && havePCR && r.ndig > 0 && r.ctype != nil && r.content != nil
}

// parseRaw parses a rimon record for replay without allocating. When it
// returns true, [slowParseRecord] accepts the same bytes and yields the same
// PCR, record number, digests and canonical encoding (FuzzReplaySequence
// checks this over sequences of records, r being reused as replay does).
func parseRaw(j []byte, r *rawRecord) bool {
	return scanRecord(j, r) && r.inPlace && string(r.ctype) == ContentTypeRimon
}

// record converts r into a Record; false leaves the record to the general parser.
func (r *rawRecord) record() (Record, bool) {
	rec := Record{RecNum: r.recnum, HasRecNum: r.hasRecnum, PCR: r.pcr, ContentType: internKey(r.ctype),
		Digests: make([]Digest, r.ndig)}
	for i := range rec.Digests {
		d := &r.digs[i]
		rec.Digests[i] = Digest{Alg: d.alg, Value: bytes.Clone(d.val[:d.n])}
	}
	switch {
	case rec.ContentType != ContentTypeRimon:
		rec.RawContent = bytes.Clone(r.content)
	case !r.inPlace:
		c, ok := fastParseContent(r.content)
		if !ok {
			return Record{}, false
		}
		rec.Content = c
	case r.nfields > 0:
		rec.Content = make(Content, r.nfields)
		for i, f := range r.fields[:r.nfields] {
			if f.isNum {
				rec.Content[i] = Field{Key: internKey(f.key), Num: f.num, IsNum: true}
			} else {
				rec.Content[i] = Field{Key: internKey(f.key), Str: string(f.val)}
			}
		}
	}
	return rec, true
}

// parseContent parses the content object at p's position in place. It
// succeeds only for a flat object whose keys are valid, in ascending
// order and unique, and whose strings have no escapes.
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
		key, ok := p.plainStr()
		if !ok || !p.colon() || checkKeyBytes(key) != nil {
			return false
		}
		if r.nfields > 0 && bytes.Compare(r.fields[r.nfields-1].key, key) >= 0 {
			return false // out of order or repeated: the general parser decides
		}
		if p.i < len(p.b) && p.b[p.i] == '"' {
			val, ok := p.plainStr()
			if !ok {
				return false
			}
			r.fields[r.nfields] = rawField{key: key, val: val}
		} else {
			start := p.i
			n, ok := p.uint()
			if !ok {
				return false
			}
			r.fields[r.nfields] = rawField{key: key, val: p.b[start:p.i], num: n, isNum: true}
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

// digestList parses [{"hashAlg":"…","digest":"…"}, …] (the two keys in
// either order, strings without escapes, digests in lowercase hex) into r.
// It is the one digests parser of the fast paths.
func (p *fastParser) digestList(r *rawRecord) bool {
	if !p.eat('[') {
		return false
	}
	p.ws()
	for {
		if r.ndig == len(r.digs) || !p.eat('{') {
			return false
		}
		p.ws()
		var alg, dig []byte
		for k := 0; k < 2; k++ {
			if k == 1 {
				p.ws()
				if !p.eat(',') {
					return false
				}
				p.ws()
			}
			name, ok := p.plainStr()
			if !ok || !p.colon() {
				return false
			}
			v, ok := p.plainStr()
			if !ok {
				return false
			}
			switch {
			case string(name) == "hashAlg" && alg == nil:
				alg = v
			case string(name) == "digest" && dig == nil:
				dig = v
			default:
				return false
			}
		}
		p.ws()
		if !p.eat('}') {
			return false
		}
		h := bankOf(alg)
		if h == 0 || len(dig) != 2*h.Size() {
			return false
		}
		for i := 0; i < r.ndig; i++ {
			if r.digs[i].alg == h {
				return false
			}
		}
		d := &r.digs[r.ndig]
		if !decodeLowerHex(d.val[:h.Size()], dig) {
			return false
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

// decodeLowerHex decodes src, which must be lowercase hex of len(dst) bytes.
func decodeLowerHex(dst, src []byte) bool {
	if len(src) != 2*len(dst) {
		return false
	}
	var bad byte
	for i, j := 0, 1; j < len(src); i, j = i+2, j+2 {
		hi, lo := lowerHex[src[i]], lowerHex[src[j]]
		bad |= hi | lo
		dst[i>>1] = hi<<4 | lo&0x0f
	}
	return bad&0xf0 == 0
}

// lowerHex maps a lowercase hex digit to its value, anything else to 0xff.
var lowerHex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()

// appendCanonical appends the canonical encoding of the content to b.
func (r *rawRecord) appendCanonical(b []byte) []byte {
	b = append(b, CanonicalHeader...)
	for _, f := range r.fields[:r.nfields] {
		if !unbound(f.key) {
			b = appendCanonicalField(b, f.key, f.isNum, f.val)
		}
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
