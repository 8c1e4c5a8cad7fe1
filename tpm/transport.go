package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

const (
	// maxResponse bounds a response from a socket TPM.
	maxResponse = 64 << 10
	// commandTimeout bounds one command on a socket TPM.
	commandTimeout = 60 * time.Second
)

// socketTPM speaks the raw TPM command protocol over one stream connection,
// as swtpm's TCP server and unixio socket do.
type socketTPM struct {
	conn net.Conn
	name string
}

func dialSocket(ctx context.Context, network, addr, name string) (transport.TPMCloser, error) {
	if addr == "" {
		return nil, fmt.Errorf("TPM %q: no address after %q", name, network+":")
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		hint := "is swtpm running with --server type=tcp,port=PORT?"
		if network == "unix" {
			hint = "is swtpm running with --server type=unixio,path=PATH?"
		}
		return nil, fmt.Errorf("%w at %s: %v (%s)", ErrUnreachable, name, unwrapOpError(err), hint)
	}
	return &socketTPM{conn: conn, name: name}, nil
}

func unwrapOpError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

func (s *socketTPM) Send(cmd []byte) ([]byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return nil, err
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("%w at %s: send: %v", ErrUnreachable, s.name, unwrapOpError(err))
	}
	var hdr [10]byte
	if _, err := io.ReadFull(s.conn, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w at %s: it closed the connection (swtpm serves one client at a time, and needs --flags not-need-init)", ErrUnreachable, s.name)
		}
		return nil, fmt.Errorf("%w at %s: read: %v", ErrUnreachable, s.name, unwrapOpError(err))
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("TPM %s: response size %d out of range", s.name, size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(s.conn, rsp[10:]); err != nil {
		return nil, fmt.Errorf("%w at %s: read: %v", ErrUnreachable, s.name, unwrapOpError(err))
	}
	return rsp, nil
}

func (s *socketTPM) Close() error { return s.conn.Close() }

// retrying resends a command the TPM answered with a warning that asks for it.
type retrying struct{ transport.TPMCloser }

func (r retrying) Send(cmd []byte) ([]byte, error) {
	wait := time.Millisecond
	for attempt := 0; ; attempt++ {
		rsp, err := r.TPMCloser.Send(cmd)
		if err != nil || len(rsp) < 10 || attempt >= 12 {
			return rsp, err
		}
		switch tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])) {
		case tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting:
			time.Sleep(wait)
			if wait < 500*time.Millisecond {
				wait *= 2
			}
		default:
			return rsp, nil
		}
	}
}
