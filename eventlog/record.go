package eventlog

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	// Register the hash functions the banks use.
	_ "crypto/sha1"
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// Content types.
const (
	// ContentTypeRimon marks records written by rimon.
	ContentTypeRimon = "rimon"
	// ContentTypeSystemd marks records written by systemd-pcrextend.
	ContentTypeSystemd = "systemd"
)

// MaxPCR is the largest PCR index a record may name (TPM 2.0 PC Client
// TPMs have 24; the format leaves room for 32).
const MaxPCR = 31

// CanonicalHeader opens the canonical encoding of a rimon record's content.
const CanonicalHeader = "rimon-event-v1\n"

// Limits that keep a hostile log from exhausting memory.
const (
	// MaxRecordSize is the largest record, in bytes, that a [Reader] accepts.
	MaxRecordSize = 1 << 20
	maxKeyLen     = 64
	maxFields     = 64
)

// Banks rimon can extend, by their CEL-JSON names.
var bankNames = map[crypto.Hash]string{
	crypto.SHA1:   "sha1",
	crypto.SHA256: "sha256",
	crypto.SHA384: "sha384",
	crypto.SHA512: "sha512",
}

// ErrUnknownBank is returned for a hash algorithm name rimon does not support.
var ErrUnknownBank = errors.New("unknown PCR bank")

// BankName returns the CEL-JSON name of a bank ("sha256").
func BankName(h crypto.Hash) string {
	if n, ok := bankNames[h]; ok {
		return n
	}
	return h.String()
}

// ParseBank parses a bank name such as "sha256".
func ParseBank(name string) (crypto.Hash, error) {
	for h, n := range bankNames {
		if n == name {
			return h, nil
		}
	}
	return 0, fmt.Errorf("%w %q (rimon supports sha1, sha256, sha384, sha512)", ErrUnknownBank, name)
}

// Digest is one bank's digest in a record.
type Digest struct {
	Alg   crypto.Hash
	Value []byte
}

// Field is one key of a rimon record's content: a string or a non-negative integer.
type Field struct {
	Key   string
	Str   string
	Num   uint64
	IsNum bool
}

// Content is the content of a rimon record: fields sorted by key, keys unique.
// Build one with [Event.Content] or [NewContent].
type Content []Field

// NewContent sorts fields by key and checks them: keys of 1 to 64 characters
// from [a-z0-9_], unique, strings valid UTF-8.
func NewContent(fields ...Field) (Content, error) {
	c := append(Content(nil), fields...)
	if !sort.SliceIsSorted(c, func(i, j int) bool { return c[i].Key < c[j].Key }) {
		sort.Slice(c, func(i, j int) bool { return c[i].Key < c[j].Key })
	}
	if len(c) > maxFields {
		return nil, fmt.Errorf("content has %d fields, at most %d allowed", len(c), maxFields)
	}
	for i, f := range c {
		if err := checkKey(f.Key); err != nil {
			return nil, err
		}
		if i > 0 && c[i-1].Key == f.Key {
			return nil, fmt.Errorf("content field %q appears twice", f.Key)
		}
		if !f.IsNum && !utf8.ValidString(f.Str) {
			return nil, fmt.Errorf("content field %q is not valid UTF-8", f.Key)
		}
	}
	return c, nil
}

func checkKey(k string) error {
	if len(k) == 0 || len(k) > maxKeyLen {
		return fmt.Errorf("content field name %q: want 1 to %d characters", k, maxKeyLen)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("content field name %q: only a-z, 0-9 and _ are allowed", k)
		}
	}
	return nil
}

// Get returns the field named key.
func (c Content) Get(key string) (Field, bool) {
	i := sort.Search(len(c), func(i int) bool { return c[i].Key >= key })
	if i < len(c) && c[i].Key == key {
		return c[i], true
	}
	return Field{}, false
}

// Str returns the string field named key, or "".
func (c Content) Str(key string) string {
	f, _ := c.Get(key)
	return f.Str
}

// Num returns the integer field named key, or 0.
func (c Content) Num(key string) uint64 {
	f, _ := c.Get(key)
	return f.Num
}

// Canonical returns the canonical encoding that rimon hashes into the PCR:
// [CanonicalHeader], then for each bound field in key order
//
//	uint32be(len(key)) key tag uint32be(len(value)) value
//
// where tag is 's' for a string and 'n' for an integer written in decimal.
// Every field is bound except the informational ones ([Unbound]), so that
// the same files measured for the same reasons give the same PCR value on
// every machine.
func (c Content) Canonical() []byte {
	n := len(CanonicalHeader)
	for _, f := range c {
		n += 9 + len(f.Key) + len(f.Str) + 20
	}
	return c.AppendCanonical(make([]byte, 0, n))
}

