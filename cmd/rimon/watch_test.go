package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/policy"
)

// TestWatchNotifiesSystemd runs the agent on the simulator with
// NOTIFY_SOCKET pointing at a real unixgram socket, as systemd sets it for
// a Type=notify service, and checks READY=1, STATUS= and watchdog pings.
func TestWatchNotifiesSystemd(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "")

	writeFile(t, filepath.Join(dir, "app"), "v1")
	polPath := writeFile(t, filepath.Join(dir, "policy.yaml"), "measure:\n  - file: "+filepath.Join(dir, "app")+"\n")
	pol, err := policy.Load(polPath)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	g := &globals{tpm: "sim", log: filepath.Join(dir, "m.log"), stdout: &bytes.Buffer{}, stderr: &stderr}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWatch(ctx, g, pol, polPath, "text", 0) }()

	seen := map[string]string{}
	deadline := time.Now().Add(20 * time.Second)
	buf := make([]byte, 4096)
	for time.Now().Before(deadline) && (seen["READY"] == "" || seen["WATCHDOG"] == "" || seen["STATUS"] == "") {
		conn.SetReadDeadline(time.Now().Add(time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				seen[k] = v
			}
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("runWatch: %v\n%s", err, stderr.String())
	}
	if seen["READY"] != "1" || seen["WATCHDOG"] != "1" || !strings.Contains(seen["STATUS"], "1 records") {
		t.Errorf("notifications = %v, want READY=1, WATCHDOG=1 and a STATUS with the record count", seen)
	}
	if !strings.Contains(stderr.String(), "log and TPM agree") {
		t.Errorf("the agent did not check log against TPM when it stopped:\n%s", stderr.String())
	}
	_ = os.Remove(sock)
}
