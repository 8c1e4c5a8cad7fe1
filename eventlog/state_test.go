package eventlog

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
)

// logBytes is a log file holding recs.
func logBytes(t *testing.T, recs []Record) []byte {
	var b []byte
	for i := range recs {
		m, err := recs[i].Marshal()
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, m...)
	}
	return b
}

// chain computes the prefix digest the way docs say, from the file's lines.
func chain(log []byte) [32]byte {
	var d [32]byte
	for _, line := range bytes.SplitAfter(log, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		d = sha256.Sum256(append(d[:], line...))
	}
	return d
}

func checkpointOf(t *testing.T, from *Checkpoint, log []byte) *Checkpoint {
	t.Helper()
	p := from.Resume()
	if _, err := p.Visit(bytes.NewReader(log), nil); err != nil {
		t.Fatal(err)
	}
	return p.Checkpoint()
}

// TestCheckpointResume: a replay saved after k records, marshalled,
// parsed and resumed with the rest, ends where a replay of the whole log
// does, for every k.
func TestCheckpointResume(t *testing.T) {
	recs := logOf(t, 6)
	log := logBytes(t, recs)
	lines := bytes.SplitAfter(log, []byte("\n"))
	full := checkpointOf(t, NewCheckpoint(allBanks), log)
	want, err := Replay(recs, allBanks)
	if err != nil {
		t.Fatal(err)
	}
	if full.Records != 6 || full.Prefix != chain(log) {
		t.Fatalf("full checkpoint: %d records, prefix %x; want 6, %x", full.Records, full.Prefix, chain(log))
	}
	for _, b := range allBanks {
		if !bytes.Equal(full.Value(23, b), want.Value(23, b)) {
			t.Errorf("%s: checkpoint %x, Replay %x", BankName(b), full.Value(23, b), want.Value(23, b))
		}
	}
	for k := 0; k <= 6; k++ {
		head := bytes.Join(lines[:k], nil)
		cp := checkpointOf(t, NewCheckpoint(allBanks), head)
		saved, err := cp.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseCheckpoint(saved)
		if err != nil {
			t.Fatalf("k=%d: %v\n%s", k, err, saved)
		}
		if !back.Equal(cp) || back.Prefix != chain(head) {
			t.Fatalf("k=%d: round trip changed the checkpoint:\n%s", k, saved)
		}
		end := checkpointOf(t, back, log[len(head):])
		if !end.Equal(full) {
			t.Errorf("k=%d: resumed replay differs from the full one", k)
		}
	}
}

// TestCheckpointPrefixDigest: a record's time is not bound by its PCR
// digest, so two logs that differ only there replay to the same PCRs; the
// prefix digest tells them apart, as it does reordered records.
func TestCheckpointPrefixDigest(t *testing.T) {
	log := logBytes(t, logOf(t, 3))
	edited := bytes.Replace(log, []byte("2026-11-26T00:00:00Z"), []byte("2026-11-26T00:00:01Z"), 1)
	if bytes.Equal(edited, log) {
		t.Fatal("edit did not apply")
	}
	a := checkpointOf(t, NewCheckpoint(allBanks), log)
	b := checkpointOf(t, NewCheckpoint(allBanks), edited)
	if !bytes.Equal(a.Value(23, crypto.SHA256), b.Value(23, crypto.SHA256)) {
		t.Fatal("the time field moved the PCR: the test no longer shows what it means to")
	}
	if a.Prefix == b.Prefix || a.Equal(b) {
		t.Error("logs differing in one record's bytes have the same prefix digest")
	}
}

// TestCheckpointResumeSequence: the first record after the checkpoint must
// be numbered as the checkpoint's count.
func TestCheckpointResumeSequence(t *testing.T) {
	recs := logOf(t, 4)
	log := logBytes(t, recs)
	lines := bytes.SplitAfter(log, []byte("\n"))
	cp := checkpointOf(t, NewCheckpoint(allBanks), bytes.Join(lines[:2], nil))
	// Record 3 where record 2 belongs: one was removed.
	_, err := cp.Resume().Visit(bytes.NewReader(lines[3]), nil)
	var re *ReplayError
	if !errors.As(err, &re) || re.Index != 2 || !errors.Is(err, ErrSequence) {
		t.Errorf("resume with a record missing = %v, want ErrSequence at record 2", err)
	}
}

const goodCheckpoint = `{"version":1,"records":2,"prefix":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff","banks":{"sha1":{},"sha256":{"23":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}}}`

