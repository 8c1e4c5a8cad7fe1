package eventlog

import (
	"context"
	"crypto"
	"errors"
	"sync"
)

// fakePCRs is a pure-Go model of PCR extend for unit tests of log logic.
type fakePCRs struct {
	mu       sync.Mutex
	vals     map[PCRKey][]byte
	failNext error // returned (once) by the next extend, which then does nothing
	extends  int
}

func newFake() *fakePCRs { return &fakePCRs{vals: map[PCRKey][]byte{}} }

func (f *fakePCRs) ReadPCRs(ctx context.Context, pcr int, banks []crypto.Hash) (map[crypto.Hash][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[crypto.Hash][]byte{}
	for _, b := range banks {
		v, ok := f.vals[PCRKey{pcr, b}]
		if !ok {
			v = InitialValue(pcr, b)
		}
		out[b] = append([]byte(nil), v...)
	}
	return out, nil
}

func (f *fakePCRs) ExtendPCR(ctx context.Context, pcr int, ds map[crypto.Hash][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		return err
	}
	f.extends++
	for b, d := range ds {
		k := PCRKey{pcr, b}
		cur, ok := f.vals[k]
		if !ok {
			cur = InitialValue(pcr, b)
		}
		h := b.New()
		h.Write(cur)
		h.Write(d)
		f.vals[k] = h.Sum(nil)
	}
	return nil
}

// extendRaw extends one bank with arbitrary data, as a process outside rimon could.
func (f *fakePCRs) extendRaw(pcr int, b crypto.Hash, data string) {
	h := b.New()
	h.Write([]byte(data))
	f.ExtendPCR(context.Background(), pcr, map[crypto.Hash][]byte{b: h.Sum(nil)})
}

func (f *fakePCRs) reset(pcr int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.vals {
		if k.PCR == pcr {
			delete(f.vals, k)
		}
	}
}

var errInjected = errors.New("injected TPM failure")

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
