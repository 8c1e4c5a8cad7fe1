package eventlog

import (
	"bytes"
	"crypto"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// imageRecord builds a rimon image record as rimon measure --image writes it:
// more fields than a file record, so that a key at a given position is a
// string here where a file record has a number.
func imageRecord(t testing.TB, n uint64, path string) Record {
	t.Helper()
	c, err := Event{Kind: KindImage, Path: path, SHA256: strings.Repeat("7c", 32), Size: 2,
		Reason: ReasonManual, Time: "2026-11-28T13:17:42.076736638Z", BootID: "abf3065c-f883-4a0a-b106-57f5e42c36f9",
		Extra: []Field{
			{Key: "config_digest", Str: "sha256:" + strings.Repeat("7c", 32)},
			{Key: "image_format", Str: "docker-archive"},
		}}.Content()
	if err != nil {
		t.Fatal(err)
	}
	return Record{RecNum: n, HasRecNum: true, PCR: 23, ContentType: ContentTypeRimon, Content: c, Digests: c.Digests(allBanks)}
}

func marshalAll(t testing.TB, recs ...Record) []byte {
	t.Helper()
	var b bytes.Buffer
	for i := range recs {
		m, err := recs[i].Marshal()
		if err != nil {
			t.Fatal(err)
		}
		b.Write(m)
	}
	return b.Bytes()
}

// TestReplayMixedShapes is the log of `rimon measure somefile` followed by
// `rimon measure --image`: the sixth content key is the number "size" in
// the first record and the string "reason" in the second. The streaming
// replay once kept the number tag across records and refused the image record.
func TestReplayMixedShapes(t *testing.T) {
	log := marshalAll(t, mkRecord(t, 0, "/tmp/somefile"), imageRecord(t, 1, "/tmp/web.tar"), mkRecord(t, 2, "/tmp/other"))
	checkSequenceAgrees(t, log)
	if _, n, err := ReplayReader(bytes.NewReader(log), allBanks); err != nil || n != 3 {
		t.Fatalf("ReplayReader(file, image, file) = %d records, %v; want 3, nil", n, err)
	}
}

// checkSequenceAgrees parses every record of log with the allocation-free
// parser (one rawRecord reused, as replay does), the fast parser and the
// general parser, and requires the same answers record by record; then it
// replays the log with the streaming replay and with Replay over ReadAll,
// and requires the same verdict and the same PCR values.
func checkSequenceAgrees(t testing.TB, log []byte) {
	t.Helper()
	var raw rawRecord
	lines := bytes.SplitAfter(log, []byte("\n"))
	for i, line := range lines {
		if len(line) < 2 || line[0] != 0x1e || line[len(line)-1] != '\n' {
			break
		}
		body := line[1 : len(line)-1]
		gen, gerr := slowParseRecord(body)
		if fast, ferr := fastParseRecord(body); ferr == nil {
			if gerr != nil {
				t.Fatalf("record %d: fast parser accepted %q, general parser refused it: %v", i, body, gerr)
			}
			if diff := cmp.Diff(gen, fast); diff != "" {
				t.Fatalf("record %d %q: parsers disagree (-general +fast):\n%s", i, body, diff)
			}
		}
		if parseRaw(body, &raw) {
			if gerr != nil {
				t.Fatalf("record %d: raw parser accepted %q, general parser refused it: %v", i, body, gerr)
			}
			compareRaw(t, body, &raw, &gen)
		}
	}

	recs, rerr := ReadAll(bytes.NewReader(log))
	var want *State
	var werr error
	if rerr == nil || errors.Is(rerr, ErrTorn) {
		want, werr = Replay(recs, allBanks)
	}
	got, n, err := ReplayReader(bytes.NewReader(log), allBanks)
	switch {
	case rerr != nil && !errors.Is(rerr, ErrTorn):
		if err == nil {
			t.Fatalf("ReadAll refused the log (%v), ReplayReader accepted %d records", rerr, n)
		}
		return
	case (werr == nil) != (err == nil || errors.Is(err, ErrTorn)):
		t.Fatalf("Replay = %v, ReplayReader = %v on\n%q", werr, err, log)
	case werr != nil:
		var a, b *ReplayError
		if !errors.As(werr, &a) || !errors.As(err, &b) || a.Index != b.Index {
			t.Fatalf("Replay failed with %v, ReplayReader with %v", werr, err)
		}
		return
	}
	if n != len(recs) {
		t.Fatalf("ReplayReader replayed %d records, ReadAll read %d", n, len(recs))
	}
	for _, p := range want.PCRs() {
		for _, h := range allBanks {
			if !bytes.Equal(got.Value(p, h), want.Value(p, h)) {
				t.Fatalf("PCR %d %s: ReplayReader %x, Replay %x", p, BankName(h), got.Value(p, h), want.Value(p, h))
			}
		}
	}
}

func compareRaw(t testing.TB, body []byte, raw *rawRecord, rec *Record) {
	t.Helper()
	if rec.PCR != raw.pcr || rec.HasRecNum != raw.hasRecnum || rec.RecNum != raw.recnum {
		t.Fatalf("%q: pcr/recnum %d/%v/%d, raw %d/%v/%d", body, rec.PCR, rec.HasRecNum, rec.RecNum, raw.pcr, raw.hasRecnum, raw.recnum)
	}
	if len(rec.Digests) != raw.ndig {
		t.Fatalf("%q: %d digests, raw %d", body, len(rec.Digests), raw.ndig)
	}
	for _, d := range rec.Digests {
		if v, ok := raw.digest(d.Alg); !ok || !bytes.Equal(v, d.Value) {
			t.Fatalf("%q: %s digest differs", body, BankName(d.Alg))
		}
	}
	if got, want := raw.appendCanonical(nil), rec.Content.Canonical(); !bytes.Equal(got, want) {
		t.Fatalf("%q: canonical encodings differ:\n raw %q\n gen %q", body, got, want)
	}
	for _, f := range rec.Content {
		v := View{raw: raw}
		if !f.IsNum && v.Str(f.Key) != f.Str {
			t.Fatalf("%q: View.Str(%q) = %q, want %q", body, f.Key, v.Str(f.Key), f.Str)
		}
	}
}

// seqGen turns fuzz bytes into a log: a sequence of rimon and systemd
// records of varied kinds and shapes, whose fields change type, appear and
// disappear from record to record, with strings that need escapes, and
// with now and then a wrong digest or record number.
type seqGen struct {
	b []byte
	i int
}

func (g *seqGen) next() byte {
	if g.i >= len(g.b) {
		return 0
	}
	c := g.b[g.i]
	g.i++
	return c
}

var (
	seqKeys = []string{"a", "boot_id", "cause", "config_digest", "error", "image_format", "kind", "manifest_digest",
		"path", "path_escaped", "reason", "sha256", "size", "time", "zz_extra"}
	seqStrings = []string{"", "file", "image", "unmeasured", "/usr/bin/a", "caf\u00e9 \u65e5\u672c", "a\nb\t\"q\"\\", "x\u2028y",
		"\x01\x1f", "%FF%25", "sha256:" + strings.Repeat("ab", 32), "\U0001F600", "deleted", "launch:a.service"}
	seqNums  = []uint64{0, 1, 6, 1 << 32, 1<<64 - 1}
	seqBanks = [][]crypto.Hash{allBanks, {crypto.SHA256}, {crypto.SHA1, crypto.SHA256}, {crypto.SHA512, crypto.SHA1}}
)

// log builds the log the fuzz bytes describe.
func (g *seqGen) log(t testing.TB) []byte {
	var out bytes.Buffer
	n := int(g.next()%8) + 1
	for i := 0; i < n; i++ {
		ctl := g.next()
		rec := Record{PCR: 23, RecNum: uint64(i), HasRecNum: true, ContentType: ContentTypeRimon}
		if ctl&0x40 != 0 {
			rec.PCR = int(g.next() % 24)
		}
		banks := seqBanks[int(ctl>>4)%len(seqBanks)]
		if ctl&0x07 == 7 {
			// A systemd record: no recnum, the digest of its string.
			s := seqStrings[int(g.next())%len(seqStrings)]
			rec.HasRecNum, rec.RecNum, rec.ContentType = false, 0, ContentTypeSystemd
			rec.RawContent = AppendJSONString([]byte(`{"string":`), s)
			rec.RawContent = append(rec.RawContent, `,"bootId":"d2b9a1c4e8f04f3aa1b2c3d4e5f60718","timestamp":12345,"eventType":"phase"}`...)
			for _, h := range banks {
				hh := h.New()
				hh.Write([]byte(s))
				rec.Digests = append(rec.Digests, Digest{Alg: h, Value: hh.Sum(nil)})
			}
		} else {
			mask := uint16(g.next())<<8 | uint16(g.next())
			types := uint16(g.next())<<8 | uint16(g.next())
			var fields []Field
			for k, key := range seqKeys {
				if mask&(1<<k) == 0 {
					continue
				}
				if types&(1<<k) != 0 {
					fields = append(fields, Field{Key: key, Num: seqNums[int(g.next())%len(seqNums)], IsNum: true})
				} else {
					fields = append(fields, Field{Key: key, Str: seqStrings[int(g.next())%len(seqStrings)]})
				}
			}
			c, err := NewContent(fields...)
			if err != nil {
				t.Fatal(err)
			}
			rec.Content, rec.Digests = c, c.Digests(banks)
		}
		if ctl&0x08 != 0 && len(rec.Digests) > 0 {
			rec.Digests[0].Value[0] ^= 1 // an edited record
		}
		if ctl&0x80 != 0 && g.next()&1 != 0 {
			rec.RecNum++ // out of sequence
		}
		b, err := rec.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		// Spell the same record otherwise now and then: escaped solidus, escaped
		// letters, spaces, content_type after content.
		switch g.next() % 5 {
		case 4:
			ct := AppendJSONString([]byte(`,"content_type":`), rec.ContentType)
			b = bytes.Replace(b, ct, nil, 1)
			b = append(append(b[:len(b)-2], ct...), '}', '\n')
		case 1:
			b = bytes.ReplaceAll(b, []byte("/"), []byte(`\/`))
		case 2:
			b = bytes.ReplaceAll(b, []byte(`"file"`), []byte(`"\u0066ile"`))
		case 3:
			b = bytes.Replace(b, []byte(`{"`), []byte(`{ "`), -1)
		}
		out.Write(b)
	}
	return out.Bytes()
}

// FuzzReplaySequence compares, over whole logs, the allocation-free parser
// (whose buffers live from one record to the next), the fast parser and the
// general parser record by record, and the streaming replay with Replay.
// The fuzz bytes describe a sequence of records (seqGen); the same bytes are
// also read as a log as they are.
func FuzzReplaySequence(f *testing.F) {
	// file then image: the regression of a number tag kept across records.
	f.Add([]byte{3, 0x00, 0xff, 0xff, 0x10, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0, 0x00, 0xff, 0xff, 0x00, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0})
	f.Add([]byte{4, 0x07, 1, 0x00, 0x2a, 0x55, 0x2a, 0x55, 9, 9, 9, 9, 9, 9, 9, 0x47, 5, 6, 2, 0x88, 0x55, 0xaa, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0x31, 1, 2, 3})
	f.Add(marshalAll(f, mkRecord(f, 0, "/a"), imageRecord(f, 1, "/b")))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &seqGen{b: data}
		checkSequenceAgrees(t, g.log(t))
		checkSequenceAgrees(t, data)
	})
}

func TestSeqGenCoversShapes(t *testing.T) {
	// The generator must produce the shapes the fuzz target is meant to mix.
	var all strings.Builder
	for _, seed := range [][]byte{
		{1, 0x07, 3},
		{1, 0x00, 0xff, 0xff, 0x10, 0x00},
		{1, 0x00, 0xff, 0xff, 0x00, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0, 1},
		{1, 0x00, 0x00, 0x01, 0x00, 0x00, 0, 4},
	} {
		all.Write((&seqGen{b: seed}).log(t))
	}
	for _, want := range []string{`"content_type":"systemd"`, `"content_type":"rimon"`, `"size":0`, `"size":"`, `\/`, `},"content_type":"rimon"}`} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("generated logs lack %s:\n%s", want, all.String())
		}
	}
}