func TestParseCheckpointStrict(t *testing.T) {
	if _, err := ParseCheckpoint([]byte(goodCheckpoint + "\n")); err != nil {
		t.Fatalf("the good checkpoint: %v", err)
	}
	v := "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	for _, tc := range []struct{ name, from, to, want string }{
		{"version", `"version":1`, `"version":2`, "version 2"},
		{"no_version", `"version":1,`, ``, "version: missing"},
		{"no_records", `"records":2,`, ``, "records: missing"},
		{"records_range", `"records":2`, `"records":9007199254740992`, "records 9007199254740992"},
		{"records_negative", `"records":2`, `"records":-1`, "records"},
		{"no_prefix", `"prefix":"` + v + `",`, ``, "prefix: missing"},
		{"short_prefix", `"prefix":"00`, `"prefix":"`, "prefix"},
		{"zero_prefix", `"prefix":"` + v, `"prefix":"` + strings.Repeat("0", 64), "zero digest"},
		{"no_banks", `,"banks":{"sha1":{},"sha256":{"23":"` + v + `"}}`, ``, "banks: missing"},
		{"unknown_bank", `"sha1":{}`, `"md5":{}`, "unknown PCR bank"},
		{"pcr_32", `{"23":`, `{"32":`, `PCR "32"`},
		{"pcr_leading_zero", `{"23":`, `{"023":`, `PCR "023"`},
		{"short_value", `"23":"00`, `"23":"`, "banks.sha256.23"},
		{"sha1_length", `"sha1":{}`, `"sha1":{"23":"` + v + `"}`, "banks.sha1.23"},
		{"upper_hex", `"23":"0011`, `"23":"0A11`, "one saved form"},
		{"duplicate", `"records":2,`, `"records":2,"records":2,`, "one saved form"},
		{"spacing", `"records":2`, `"records": 2`, "one saved form"},
		{"unknown_field", `"records":2,`, `"records":2,"paths":{},`, "unknown field"},
		{"trailing", `}}}`, `}}}{}`, "text after"},
		{"zero_records_values", `"records":2,"prefix":"` + v, `"records":0,"prefix":"` + strings.Repeat("0", 64), "initial PCR values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Replace(goodCheckpoint, tc.from, tc.to, 1)
			if in == goodCheckpoint {
				t.Fatalf("edit %q did not apply", tc.from)
			}
			_, err := ParseCheckpoint([]byte(in))
			if !errors.Is(err, ErrCheckpoint) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseCheckpoint(%s) = %v, want an error saying %q", in, err, tc.want)
			}
		})
	}
}

// FuzzParseCheckpoint: whatever parses saves to the same bytes and parses
// to the same checkpoint.
func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte(goodCheckpoint))
	f.Add([]byte(`{"version":1,"records":0,"prefix":"` + strings.Repeat("0", 64) + `","banks":{"sha256":{}}}`))
	f.Add([]byte(`{"version":1,"records":0,"prefix":"` + strings.Repeat("0", 64) + `","banks":{"sha256":{"17":"` + strings.Repeat("ff", 32) + `"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCheckpoint(b)
		if err != nil {
			if c != nil || !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("error %v with checkpoint %v", err, c)
			}
			return
		}
		saved, err := c.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(saved, bytes.TrimSuffix(b, []byte("\n"))) {
			t.Fatalf("parsed %q, saved %q", b, saved)
		}
		again, err := ParseCheckpoint(saved)
		if err != nil || !again.Equal(c) {
			t.Fatalf("saved form %q does not parse back: %v", saved, err)
		}
	})
}

// TestCheckpointHighPCR: a record may name PCRs up to 31; a checkpoint
// after one must read back (it was refused above 23, leaving a verifier's
// saved state unreadable after an agent's odd record).
func TestCheckpointHighPCR(t *testing.T) {
	c, err := NewContent(Field{Key: "kind", Str: "file"}, Field{Key: "path", Str: "/x"}, Field{Key: "reason", Str: "manual"})
	if err != nil {
		t.Fatal(err)
	}
	rec := Record{RecNum: 0, HasRecNum: true, PCR: 30, ContentType: ContentTypeRimon, Content: c, Digests: c.Digests([]crypto.Hash{crypto.SHA256})}
	line, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r := NewCheckpoint([]crypto.Hash{crypto.SHA256}).Resume()
	if _, err := r.Visit(bytes.NewReader(line), nil); err != nil {
		t.Fatal(err)
	}
	cp := r.Checkpoint()
	b, err := cp.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseCheckpoint(b)
	if err != nil {
		t.Fatalf("ParseCheckpoint(%s) = %v", b, err)
	}
	if !back.Equal(cp) || bytes.Equal(back.Value(30, crypto.SHA256), make([]byte, 32)) {
		t.Errorf("the checkpoint read back is another replay: %s", b)
	}
}
