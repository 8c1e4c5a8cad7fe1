package agent

import (
	"context"
	"crypto"
	"encoding/hex"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/tpm"
)

// Collect takes a quote of pcrs in banks with the AK and reads their
// values and the log, all under the log's shared lock, so that quote and
// log belong together.
func Collect(ctx context.Context, t *tpm.TPM, logPath string, nonce []byte, pcrs []int, banks []crypto.Hash) (*attest.Evidence, error) {
	ak, err := t.ReadAK(ctx)
	if err != nil {
		return nil, err
	}
	akPEM, err := attest.PublicKeyPEM(ak.Key)
	if err != nil {
		return nil, err
	}
	ev := &attest.Evidence{Version: attest.EvidenceVersion, Nonce: hex.EncodeToString(nonce), AKPublic: string(akPEM)}
	err = logfile.WhileLocked(ctx, logPath, func(log []byte) error {
		q, err := t.QuotePCRs(ctx, nonce, pcrs, banks)
		if err != nil {
			return err
		}
		vals := map[eventlog.PCRKey][]byte{}
		for _, p := range pcrs {
			v, err := t.ReadPCRs(ctx, p, banks)
			if err != nil {
				return err
			}
			for h, b := range v {
				vals[eventlog.PCRKey{PCR: p, Bank: h}] = b
			}
		}
		ev.Quote = attest.QuoteBlob{Attest: q.Attest, Signature: q.Signature}
		ev.SetValues(vals)
		ev.Log = log
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ev, nil
}
