// Package testtpm hands out TPMs to tests: the in-process simulator by
// default, a private swtpm per test, or the TPM that RIMON_TEST_TPM names.
package testtpm

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/tpm"
)

// Open returns an open TPM for the test, closed when the test ends.
// RIMON_TEST_TPM selects it: unset or "sim" for the simulator, "swtpm" for a
// private swtpm, anything else is passed to [tpm.Open].
func Open(t testing.TB) *tpm.TPM {
	t.Helper()
	spec := os.Getenv("RIMON_TEST_TPM")
	switch spec {
	case "", "sim":
		spec = "sim"
	case "swtpm":
		spec = Swtpm(t)
	}
	tp, err := tpm.Open(context.Background(), spec)
	if err != nil {
		t.Fatalf("open test TPM %s: %v", spec, err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// Swtpm starts a private swtpm TCP server for the test and returns its
// rimon TPM specification ("tcp:127.0.0.1:PORT"). The control channel is
// on PORT+1, as tpm2-tools' swtpm TCTI expects. It fails the test when
// swtpm is not installed.
func Swtpm(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePortPair()
		if err != nil {
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		stop, exited := launch(t, dir, "type=tcp,port="+strconv.Itoa(port)+",bindaddr=127.0.0.1",
			"type=tcp,port="+strconv.Itoa(port+1)+",bindaddr=127.0.0.1")
		if waitListening(addr, exited) {
			t.Cleanup(stop)
			return "tcp:" + addr
		}
		stop() // the port was taken after all: try another
	}
	log, _ := os.ReadFile(filepath.Join(dir, "swtpm.log"))
	t.Fatalf("swtpm did not start; its log:\n%s", log)
	return ""
}

// launch starts swtpm with its state in dir and the given --server and
// --ctrl channels; stop kills it and waits, exited closes when it ends.
func launch(t testing.TB, dir, server, ctrl string) (stop func(), exited <-chan struct{}) {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Fatalf("swtpm is not installed (apt-get install swtpm swtpm-tools): %v", err)
	}
	cmd := exec.Command(bin, "socket", "--tpm2", "--server", server, "--ctrl", ctrl,
		"--tpmstate", "dir="+dir, "--flags", "not-need-init,startup-clear",
		"--log", "file="+filepath.Join(dir, "swtpm.log"))
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	return func() { cmd.Process.Kill(); <-done }, done
}

// waitListening waits until addr accepts a TCP connection, without
// sending anything (swtpm serves one connection at a time).
func waitListening(addr string, exited <-chan struct{}) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			// Let swtpm notice the closed connection before the real client comes.
			time.Sleep(20 * time.Millisecond)
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// freePortPair finds a port p such that p and p+1 are both free now.
func freePortPair() (int, error) {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free pair of TCP ports")
}

// TCTI returns the tpm2-tools TCTI string for a "tcp:HOST:PORT" specification.
func TCTI(spec string) string {
	host, port, _ := net.SplitHostPort(spec[len("tcp:"):])
	return "swtpm:host=" + host + ",port=" + port
}

// OpenKind opens a fresh TPM of the kind named: "sim" for the simulator,
// "swtpm" for a private swtpm. Benchmarks use it to compare the two.
func OpenKind(t testing.TB, kind string) *tpm.TPM {
	t.Helper()
	spec := kind
	if kind == "swtpm" {
		spec = Swtpm(t)
	}
	tp, err := tpm.Open(context.Background(), spec)
	if err != nil {
		t.Fatalf("open %s: %v", kind, err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// SwtpmUnix starts a private swtpm on a unixio socket and returns its
// rimon TPM specification ("unix:PATH").
func SwtpmUnix(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "tpm.sock")
	stop, exited := launch(t, dir, "type=unixio,path="+sock, "type=unixio,path="+filepath.Join(dir, "ctrl.sock"))
	t.Cleanup(stop)
	for i := 0; i < 500; i++ {
		select {
		case <-exited:
			t.Fatal("swtpm exited before creating its socket")
		default:
		}
		if _, err := os.Stat(sock); err == nil {
			return "unix:" + sock
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("swtpm did not create its socket")
	return ""
}
