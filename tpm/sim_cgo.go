//go:build cgo

package tpm

import (
	"fmt"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
)

// openSimulator starts the in-process simulator. Only one may be open in a
// process at a time: a second call waits until the first is closed.
func openSimulator() (transport.TPMCloser, error) {
	s, err := simulator.Get()
	if err != nil {
		return nil, fmt.Errorf("start TPM simulator: %w", err)
	}
	return transport.FromReadWriteCloser(s), nil
}
