package logfile

import (
	"context"
	"crypto"
	"errors"
	"sync"

	"github.com/rimon-dev/rimon/eventlog"
)

// fakePCRs is a pure-Go model of PCR extend for unit tests of log logic.
type fakePCRs struct {
	mu       sync.Mutex
	vals     map[eventlog.PCRKey][]byte
	failNext error // returned (once) by the next extend, which then does nothing
	extends  int
}

func newFake() *fakePCRs { return &fakePCRs{vals: map[eventlog.PCRKey][]byte{}} }

func (f *fakePCRs) ReadPCRs(ctx context.Context, pcr int, banks []crypto.Hash) (map[crypto.Hash][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[crypto.Hash][]byte{}
	for _, b := range banks {
		v, ok := f.vals[eventlog.PCRKey{PCR: pcr, Bank: b}]
		if !ok {
			v = eventlog.InitialValue(pcr, b)
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
		k := eventlog.PCRKey{PCR: pcr, Bank: b}
		cur, ok := f.vals[k]
		if !ok {
			cur = eventlog.InitialValue(pcr, b)
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
