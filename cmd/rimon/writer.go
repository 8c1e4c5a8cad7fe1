package main

import (
	"context"
	"crypto"
	"fmt"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/tpm"
)

// openWriter opens the log for appending, reconciling it with the TPM, and
// says on stderr what the reconciliation repaired.
func (g *globals) openWriter(ctx context.Context, t *tpm.TPM, banks []crypto.Hash, pcr int) (*logfile.Writer, error) {
	return g.openWriterSeeing(ctx, t, banks, pcr, nil)
}

// openWriterSeeing is openWriter that shows seen every record already in the log.
func (g *globals) openWriterSeeing(ctx context.Context, t *tpm.TPM, banks []crypto.Hash, pcr int, seen func(*eventlog.Record)) (*logfile.Writer, error) {
	if err := tpm.CheckExtendable(pcr); err != nil {
		return nil, err // before the log is created or changed
	}
	boot, err := logfile.CurrentBootID()
	if err != nil {
		return nil, err
	}
	w, rec, err := logfile.OpenWriter(ctx, g.log, t, logfile.WriterOptions{
		Banks:   banks,
		BootID:  boot,
		PCR:     pcr,
		Rebuild: t.Ephemeral(),
		OnOpen:  seen,
	})
	if err != nil {
		return nil, err
	}
	g.reportRecovery(rec, t.Ephemeral())
	return w, nil
}

func (g *globals) reportRecovery(rec *logfile.Recovery, ephemeral bool) {
	if n := len(rec.Repaired); n > 0 {
		if ephemeral {
			fmt.Fprintf(g.stderr, "rimon: the simulator starts empty: extended the %d records of %s into it\n", n, g.log)
		} else {
			fmt.Fprintf(g.stderr, "rimon: repaired: record(s) %v of %s were written but not extended (a crash); extended them now\n", rec.Repaired, g.log)
		}
	}
	if rec.TornBytes > 0 {
		fmt.Fprintf(g.stderr, "rimon: repaired: %s ended in an incomplete record (%d bytes, never extended); moved it to %s\n", g.log, rec.TornBytes, rec.TornPath)
	}
}
