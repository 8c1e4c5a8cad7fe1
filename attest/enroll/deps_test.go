package enroll

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The verifier's side of enrollment never speaks to a TPM: a fleet
// verifier links it without cgo.
func TestNoTPM(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(gocmd, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, p := range strings.Split(string(out), "\n") {
		if p == "github.com/rimon-dev/rimon/tpm" || p == "github.com/rimon-dev/rimon/attest/agent" || strings.HasPrefix(p, "github.com/google/go-tpm-tools") {
			t.Errorf("attest/enroll imports %s", p)
		}
	}
	c := exec.Command(gocmd, "build", ".")
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := c.CombinedOutput(); err != nil {
		t.Errorf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
}
