package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/attest"
)

// startLimitedAgent runs "rimon watch" in its own process with at most
// nofile open files (soft and hard: Go raises the soft limit to the hard one).
func startLimitedAgent(t *testing.T, nofile int, args ...string) *agent {
	t.Helper()
	return startAgentCmd(t, exec.Command("sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" watch "$@"`, nofile), os.Args[0]}, args...)...))
}

// TestIdleConnectionsLeaveDescriptorsForMeasuring: an agent limited to 64
// open files gets 200 idle connections to its evidence endpoint from 100
// addresses; a change to a watched file is still measured and recorded,
// and once the connections are gone a verifier attests as usual. Without a
// connection cap the connections took every descriptor, and the
// measurement failed with "too many open files".
func TestIdleConnectionsLeaveDescriptorsForMeasuring(t *testing.T) {
	dir := t.TempDir()
	app := writeFile(t, filepath.Join(dir, "data", "app"), "v1")
	pol := writeFile(t, filepath.Join(dir, "policy.yaml"), fmt.Sprintf("settings:\n  debounce: 20ms\nmeasure:\n  - dir: %s\n", filepath.Dir(app)))
	log := filepath.Join(dir, "m.log")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	a := startLimitedAgent(t, 64, "--tpm", "sim", "--policy", pol, "--log", log, "--listen", addr)
	defer a.stop(t, syscall.SIGTERM)
	if !strings.Contains(a.log(), "max_connections=16") {
		t.Errorf("agent with 64 descriptors: want max_connections=16 in\n%s", a.log())
	}

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 200; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(10+i/2))}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Logf("idle connection %d: %v", i, err)
			continue
		}
		conns = append(conns, c)
	}
	if len(conns) < 100 {
		t.Fatalf("only %d idle connections opened", len(conns))
	}

	writeFile(t, app, "v2, changed while the endpoint is full")
	sum := sha256.Sum256([]byte("v2, changed while the endpoint is full"))
	want := hex.EncodeToString(sum[:])
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(log)
		if strings.Contains(string(b), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the change was not recorded within 20 s with %d idle connections open; agent:\n%s", len(conns), a.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if strings.Contains(a.log(), "too many open files") {
		t.Errorf("the agent ran out of descriptors:\n%s", a.log())
	}

	for _, c := range conns {
		c.Close()
	}
	conns = nil
	ev, err := attest.Fetch(context.Background(), &http.Client{Timeout: 60 * time.Second}, "http://"+addr, []byte(testNonce))
	if err != nil {
		t.Fatalf("fetch after the idle connections closed: %v\nagent:\n%s", err, a.log())
	}
	ak := writeFile(t, filepath.Join(dir, "ak.pem"), ev.AKPublic)
	if r := rimon(t, "attest", "--agent", "http://"+addr, "--ak", ak); r.code != 0 || !strings.Contains(r.stdout, "the first 2 of 2 records") {
		t.Errorf("attest: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
