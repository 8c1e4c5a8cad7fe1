package eventlog

import "crypto"

var allBanks = []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}

// mkRecord builds a valid rimon record.
func mkRecord(t interface{ Fatal(...any) }, n uint64, path string) Record {
	c, err := Event{Kind: KindFile, Path: path, SHA256: "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
		Size: 6, Reason: ReasonInitial, Time: "2026-11-26T00:00:00Z", BootID: "boot-a"}.Content()
	if err != nil {
		t.Fatal(err)
	}
	return Record{RecNum: n, HasRecNum: true, PCR: 23, ContentType: ContentTypeRimon, Content: c, Digests: c.Digests(allBanks)}
}
