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
	"strings"
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
	return StartSwtpm(t).Spec
}

// Process is a private swtpm TCP server that a test may kill and start
// again, with or without its state, on the same port.
type Process struct {
	// Spec is the rimon TPM specification, "tcp:127.0.0.1:PORT".
	Spec string
	t    testing.TB
	dir  string
	port int
	stop func() // nil while stopped
	// NoStartup makes the next start leave the TPM unstarted (no
	// startup-clear), as a TPM before firmware ran TPM2_Startup.
	NoStartup bool
}

// StartSwtpm starts a private swtpm TCP server, stopped when the test ends.
func StartSwtpm(t testing.TB) *Process {
	t.Helper()
	dir := t.TempDir()
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePortPair()
		if err != nil {
			t.Fatal(err)
		}
		p := &Process{Spec: "tcp:127.0.0.1:" + strconv.Itoa(port), t: t, dir: dir, port: port}
		if p.launch() {
			t.Cleanup(p.Kill)
			return p
		}
	}
	log, _ := os.ReadFile(filepath.Join(dir, "swtpm.log"))
	t.Fatalf("swtpm did not start; its log:\n%s", log)
	return nil
}

// launch starts swtpm on p's ports and reports whether it listens.
func (p *Process) launch() bool {
	p.t.Helper()
	flags := "not-need-init,startup-clear"
	if p.NoStartup {
		flags = "not-need-init"
	}
	stop, exited := launchFlags(p.t, p.dir, "type=tcp,port="+strconv.Itoa(p.port)+",bindaddr=127.0.0.1",
		"type=tcp,port="+strconv.Itoa(p.port+1)+",bindaddr=127.0.0.1", flags)
	if !waitListening("127.0.0.1:"+strconv.Itoa(p.port), exited) {
		stop() // the port was taken after all
		return false
	}
	p.stop = stop
	return true
}

// Kill kills swtpm (SIGKILL) and waits for it to exit. Its permanent state
// stays on disk; its volatile state (PCRs, loaded objects) is lost unless
// [Process.SaveVolatile] stored it first.
func (p *Process) Kill() {
	if p.stop != nil {
		p.stop()
		p.stop = nil
	}
}

// SaveVolatile asks the running swtpm to store its volatile state (PCR
// values included) in its state directory (swtpm_ioctl -v), where the next
// start restores it, as for a suspended or migrated VM.
func (p *Process) SaveVolatile() {
	p.t.Helper()
	out, err := exec.Command("swtpm_ioctl", "--tcp", "127.0.0.1:"+strconv.Itoa(p.port+1), "-v").CombinedOutput()
	if err != nil {
		p.t.Fatalf("swtpm_ioctl -v: %v\n%s", err, out)
	}
}

// Restart starts swtpm again on the same port. With keepState it finds
// the state it left (permanent, and volatile when saved); without, it
// starts as a new TPM. It kills a running swtpm first.
func (p *Process) Restart(keepState bool) {
	p.t.Helper()
	p.Kill()
	if !keepState {
		entries, err := os.ReadDir(p.dir)
		if err != nil {
			p.t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "tpm2-") {
				if err := os.Remove(filepath.Join(p.dir, e.Name())); err != nil {
					p.t.Fatal(err)
				}
			}
		}
	}
	if !p.launch() {
		log, _ := os.ReadFile(filepath.Join(p.dir, "swtpm.log"))
		p.t.Fatalf("swtpm did not start again on port %d; its log:\n%s", p.port, log)
	}
}

// launch starts swtpm with its state in dir and the given --server and
// --ctrl channels; stop kills it and waits, exited closes when it ends.
func launch(t testing.TB, dir, server, ctrl string) (stop func(), exited <-chan struct{}) {
	t.Helper()
	return launchFlags(t, dir, server, ctrl, "not-need-init,startup-clear")
}

// launchFlags is launch with swtpm's --flags.
func launchFlags(t testing.TB, dir, server, ctrl, flags string) (stop func(), exited <-chan struct{}) {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Fatalf("swtpm is not installed (apt-get install swtpm swtpm-tools): %v", err)
	}
	cmd := exec.Command(bin, "socket", "--tpm2", "--server", server, "--ctrl", ctrl,
		"--tpmstate", "dir="+dir, "--flags", flags,
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