// Unbound reports whether a content field is informational: recorded, but
// not part of the canonical encoding, and so not vouched for by the PCR.
// These are "time" and "boot_id".
func Unbound(key string) bool { return unbound(key) }

// text is a string or its bytes: the canonical encoding is written from
// parsed [Content] and, by replay, from fields still in the log's buffer.
type text interface{ ~string | ~[]byte }

func unbound[T text](key T) bool { return string(key) == "time" || string(key) == "boot_id" }

// AppendCanonical appends the canonical encoding to b.
func (c Content) AppendCanonical(b []byte) []byte {
	b = append(b, CanonicalHeader...)
	var num [20]byte
	for _, f := range c {
		if unbound(f.Key) {
			continue
		}
		if f.IsNum {
			b = appendCanonicalField(b, f.Key, true, strconv.AppendUint(num[:0], f.Num, 10))
		} else {
			b = appendCanonicalField(b, f.Key, false, f.Str)
		}
	}
	return b
}

// appendCanonicalField appends one field of the canonical encoding:
//
//	uint32be(len(key)) key tag uint32be(len(value)) value
//
// with tag 'n' for an integer (value: its decimal digits) and 's' for a
// string (value: its UTF-8 bytes). This is the only place that writes it.
func appendCanonicalField[K, V text](b []byte, key K, isNum bool, val V) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	if isNum {
		b = append(b, 'n')
	} else {
		b = append(b, 's')
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(val)))
	return append(b, val...)
}

// Digests hashes the canonical encoding once per bank.
func (c Content) Digests(banks []crypto.Hash) []Digest {
	enc := c.Canonical()
	out := make([]Digest, 0, len(banks))
	for _, h := range banks {
		hh := h.New()
		hh.Write(enc)
		out = append(out, Digest{Alg: h, Value: hh.Sum(nil)})
	}
	return out
}

// MarshalJSON writes the content as a flat JSON object in key order.
func (c Content) MarshalJSON() ([]byte, error) {
	return c.appendJSON(nil), nil
}

func (c Content) appendJSON(b []byte) []byte {
	b = append(b, '{')
	for i, f := range c {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, f.Key)
		b = append(b, ':')
		if f.IsNum {
			b = strconv.AppendUint(b, f.Num, 10)
		} else {
			b = AppendJSONString(b, f.Str)
		}
	}
	return append(b, '}')
}

// AppendJSONString appends s as a JSON string, escaping only what JSON
// requires: the quote, the backslash and control characters. s must be
// valid UTF-8 ([NewContent] checks it).
func AppendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Record is one entry of the log: one extend of one PCR.
type Record struct {
	// RecNum is the record's position in its log, counting every record from
	// 0 ([CheckRecNum]). systemd's records have none (HasRecNum false).
	RecNum    uint64
	HasRecNum bool
	PCR       int
	Digests   []Digest
	// ContentType is "rimon", "systemd", or another producer's name.
	ContentType string
	// Content is the parsed content of a rimon record.
	Content Content
	// RawContent is the content as read, for records of other content types
	// than rimon (use [Record.ContentJSON] for any record).
	RawContent json.RawMessage
}

// ContentJSON returns the record's content as JSON.
func (r *Record) ContentJSON() json.RawMessage {
	if r.ContentType == ContentTypeRimon {
		b, _ := r.Content.MarshalJSON()
		return b
	}
	return r.RawContent
}

// Digest returns the record's digest for bank h.
func (r *Record) Digest(h crypto.Hash) ([]byte, bool) {
	for _, d := range r.Digests {
		if d.Alg == h {
			return d.Value, true
		}
	}
	return nil, false
}

// Event returns the typed view of a rimon record's content.
func (r *Record) Event() Event { return EventFromContent(r.Content) }

type wireDigest struct {
	HashAlg string `json:"hashAlg"`
	Digest  string `json:"digest"`
}

// parseWireDigest reads one entry of "digests": exactly the keys hashAlg
// and digest, spelled so, once each, both strings (encoding/json alone
// would take other keys, other cases and repeated keys).
func parseWireDigest(j []byte) (wireDigest, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(j, &m); err != nil {
		return wireDigest{}, fmt.Errorf(`want {"hashAlg":…,"digest":…}: %v`, err)
	}
	if len(m) != 2 || countKeys(j) != 2 || m["hashAlg"] == nil || m["digest"] == nil {
		return wireDigest{}, fmt.Errorf(`want exactly the keys "hashAlg" and "digest", once each, have %s`, j)
	}
	var d wireDigest
	if json.Unmarshal(m["hashAlg"], &d.HashAlg) != nil || json.Unmarshal(m["digest"], &d.Digest) != nil {
		return wireDigest{}, fmt.Errorf(`"hashAlg" and "digest" must be strings, have %s`, j)
	}
	return d, nil
}

