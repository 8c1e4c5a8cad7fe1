package eventlog

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const validJSON = `{"recnum":0,"pcr":23,"digests":[{"hashAlg":"sha256","digest":"` + zeros64 + `"}],"content_type":"rimon","content":{"kind":"file","path":"/a","size":1}}`
const zeros64 = "0000000000000000000000000000000000000000000000000000000000000000"

func TestReaderRejects(t *testing.T) {
	for _, tc := range []struct {
		name, log, want string
	}{
		{"missing_separator", validJSON + "\n", "record separator"},
		{"not_json", "\x1e{nope\n", "invalid JSON"},
		{"trailing_data", "\x1e" + validJSON + " {}\n", "data after the object"},
		{"missing_pcr", "\x1e" + strings.Replace(validJSON, `"pcr":23,`, "", 1) + "\n", `"pcr" is missing`},
		{"pcr_out_of_range", "\x1e" + strings.Replace(validJSON, `"pcr":23`, `"pcr":99`, 1) + "\n", "out of range"},
		{"negative_pcr", "\x1e" + strings.Replace(validJSON, `"pcr":23`, `"pcr":-1`, 1) + "\n", "from 0 to 31"},
		{"unknown_bank", "\x1e" + strings.Replace(validJSON, `"sha256"`, `"sm3_256"`, 1) + "\n", "unknown PCR bank"},
		{"short_digest", "\x1e" + strings.Replace(validJSON, zeros64, "00", 1) + "\n", "must be 64 lowercase hex"},
		{"non_hex_digest", "\x1e" + strings.Replace(validJSON, zeros64, strings.Repeat("zz", 32), 1) + "\n", "must be 64 lowercase hex"},
		{"no_digests", "\x1e" + `{"pcr":23,"digests":[],"content_type":"rimon","content":{}}` + "\n", `"digests" is missing`},
		{"duplicate_bank", "\x1e" + strings.Replace(validJSON, `}],`, `},{"hashAlg":"sha256","digest":"`+zeros64+`"}],`, 1) + "\n", "appears twice"},
		{"missing_content_type", "\x1e" + strings.Replace(validJSON, `"content_type":"rimon",`, "", 1) + "\n", `"content_type" is missing`},
		{"nested_content", "\x1e" + strings.Replace(validJSON, `"size":1`, `"size":{"a":1}`, 1) + "\n", "only strings and integers"},
		{"float_size", "\x1e" + strings.Replace(validJSON, `"size":1`, `"size":1.5`, 1) + "\n", "non-negative integer"},
		{"negative_size", "\x1e" + strings.Replace(validJSON, `"size":1`, `"size":-1`, 1) + "\n", "non-negative integer"},
		{"exponent_size", "\x1e" + strings.Replace(validJSON, `"size":1`, `"size":1e3`, 1) + "\n", "non-negative integer"},
		{"huge_size", "\x1e" + strings.Replace(validJSON, `"size":1`, `"size":18446744073709551616`, 1) + "\n", "non-negative integer"},
		{"duplicate_key", "\x1e" + strings.Replace(validJSON, `"size":1`, `"size":1,"size":2`, 1) + "\n", "appears twice"},
		{"bad_key", "\x1e" + strings.Replace(validJSON, `"size":1`, `"Size":1`, 1) + "\n", "only a-z"},
		{"null_content", "\x1e" + strings.Replace(validJSON, `{"kind":"file","path":"/a","size":1}`, `null`, 1) + "\n", "null"},
		{"oversize", "\x1e" + strings.Repeat("x", MaxRecordSize+1) + "\n", "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := ReadAll(strings.NewReader(tc.log))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadAll = %d records, %v; want error containing %q", len(recs), err, tc.want)
			}
			var re *RecordError
			if !errors.As(err, &re) || re.Index != 0 {
				t.Errorf("error %v is not a *RecordError for record 0", err)
			}
		})
	}
}

func TestReaderNamesTheBadRecord(t *testing.T) {
	log := "\x1e" + validJSON + "\n" + "\x1e" + validJSON + "\n" + "\x1e{broken\n"
	_, err := ReadAll(strings.NewReader(log))
	var re *RecordError
	if !errors.As(err, &re) {
		t.Fatalf("ReadAll error = %v, want *RecordError", err)
	}
	if want := int64(2 * (len(validJSON) + 2)); re.Index != 2 || re.Offset != want {
		t.Errorf("RecordError = record %d at byte %d, want record 2 at byte %d", re.Index, re.Offset, want)
	}
}

func TestReaderTornTail(t *testing.T) {
	full := "\x1e" + validJSON + "\n"
	for cut := 1; cut < len(full); cut += 7 {
		log := full + full[:cut]
		rd := NewReader(strings.NewReader(log), 0)
		if _, err := rd.Next(); err != nil {
			t.Fatalf("cut %d: first record: %v", cut, err)
		}
		_, err := rd.Next()
		if !errors.Is(err, ErrTorn) {
			t.Fatalf("cut %d: Next = %v, want ErrTorn", cut, err)
		}
		if rd.Offset() != int64(len(full)) {
			t.Errorf("cut %d: Offset = %d, want %d", cut, rd.Offset(), len(full))
		}
	}
}

