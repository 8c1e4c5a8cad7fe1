package attest

import (
	"crypto"

	"github.com/rimon-dev/rimon/eventlog"
)

// Selection lists pcrs bank by bank, PCRs ascending: the order of a quote.
func Selection(pcrs []int, banks []crypto.Hash) []eventlog.PCRKey {
	var out []eventlog.PCRKey
	for _, b := range banks {
		for p := 0; p < 24; p++ {
			for _, q := range pcrs {
				if q == p {
					out = append(out, eventlog.PCRKey{PCR: p, Bank: b})
					break
				}
			}
		}
	}
	return out
}