// Marshal encodes r as one RFC 7464 element: 0x1E, JSON, line feed.
func (r *Record) Marshal() ([]byte, error) {
	b := make([]byte, 0, 512)
	b = append(b, 0x1e, '{')
	if r.HasRecNum {
		b = append(b, `"recnum":`...)
		b = strconv.AppendUint(b, r.RecNum, 10)
		b = append(b, ',')
	}
	b = append(b, `"pcr":`...)
	b = strconv.AppendInt(b, int64(r.PCR), 10)
	b = append(b, `,"digests":[`...)
	for i, d := range r.Digests {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"hashAlg":`...)
		b = AppendJSONString(b, BankName(d.Alg))
		b = append(b, `,"digest":"`...)
		b = hex.AppendEncode(b, d.Value)
		b = append(b, `"}`...)
	}
	b = append(b, `],"content_type":`...)
	b = AppendJSONString(b, r.ContentType)
	b = append(b, `,"content":`...)
	if r.ContentType == ContentTypeRimon {
		b = r.Content.appendJSON(b)
	} else {
		if !json.Valid(r.RawContent) {
			return nil, errors.New("record content is not valid JSON")
		}
		var c bytes.Buffer
		if err := json.Compact(&c, r.RawContent); err != nil {
			return nil, err
		}
		b = append(b, c.Bytes()...)
	}
	return append(b, '}', '\n'), nil
}

// parseRecord decodes the JSON of one record (without framing).
func parseRecord(j []byte) (Record, error) {
	if r, err := fastParseRecord(j); err == nil {
		return r, nil
	}
	return slowParseRecord(j)
}