func TestReaderAcceptsSystemd(t *testing.T) {
	// As systemd-pcrextend writes it: no recnum, digests of the string.
	rec := Record{PCR: 11, ContentType: ContentTypeSystemd, RawContent: []byte(`{"string":"enter-initrd","eventType":"phase"}`)}
	for _, h := range allBanks {
		hh := h.New()
		hh.Write([]byte("enter-initrd"))
		rec.Digests = append(rec.Digests, Digest{Alg: h, Value: hh.Sum(nil)})
	}
	b, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ReadAll(bytes.NewReader(b))
	if err != nil || len(recs) != 1 {
		t.Fatalf("ReadAll = %d, %v", len(recs), err)
	}
	if err := Verify(&recs[0]); err != nil {
		t.Errorf("Verify(systemd record) = %v", err)
	}
	recs[0].RawContent = []byte(`{"string":"leave-initrd","eventType":"phase"}`)
	if err := Verify(&recs[0]); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("Verify(edited systemd record) = %v, want ErrDigestMismatch", err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	var want []Record
	for i := 0; i < 5; i++ {
		r := mkRecord(t, uint64(i), "/usr/bin/a\nb \"c\" ✓")
		want = append(want, r)
		b, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
	}
	got, err := ReadAll(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".RawContent" }, cmp.Ignore())); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

// FuzzReader checks that the reader never panics and that every record it
// accepts survives Marshal and a second read unchanged.
func FuzzReader(f *testing.F) {
	f.Add([]byte("\x1e" + validJSON + "\n"))
	f.Add([]byte("\x1e" + validJSON + "\n\x1e" + validJSON))
	f.Add([]byte("\x1e{\"pcr\":11,\"digests\":[{\"hashAlg\":\"sha1\",\"digest\":\"0000000000000000000000000000000000000000\"}],\"content_type\":\"systemd\",\"content\":{\"string\":\"x\"}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := NewReader(bytes.NewReader(data), 0)
		for {
			rec, err := rd.Next()
			if err != nil {
				if err != io.EOF && !errors.As(err, new(*RecordError)) {
					t.Fatalf("Next returned %T %v, want io.EOF or *RecordError", err, err)
				}
				return
			}
			b, err := rec.Marshal()
			if err != nil {
				t.Fatalf("Marshal of an accepted record: %v", err)
			}
			again, err := ReadAll(bytes.NewReader(b))
			if err != nil || len(again) != 1 {
				t.Fatalf("re-read of %q: %d records, %v", b, len(again), err)
			}
			if rec.ContentType == ContentTypeRimon && !bytes.Equal(again[0].Content.Canonical(), rec.Content.Canonical()) {
				t.Fatalf("canonical encoding changed across a round trip: %q", b)
			}
			if (Verify(&rec) == nil) != (Verify(&again[0]) == nil) {
				t.Fatalf("verification changed across a round trip: %q", b)
			}
		}
	})
}

func seedRecords(f *testing.F) {
	f.Add([]byte(validJSON))
	f.Add([]byte(`{"pcr":11,"digests":[{"hashAlg":"sha1","digest":"0000000000000000000000000000000000000000"}],"content_type":"systemd","content":{"string":"x"}}`))
	f.Add([]byte(`{"recnum":3,"pcr":23,"digests":[{"hashAlg":"sha256","digest":"` + zeros64 + `"}],"content_type":"rimon","content":{"a":"\u00e9\n","b":"caf\u00e9 \\\" x","size":18446744073709551615}}`))
	f.Add([]byte(`{"content":{"kind":"file"},"content_type":"rimon","digests":[{"digest":"` + zeros64 + `","hashAlg":"sha256"}],"pcr":0}`))
}

// FuzzFastParse checks that the fast parser accepts only what the general
// one accepts, with the same result.
func FuzzFastParse(f *testing.F) {
	seedRecords(f)
	f.Fuzz(func(t *testing.T, j []byte) {
		fast, err := fastParseRecord(j)
		if err != nil {
			return
		}
		slow, err := slowParseRecord(j)
		if err != nil {
			t.Fatalf("fast parser accepted %q, general parser refused it: %v", j, err)
		}
		if diff := cmp.Diff(slow, fast); diff != "" {
			t.Fatalf("parsers disagree on %q (-general +fast):\n%s", j, diff)
		}
	})
}

// FuzzRawParse checks that the allocation-free parser used by replay agrees
// with the general parser on PCR, record number, digests and canonical encoding.
func FuzzRawParse(f *testing.F) {
	seedRecords(f)
	f.Fuzz(func(t *testing.T, j []byte) {
		var raw rawRecord
		if !parseRaw(j, &raw) {
			return
		}
		rec, err := slowParseRecord(j)
		if err != nil {
			t.Fatalf("raw parser accepted %q, general parser refused it: %v", j, err)
		}
		if rec.PCR != raw.pcr || rec.HasRecNum != raw.hasRecnum || rec.RecNum != raw.recnum {
			t.Fatalf("%q: pcr/recnum %d/%v/%d vs raw %d/%v/%d", j, rec.PCR, rec.HasRecNum, rec.RecNum, raw.pcr, raw.hasRecnum, raw.recnum)
		}
		if len(rec.Digests) != raw.ndig {
			t.Fatalf("%q: %d digests vs raw %d", j, len(rec.Digests), raw.ndig)
		}
		for _, d := range rec.Digests {
			if v, ok := raw.digest(d.Alg); !ok || !bytes.Equal(v, d.Value) {
				t.Fatalf("%q: %v digest differs", j, d.Alg)
			}
		}
		if got, want := raw.appendCanonical(nil), rec.Content.Canonical(); !bytes.Equal(got, want) {
			t.Fatalf("%q: canonical encodings differ:\n raw %q\n gen %q", j, got, want)
		}
	})
}
