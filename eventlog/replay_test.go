package eventlog

import (
	"bytes"
	"crypto"
	"errors"
	"os"
	"strings"
	"testing"
)

func logOf(t *testing.T, n int) []Record {
	var recs []Record
	for i := 0; i < n; i++ {
		recs = append(recs, mkRecord(t, uint64(i), "/bin/f"+string(rune('a'+i))))
	}
	return recs
}

func replayValue(t *testing.T, recs []Record) []byte {
	st, err := Replay(recs, allBanks)
	if err != nil {
		t.Fatal(err)
	}
	return st.Value(23, crypto.SHA256)
}

// TestEditsBreakReplay edits each bound field of one record, through its
// JSON form as an attacker would, and expects replay to name that record.
func TestEditsBreakReplay(t *testing.T) {
	for _, tc := range []struct{ name, from, to string }{
		{"path", `"path":"/bin/fb"`, `"path":"/bin/fx"`},
		{"kind", `"kind":"file"`, `"kind":"tree"`},
		{"reason", `"reason":"initial"`, `"reason":"launch"`},
		{"digest", `"sha256":"5891`, `"sha256":"6891`},
		{"size", `"size":6`, `"size":7`},
		{"size_type", `"size":6`, `"size":"6"`},
		{"added_field", `"kind":"file"`, `"kind":"file","note":"x"`},
		{"removed_field", `,"size":6`, ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs := logOf(t, 3)
			b, err := recs[1].Marshal()
			if err != nil {
				t.Fatal(err)
			}
			edited := strings.Replace(string(b), tc.from, tc.to, 1)
			if edited == string(b) {
				t.Fatalf("edit %q did not apply to %s", tc.from, b)
			}
			parsed, err := ReadAll(strings.NewReader(edited))
			if err != nil {
				t.Fatal(err)
			}
			recs[1] = parsed[0]
			_, err = Replay(recs, allBanks)
			var re *ReplayError
			if !errors.As(err, &re) || re.Index != 1 || !errors.Is(err, ErrDigestMismatch) {
				t.Errorf("Replay after editing %s = %v, want ErrDigestMismatch at record 1", tc.name, err)
			}
		})
	}
}

// TestInformationalFieldsAreNotBound documents that time and boot_id may be
// edited without breaking replay: they are not vouched for by the PCR.
func TestInformationalFieldsAreNotBound(t *testing.T) {
	recs := logOf(t, 2)
	want := replayValue(t, recs)
	for i := range recs[1].Content {
		switch recs[1].Content[i].Key {
		case "time":
			recs[1].Content[i].Str = "1999-01-01T00:00:00Z"
		case "boot_id":
			recs[1].Content[i].Str = "another-boot"
		}
	}
	if got := replayValue(t, recs); !bytes.Equal(got, want) {
		t.Error("editing time and boot_id changed the replay: they are meant to be informational")
	}
}

func TestSequenceChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func([]Record) []Record
		at   int
	}{
		{"removed", func(r []Record) []Record { return append(r[:1], r[2:]...) }, 1},
		{"reordered", func(r []Record) []Record { r[1], r[2] = r[2], r[1]; return r }, 1},
		{"duplicated", func(r []Record) []Record { return append(r[:2], r[1:]...) }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Replay(tc.edit(logOf(t, 4)), allBanks)
			var re *ReplayError
			if !errors.As(err, &re) || re.Index != tc.at || !errors.Is(err, ErrSequence) {
				t.Errorf("Replay = %v, want ErrSequence at record %d", err, tc.at)
			}
		})
	}
}

func TestReplayOrderMatters(t *testing.T) {
	recs := logOf(t, 2)
	a := replayValue(t, recs)
	recs[0], recs[1] = recs[1], recs[0]
	recs[0].RecNum, recs[1].RecNum = 0, 1
	if b := replayValue(t, recs); bytes.Equal(a, b) {
		t.Error("swapping two records did not change the replayed PCR")
	}
}

