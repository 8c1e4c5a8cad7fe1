package eventlog

import (
	"bytes"
	"crypto"
	"crypto/hmac"
	"errors"
	"strings"
	"testing"
)

// sdRecord is a record as systemd writes it to tpm2-measure.log
// (src/shared/tpm2-util.c, tpm2_userspace_log): no recnum, the PCR, one
// digest per bank of the measured string, and a content of "string",
// "bootId", "timestamp" and "eventType".
func sdRecord(pcr int, str, eventType string, banks []crypto.Hash) Record {
	rec := Record{PCR: pcr, ContentType: ContentTypeSystemd}
	rec.RawContent = AppendJSONString([]byte(`{"string":`), str)
	rec.RawContent = append(rec.RawContent, `,"bootId":"f2a3b4c5d6e7489a9b0c1d2e3f405162","timestamp":4182736,"eventType":`...)
	rec.RawContent = append(AppendJSONString(rec.RawContent, eventType), '}')
	for _, h := range banks {
		hh := h.New()
		hh.Write([]byte(str))
		rec.Digests = append(rec.Digests, Digest{Alg: h, Value: hh.Sum(nil)})
	}
	return rec
}

// volumeKeyRecord is systemd-cryptsetup's record of a LUKS volume key: its
// digest is HMAC(volume key, string), which nobody without the key can recompute.
func volumeKeyRecord(banks []crypto.Hash) Record {
	const s = "cryptsetup:root:1e023a55-60f9-4b6b-9b80-67438dc5f065"
	rec := sdRecord(15, s, "volume-key", nil)
	for _, h := range banks {
		m := hmac.New(h.New, []byte("the LUKS volume key, secret"))
		m.Write([]byte(s))
		rec.Digests = append(rec.Digests, Digest{Alg: h, Value: m.Sum(nil)})
	}
	return rec
}

// TestReaderRefusesNonCanonicalText: strings that encoding/json would read
// as U+FFFD, digests in upper case, integers with a sign, and spaces that
// are not JSON's. Each is accepted by a lax reader and gives the same
// record, and so the same PCR, as other bytes.
func TestReaderRefusesNonCanonicalText(t *testing.T) {
	rec := func(from, to string) string {
		if !strings.Contains(validJSON, from) {
			t.Fatalf("%q not in %s", from, validJSON)
		}
		return "\x1e" + strings.Replace(validJSON, from, to, 1) + "\n"
	}
	sd := func(s string) string {
		return "\x1e" + `{"pcr":11,"digests":[{"hashAlg":"sha256","digest":"` + zeros64 + `"}],"content_type":"systemd","content":{"string":"` + s + `","eventType":"phase"}}` + "\n"
	}
	for _, tc := range []struct{ name, log, want string }{
		{"invalid_utf8_path", rec(`"/a"`, "\"/a\xff\""), "invalid UTF-8"},
		{"invalid_utf8_key", rec(`"kind"`, "\"ki\xc3nd\""), "invalid UTF-8"},
		{"overlong_utf8", rec(`"/a"`, "\"/\xc0\xaf\""), "invalid UTF-8"},
		{"utf8_surrogate_bytes", rec(`"/a"`, "\"/\xed\xb2\x80\""), "invalid UTF-8"},
		{"lone_low_surrogate", rec(`"/a"`, `"/a\udc80"`), "unpaired surrogate"},
		{"lone_high_surrogate", rec(`"/a"`, `"/a\ud800x"`), "unpaired surrogate"},
		{"high_high", rec(`"/a"`, `"\ud83d\ud83d"`), "unpaired surrogate"},
		{"high_at_end", rec(`"/a"`, `"/a\uD800"`), "unpaired surrogate"},
		{"surrogate_in_systemd_string", sd(`enter-initrd\udc80`), "unpaired surrogate"},
		{"invalid_utf8_in_systemd_string", sd("enter-initrd\xfe"), "invalid UTF-8"},
		{"uppercase_digest", rec(zeros64, strings.Repeat("AB", 32)), "lowercase hex"},
		// Digest entries: exactly hashAlg and digest, spelled so, once each.
		{"digest_entry_extra_key", rec(`"hashAlg":"sha256"`, `"extra":1,"hashAlg":"sha256"`), `"hashAlg" and "digest"`},
		{"digest_entry_key_case", rec(`"hashAlg":"sha256"`, `"HASHALG":"sha256"`), `"hashAlg" and "digest"`},
		{"digest_entry_repeated_key", rec(`"hashAlg":"sha256"`, `"hashAlg":"sha1","hashAlg":"sha256"`), `"hashAlg" and "digest"`},
		{"mixed_case_digest", rec(zeros64, strings.Repeat("ab", 31)+"aB"), "lowercase hex"},
		{"negative_zero_pcr", rec(`"pcr":23`, `"pcr":-0`), `"pcr"`},
		{"fraction_pcr", rec(`"pcr":23`, `"pcr":23.0`), `"pcr"`},
		{"exponent_recnum", rec(`"recnum":0`, `"recnum":0e0`), `"recnum"`},
		{"negative_zero_recnum", rec(`"recnum":0`, `"recnum":-0`), `"recnum"`},
		{"recnum_too_large", rec(`"recnum":0`, `"recnum":18446744073709551616`), `"recnum"`},
		{"no_break_space_after_object", "\x1e" + validJSON + "\u00a0\n", "invalid JSON"},
		{"trailing_bytes_without_separator", "\x1e" + validJSON + "\n" + `{"pcr":23}`, "do not start with the record separator"},
		{"empty_line", "\x1e" + validJSON + "\n\n", "record separator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadAll(strings.NewReader(tc.log))
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrTorn) {
				t.Fatalf("ReadAll = %v; want an error containing %q", err, tc.want)
			}
			if _, _, err := ReplayReader(strings.NewReader(tc.log), allBanks); err == nil || errors.Is(err, ErrTorn) {
				t.Fatalf("ReplayReader = %v; want an error", err)
			}
		})
	}
}