// slowParseRecord decodes any well-formed record and explains what is
// wrong with the others.
func slowParseRecord(j []byte) (Record, error) {
	if err := checkStrings(j); err != nil {
		return Record{}, err
	}
	var m map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(j))
	if err := dec.Decode(&m); err != nil {
		return Record{}, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return Record{}, errors.New("invalid JSON: data after the object")
	}
	if m == nil {
		return Record{}, errors.New("invalid JSON: want an object, have null")
	}
	if countKeys(j) != len(m) {
		return Record{}, errors.New("a field name appears twice")
	}
	for k := range m {
		switch k {
		case "recnum", "pcr", "digests", "content_type", "content":
		default:
			return Record{}, fmt.Errorf("unknown field %q", k)
		}
	}
	var r Record
	if v, ok := m["recnum"]; ok {
		n, err := parsePlainUint(v)
		if err != nil {
			return Record{}, fmt.Errorf(`field "recnum": %w`, err)
		}
		r.RecNum, r.HasRecNum = n, true
	}
	v, ok := m["pcr"]
	if !ok {
		return Record{}, errors.New(`field "pcr" is missing`)
	}
	pcr, err := parsePlainUint(v)
	if err != nil {
		return Record{}, fmt.Errorf(`field "pcr": want an integer from 0 to 31 in plain decimal, have %s`, v)
	}
	if pcr > MaxPCR {
		return Record{}, fmt.Errorf(`field "pcr": %d is out of range 0-%d`, pcr, MaxPCR)
	}
	r.PCR = int(pcr)
	var ds []wireDigest
	if v, ok := m["digests"]; ok {
		var raw []json.RawMessage
		if err := json.Unmarshal(v, &raw); err != nil {
			return Record{}, fmt.Errorf(`field "digests": want [{"hashAlg":…,"digest":…}, …]: %v`, err)
		}
		for i, e := range raw {
			d, err := parseWireDigest(e)
			if err != nil {
				return Record{}, fmt.Errorf(`digests[%d]: %w`, i, err)
			}
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 {
		return Record{}, errors.New(`field "digests" is missing or empty`)
	}
	for i, d := range ds {
		h, err := ParseBank(d.HashAlg)
		if err != nil {
			return Record{}, fmt.Errorf(`digests[%d]: %w`, i, err)
		}
		v := make([]byte, h.Size())
		if !decodeLowerHex(v, []byte(d.Digest)) {
			return Record{}, fmt.Errorf(`digests[%d]: %s digest must be %d lowercase hex characters`, i, d.HashAlg, 2*h.Size())
		}
		if _, dup := r.Digest(h); dup {
			return Record{}, fmt.Errorf(`digests[%d]: bank %s appears twice`, i, d.HashAlg)
		}
		r.Digests = append(r.Digests, Digest{Alg: h, Value: v})
	}
	if v, ok := m["content_type"]; ok {
		if err := json.Unmarshal(v, &r.ContentType); err != nil {
			return Record{}, fmt.Errorf(`field "content_type": want a string, have %s`, v)
		}
	}
	if r.ContentType == "" {
		return Record{}, errors.New(`field "content_type" is missing`)
	}
	content, ok := m["content"]
	if !ok {
		return Record{}, errors.New(`field "content" is missing`)
	}
	if r.ContentType != ContentTypeRimon {
		r.RawContent = append(json.RawMessage(nil), content...)
		return r, nil
	}
	c, err := parseContent(content)
	if err != nil {
		return Record{}, fmt.Errorf(`field "content": %w`, err)
	}
	r.Content = c
	return r, nil
}

// parsePlainUint parses a JSON number that is a non-negative integer in
// plain decimal (no sign, fraction, exponent or leading zero) up to 2^64-1.
func parsePlainUint(v json.RawMessage) (uint64, error) {
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != string(v) {
		return 0, fmt.Errorf("want a non-negative integer in plain decimal up to %d, have %s", uint64(math.MaxUint64), v)
	}
	return n, nil
}

// checkStrings refuses a record whose JSON strings are not exactly Unicode
// text ([CheckJSONText]).
func checkStrings(j []byte) error {
	if err := CheckJSONText(j); err != nil {
		return fmt.Errorf("%w of the record", err)
	}
	return nil
}

// CheckJSONText refuses JSON whose strings are not exactly Unicode text:
// invalid UTF-8, or a \u escape of a surrogate that is not part of a
// pair. encoding/json would read either as U+FFFD, so that two different
// documents would read the same (and, for a log, replay the same).
func CheckJSONText(j []byte) error {
	if !utf8.Valid(j) {
		for i := 0; i < len(j); {
			r, n := utf8.DecodeRune(j[i:])
			if r == utf8.RuneError && n <= 1 {
				return fmt.Errorf("invalid UTF-8 at byte %d", i)
			}
			i += n
		}
	}
	inStr := false
	for i := 0; i < len(j); i++ {
		switch c := j[i]; {
		case c == '"':
			inStr = !inStr
		case c == '\\' && inStr:
			if i+1 < len(j) && j[i+1] == 'u' {
				r, ok := hex4At(j, i+2)
				switch {
				case !ok:
				case utf16.IsSurrogate(r) && r < 0xdc00:
					r2, ok := rune(0), false
					if i+7 < len(j) && j[i+6] == '\\' && j[i+7] == 'u' {
						r2, ok = hex4At(j, i+8)
					}
					if !ok || r2 < 0xdc00 || r2 > 0xdfff {
						return fmt.Errorf(`unpaired surrogate \u%04x at byte %d`, r, i)
					}
					i += 6
				case utf16.IsSurrogate(r):
					return fmt.Errorf(`unpaired surrogate \u%04x at byte %d`, r, i)
				}
			}
			i++ // skip the escaped character
		}
	}
	return nil
}

// hex4At reads four hex digits at j[i:].
func hex4At(j []byte, i int) (rune, bool) {
	if i+4 > len(j) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(j[i:i+4]), 16, 32)
	return rune(n), err == nil
}

// parseContent decodes a flat object of strings and non-negative integers.
func parseContent(j json.RawMessage) (Content, error) {
	if len(j) == 0 {
		return nil, errors.New("missing")
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("want a flat JSON object: %w", err)
	}
	if m == nil {
		return nil, errors.New("want a flat JSON object, have null")
	}
	fields := make([]Field, 0, len(m))
	for k, v := range m {
		switch v := v.(type) {
		case string:
			fields = append(fields, Field{Key: k, Str: v})
		case json.Number:
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil || strconv.FormatUint(n, 10) != string(v) {
				return nil, fmt.Errorf("%q: %s is not a non-negative integer in plain decimal", k, v)
			}
			fields = append(fields, Field{Key: k, Num: n, IsNum: true})
		default:
			return nil, fmt.Errorf("%q: only strings and integers are allowed", k)
		}
	}
	c, err := NewContent(fields...)
	if err != nil {
		return nil, err
	}
	if len(c) != countKeys(j) {
		return nil, errors.New("a field name appears twice")
	}
	return c, nil
}

// countKeys counts the top-level keys of a flat object, so that duplicate
// keys (which encoding/json silently merges) are refused.
func countKeys(j []byte) int {
	dec := json.NewDecoder(bytes.NewReader(j))
	n := 0
	if _, err := dec.Token(); err != nil {
		return -1
	}
	for dec.More() {
		if _, err := dec.Token(); err != nil {
			return -1
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return -1
		}
		n++
	}
	return n
}