func TestReplaySkipsMissingBank(t *testing.T) {
	r := mkRecord(t, 0, "/x")
	r.Digests = r.Digests[1:2] // sha256 only
	st, err := Replay([]Record{r}, allBanks)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(st.Value(23, crypto.SHA1), InitialValue(23, crypto.SHA1)) {
		t.Error("a record without a sha1 digest changed the sha1 bank")
	}
	if bytes.Equal(st.Value(23, crypto.SHA256), InitialValue(23, crypto.SHA256)) {
		t.Error("the sha256 bank was not extended")
	}
}

func TestInitialValues(t *testing.T) {
	if v := InitialValue(17, crypto.SHA256); v[0] != 0xff {
		t.Errorf("InitialValue(17) = %x, want all ones", v)
	}
	if v := InitialValue(23, crypto.SHA256); v[0] != 0 || len(v) != 32 {
		t.Errorf("InitialValue(23) = %x, want 32 zero bytes", v)
	}
}

func TestUnverifiableContentType(t *testing.T) {
	r := mkRecord(t, 0, "/x")
	r.ContentType, r.RawContent = "other", []byte(`{"any":"thing"}`)
	if err := Verify(&r); !errors.Is(err, ErrNotRecomputable) || !strings.Contains(err.Error(), `content_type "other"`) {
		t.Errorf("Verify(content_type other) = %v, want ErrNotRecomputable", err)
	}
	st, err := Replay([]Record{r}, allBanks)
	if err != nil {
		t.Fatalf("Replay(content_type other) = %v, want its digests extended", err)
	}
	if bytes.Equal(st.Value(23, crypto.SHA256), InitialValue(23, crypto.SHA256)) {
		t.Error("the record's digest was not extended")
	}
}

// TestReplayReaderAgreesWithReplay runs the streaming replay (whose fast
// path parses without allocating) over the known-answer log and over
// edited logs, and expects the same verdicts as Replay.
func TestReplayReaderAgreesWithReplay(t *testing.T) {
	data, err := os.ReadFile("../testdata/vectors/replay.log")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ReadAll(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Replay(recs, allBanks)
	if err != nil {
		t.Fatal(err)
	}
	got, n, err := ReplayReader(bytes.NewReader(data), allBanks)
	if err != nil || n != len(recs) {
		t.Fatalf("ReplayReader = %d records, %v", n, err)
	}
	for _, h := range allBanks {
		if !bytes.Equal(got.Value(23, h), want.Value(23, h)) {
			t.Errorf("%s: ReplayReader %x, Replay %x", BankName(h), got.Value(23, h), want.Value(23, h))
		}
	}

	var log bytes.Buffer
	for _, r := range logOf(t, 3) {
		b, _ := r.Marshal()
		log.Write(b)
	}
	for _, tc := range []struct{ name, from, to string }{
		{"path", `"/bin/fb"`, `"/bin/fx"`},
		{"escaped_path", `"/bin/fb"`, `"/bin/f\u0062"`}, // same string, other spelling: still valid
		{"recnum", `"recnum":1`, `"recnum":5`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edited := strings.Replace(log.String(), tc.from, tc.to, 1)
			_, _, err := ReplayReader(strings.NewReader(edited), allBanks)
			recs, rerr := ReadAll(strings.NewReader(edited))
			if rerr != nil {
				t.Fatal(rerr)
			}
			_, werr := Replay(recs, allBanks)
			if (err == nil) != (werr == nil) {
				t.Errorf("ReplayReader = %v, Replay = %v", err, werr)
			}
			if tc.name != "escaped_path" && err == nil {
				t.Errorf("edit %s was not detected", tc.name)
			}
		})
	}

	st, n, err := ReplayReader(strings.NewReader(log.String()+"\x1e{\"recnum\":3"), allBanks)
	if !errors.Is(err, ErrTorn) || n != 3 || st == nil {
		t.Errorf("ReplayReader on a torn log = %d records, %v; want 3 and ErrTorn", n, err)
	}
}
