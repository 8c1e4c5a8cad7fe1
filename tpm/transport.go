package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
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

// firstTimeout bounds the first command on a new connection: swtpm accepts a
// second client's connection but serves it only once the first has gone, so
// a TPM that does not answer at all is most likely busy with another client
// (a running agent). A variable for tests.
var firstTimeout = 10 * time.Second

// socketTPM speaks the raw TPM command protocol over one stream connection,
// as swtpm's TCP server and unixio socket do.
type socketTPM struct {
	conn     net.Conn
	name     string
	answered bool // the TPM has answered a command on this connection
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
			hint = "is swtpm running with --server type=unixio,path=PATH --flags not-need-init,startup-clear?"
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
	timeout := commandTimeout
	if !s.answered {
		timeout = firstTimeout
	}
	if err := s.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, s.name, err)
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("%w at %s: send: %v", ErrUnreachable, s.name, unwrapOpError(err))
	}
	var hdr [10]byte
	if _, err := io.ReadFull(s.conn, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w at %s: it closed the connection (it stopped, or it serves another client: swtpm serves one at a time, and needs --flags not-need-init)", ErrUnreachable, s.name)
		}
		var ne net.Error
		if !s.answered && errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("%w at %s: no answer within %v: swtpm serves one client at a time; is another process (rimon watch) using it?", ErrUnreachable, s.name, timeout)
		}
		return nil, fmt.Errorf("%w at %s: read: %v", ErrUnreachable, s.name, unwrapOpError(err))
	}
	s.answered = true
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		// The rest of the response stays unread: the connection is out of
		// step and must not carry another command (ErrUnreachable makes a
		// reconnecting TPM dial again).
		s.conn.Close()
		return nil, fmt.Errorf("%w at %s: response size %d out of range", ErrUnreachable, s.name, size)
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

// Reconnect backoff: the first redial after a lost connection is
// immediate; after a failed dial the wait starts at minRedialWait and
// doubles with each failed dial up to maxRedialWait.
const (
	minRedialWait = 100 * time.Millisecond
	maxRedialWait = 5 * time.Second
)

// reconnecting is a socket TPM that survives the TPM going away: after a
// failed command it drops the connection, and a later command dials again
// (at most once per backoff wait, so that a TPM that is gone costs no more
// than a failed dial now and then). A command whose connection failed is
// never sent again: the TPM may have executed it (an extend) before the
// connection broke. The caller reconciles with the TPM after an error.
type reconnecting struct {
	dial func() (transport.TPMCloser, error)
	name string
	now  func() time.Time

	mu     sync.Mutex
	cur    transport.TPMCloser // nil while disconnected
	wait   time.Duration       // backoff before the next redial
	next   time.Time           // no redial before then
	closed bool
}

// dialReconnecting connects to the socket TPM that spec names
// ("tcp:HOST:PORT" or "unix:PATH"), and again whenever the connection is
// lost.
func dialReconnecting(ctx context.Context, spec string) (transport.TPMCloser, error) {
	network, addr, _ := strings.Cut(spec, ":")
	first, err := dialSocket(ctx, network, addr, spec)
	if err != nil {
		return nil, err
	}
	dial := func() (transport.TPMCloser, error) {
		return dialSocket(context.Background(), network, addr, spec)
	}
	return &reconnecting{dial: dial, name: spec, now: time.Now, cur: first}, nil
}

func (r *reconnecting) Send(cmd []byte) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, fmt.Errorf("TPM %s: closed", r.name)
	}
	fresh := false
	if r.cur == nil {
		if now := r.now(); now.Before(r.next) {
			return nil, fmt.Errorf("%w at %s: the connection was lost; next reconnect attempt in %v", ErrUnreachable, r.name, r.next.Sub(now).Round(time.Millisecond))
		}
		c, err := r.dial()
		if err != nil {
			r.backoff()
			return nil, err
		}
		r.cur, r.wait, fresh = c, 0, true
	}
	rsp, err := r.cur.Send(cmd)
	if err == nil && fresh && responseCode(rsp) == tpm2.TPMRCInitialize {
		// A TPM that restarted without startup-clear: start it, which
		// resets its PCRs (the caller's reconciliation sees that), and
		// send the command again: it was refused, not executed.
		if _, err = (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(r.cur); err == nil {
			rsp, err = r.cur.Send(cmd)
		}
	}
	if err != nil && errors.Is(err, ErrUnreachable) {
		// The next command dials at once (the TPM may be back already, as
		// after a quick restart); failed dials back off.
		r.cur.Close()
		r.cur = nil
		r.wait, r.next = 0, time.Time{}
	}
	return rsp, err
}

// backoff schedules the next redial after a failure.
func (r *reconnecting) backoff() {
	r.wait = min(max(2*r.wait, minRedialWait), maxRedialWait)
	r.next = r.now().Add(r.wait)
}

func (r *reconnecting) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.cur == nil {
		return nil
	}
	err := r.cur.Close()
	r.cur = nil
	return err
}

func responseCode(rsp []byte) tpm2.TPMRC {
	if len(rsp) < 10 {
		return 0
	}
	return tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10]))
}