// TestNoTwoLogsReplayAlike: a log with a lone surrogate and the log with
// U+FFFD in its place once both replayed to the same PCR value.
func TestNoTwoLogsReplayAlike(t *testing.T) {
	c, err := NewContent(Field{Key: "kind", Str: "file"}, Field{Key: "path", Str: "/a\ufffd"}, Field{Key: "reason", Str: "manual"})
	if err != nil {
		t.Fatal(err)
	}
	r := Record{HasRecNum: true, PCR: 23, ContentType: ContentTypeRimon, Content: c, Digests: c.Digests(allBanks)}
	good, _ := r.Marshal()
	bad := bytes.Replace(good, []byte("\ufffd"), []byte(`\udc80`), 1)
	if bytes.Equal(good, bad) {
		t.Fatal("edit did not apply")
	}
	if _, _, err := ReplayReader(bytes.NewReader(good), allBanks); err != nil {
		t.Fatalf("the U+FFFD log: %v", err)
	}
	if st, _, err := ReplayReader(bytes.NewReader(bad), allBanks); err == nil {
		t.Errorf("a log with \\udc80 replayed (to %x), as the log with U+FFFD does", st.Value(23, crypto.SHA256))
	}
}

// TestRecNumRules: recnum is the record's position in the log, counting
// every record (systemd's included) from 0, and every rimon record has one.
// Each reader that replays enforces it: Replay, ReplayReader, and
// logfile.Reconcile (tested there).
func TestRecNumRules(t *testing.T) {
	sd := sdRecord(11, "enter-initrd", "phase", allBanks)
	r := func(n uint64) Record { return mkRecord(t, n, "/bin/x") }
	noNum := r(0)
	noNum.HasRecNum = false
	sdNum := sd
	sdNum.HasRecNum, sdNum.RecNum = true, 1
	for _, tc := range []struct {
		name string
		recs []Record
		bad  int // index of the refused record, -1 for none
	}{
		{"rimon_only", []Record{r(0), r(1), r(2)}, -1},
		{"after_systemd", []Record{sd, r(1), sd, r(3)}, -1},
		{"systemd_with_its_position", []Record{r(0), sdNum}, -1},
		{"rimon_without_recnum", []Record{r(0), noNum}, 1},
		{"first_rimon_is_1", []Record{r(1), r(2)}, 0},
		{"zero_after_systemd", []Record{sd, sd, r(0)}, 2},
		{"counting_rimon_only", []Record{sd, sd, r(0), r(1)}, 2},
		{"systemd_with_wrong_number", []Record{sdNum}, 0},
		{"gap", []Record{r(0), r(2)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := marshalAll(t, tc.recs...)
			check := func(who string, err error) {
				t.Helper()
				var re *ReplayError
				switch {
				case tc.bad < 0 && err != nil:
					t.Errorf("%s = %v, want success", who, err)
				case tc.bad >= 0 && (!errors.As(err, &re) || re.Index != tc.bad || !errors.Is(err, ErrSequence)):
					t.Errorf("%s = %v, want ErrSequence at record %d", who, err, tc.bad)
				}
			}
			recs, err := ReadAll(bytes.NewReader(log))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Replay(recs, allBanks)
			check("Replay", err)
			_, _, err = ReplayReader(bytes.NewReader(log), allBanks)
			check("ReplayReader", err)
		})
	}
}

