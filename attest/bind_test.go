package attest

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// TestQualifyingData: the vector was computed with Python's hashlib from
// docs/FORMAT.md section 5 alone; no list quotes the nonce itself; any
// change to the list changes the data.
func TestQualifyingData(t *testing.T) {
	nonce, _ := hex.DecodeString("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	list := []Unrecorded{{Path: "/usr/bin/app", Cause: "unstable", Since: "2026-11-28T12:00:00Z", Tries: 3},
		{Path: "/etc/caf%E9", Cause: "name_not_utf8", Since: "2026-11-28T12:00:01Z", Tries: 1}}
	if got := hex.EncodeToString(QualifyingData(nonce, list)); got != "086e924716b1d10520c53a24b808504d7bf612ef5bcff2b8f4340f208c584a82" {
		t.Errorf("QualifyingData = %s", got)
	}
	if !bytes.Equal(QualifyingData(nonce, nil), nonce) {
		t.Error("without unrecorded changes the quote does not bind the nonce itself")
	}
	seen := map[string]bool{hex.EncodeToString(QualifyingData(nonce, list)): true}
	for _, edit := range []func(l []Unrecorded){
		func(l []Unrecorded) { l[0].Path = "/usr/bin/ap" },
		func(l []Unrecorded) { l[0].Path, l[0].Cause = "/usr/bin/appu", "nstable" }, // the boundary moved
		func(l []Unrecorded) { l[1].Tries = 2 },
		func(l []Unrecorded) { l[0], l[1] = l[1], l[0] },
	} {
		l := append([]Unrecorded(nil), list...)
		edit(l)
		d := hex.EncodeToString(QualifyingData(nonce, l))
		if seen[d] {
			t.Errorf("two lists give the same qualifying data %s: %+v", d, l)
		}
		seen[d] = true
	}
	if d := hex.EncodeToString(QualifyingData(nonce, list[:1])); seen[d] {
		t.Error("a list with an entry removed gives the same data")
	}
}
