package logfile

import (
	"bytes"
	"crypto"
	"encoding/json"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
)

// These helpers are copies of eventlog's test helpers of the same names.

var allBanks = []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}

const zeros64 = "0000000000000000000000000000000000000000000000000000000000000000"

// mkRecord builds a valid rimon record.
func mkRecord(t interface{ Fatal(...any) }, n uint64, path string) eventlog.Record {
	c, err := eventlog.Event{Kind: eventlog.KindFile, Path: path, SHA256: "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
		Size: 6, Reason: eventlog.ReasonInitial, Time: "2026-11-26T00:00:00Z", BootID: "boot-a"}.Content()
	if err != nil {
		t.Fatal(err)
	}
	return eventlog.Record{RecNum: n, HasRecNum: true, PCR: 23, ContentType: eventlog.ContentTypeRimon, Content: c, Digests: c.Digests(allBanks)}
}

func logOf(t *testing.T, n int) []eventlog.Record {
	var recs []eventlog.Record
	for i := 0; i < n; i++ {
		recs = append(recs, mkRecord(t, uint64(i), "/bin/f"+string(rune('a'+i))))
	}
	return recs
}

func marshalAll(t testing.TB, recs ...eventlog.Record) []byte {
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

// sdRecord is a record as systemd writes it to tpm2-measure.log
// (src/shared/tpm2-util.c, tpm2_userspace_log): no recnum, the PCR, one
// digest per bank of the measured string, and a content of "string",
// "bootId", "timestamp" and "eventType". str and eventType must be plain
// ASCII (json.Marshal escapes <, > and & unlike the log's encoder).
func sdRecord(pcr int, str, eventType string, banks []crypto.Hash) eventlog.Record {
	rec := eventlog.Record{PCR: pcr, ContentType: eventlog.ContentTypeSystemd}
	s, _ := json.Marshal(str)
	et, _ := json.Marshal(eventType)
	rec.RawContent = append([]byte(`{"string":`), s...)
	rec.RawContent = append(rec.RawContent, `,"bootId":"f2a3b4c5d6e7489a9b0c1d2e3f405162","timestamp":4182736,"eventType":`...)
	rec.RawContent = append(append(rec.RawContent, et...), '}')
	for _, h := range banks {
		hh := h.New()
		hh.Write([]byte(str))
		rec.Digests = append(rec.Digests, eventlog.Digest{Alg: h, Value: hh.Sum(nil)})
	}
	return rec
}