// extendModel extends each record's digests as they are, bank by bank, as
// TPM2_PCR_Extend does: new = H(old || digest).
func extendModel(recs []Record, banks []crypto.Hash) map[PCRKey][]byte {
	vals := map[PCRKey][]byte{}
	for i := range recs {
		for _, h := range banks {
			d, ok := recs[i].Digest(h)
			if !ok {
				continue
			}
			k := PCRKey{recs[i].PCR, h}
			cur, ok := vals[k]
			if !ok {
				cur = InitialValue(k.PCR, h)
			}
			hh := h.New()
			hh.Write(cur)
			hh.Write(d)
			vals[k] = hh.Sum(nil)
		}
	}
	return vals
}

// TestNotRecomputableDigests: a systemd volume-key record (an HMAC) and a
// record of an unknown content type are extended as they are, reported as
// not recomputable, and do not stop the replay of the records after them.
func TestNotRecomputableDigests(t *testing.T) {
	vk := volumeKeyRecord(allBanks)
	other := Record{PCR: 16, ContentType: "ima-ng", RawContent: []byte(`{"path":"/bin/sh"}`),
		Digests: []Digest{{Alg: crypto.SHA256, Value: bytes.Repeat([]byte{7}, 32)}}}
	noString := Record{PCR: 9, ContentType: ContentTypeSystemd, RawContent: []byte(`{"bootId":"f2a3b4c5d6e7489a9b0c1d2e3f405162","timestamp":1,"eventType":"nvpcr-init"}`),
		Digests: []Digest{{Alg: crypto.SHA256, Value: bytes.Repeat([]byte{9}, 32)}}}
	log := marshalAll(t, sdRecord(11, "enter-initrd", "phase", allBanks), vk, other, noString, mkRecord(t, 4, "/bin/a"))
	for i, r := range []Record{vk, other, noString} {
		if err := Verify(&r); !errors.Is(err, ErrNotRecomputable) {
			t.Errorf("Verify(record %d) = %v, want ErrNotRecomputable", i, err)
		}
	}
	st, n, err := ReplayReader(bytes.NewReader(log), allBanks)
	if err != nil || n != 5 {
		t.Fatalf("ReplayReader = %d, %v; want 5 records", n, err)
	}
	recs, _ := ReadAll(bytes.NewReader(log))
	extended := extendModel(recs, allBanks)
	for _, p := range []int{9, 11, 15, 16, 23} {
		for _, h := range allBanks {
			got := extended[PCRKey{p, h}]
			if got == nil {
				got = InitialValue(p, h)
			}
			if !bytes.Equal(st.Value(p, h), got) {
				t.Errorf("PCR %d %s: replay %x, extended %x", p, BankName(h), st.Value(p, h), got)
			}
		}
	}
	// An edited systemd record whose digest can be recomputed is still refused.
	edited := sdRecord(11, "enter-initrd", "phase", allBanks)
	edited.RawContent = bytes.Replace(edited.RawContent, []byte("enter"), []byte("leave"), 1)
	if _, err := Replay([]Record{edited}, allBanks); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("Replay(edited phase record) = %v, want ErrDigestMismatch", err)
	}
}

// TestRecordSizeLimit: the 1 MiB limit counts a record's whole element,
// from its 0x1E to its line feed included.
func TestRecordSizeLimit(t *testing.T) {
	sized := func(n int) []byte {
		r := mkRecord(t, 0, "/x")
		b, _ := r.Marshal()
		pad := n - len(b) - len(`,"zz":""`)
		c, err := NewContent(append(r.Content, Field{Key: "zz", Str: strings.Repeat("p", pad)})...)
		if err != nil {
			t.Fatal(err)
		}
		r.Content, r.Digests = c, c.Digests(allBanks)
		b, _ = r.Marshal()
		if len(b) != n {
			t.Fatalf("built a record of %d bytes, want %d", len(b), n)
		}
		return b
	}
	if _, _, err := ReplayReader(bytes.NewReader(sized(MaxRecordSize)), allBanks); err != nil {
		t.Errorf("a record of exactly %d bytes: %v", MaxRecordSize, err)
	}
	_, err := ReadAll(bytes.NewReader(sized(MaxRecordSize + 1)))
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("a record of %d bytes: %v, want refused", MaxRecordSize+1, err)
	}
}

func TestUnknownTopLevelField(t *testing.T) {
	log := "\x1e" + strings.Replace(validJSON, `"pcr":23,`, `"pcr":23,"event_type":"x",`, 1) + "\n"
	if _, err := ReadAll(strings.NewReader(log)); err == nil || !strings.Contains(err.Error(), `unknown field "event_type"`) {
		t.Errorf("ReadAll = %v, want the unknown field refused", err)
	}
}
