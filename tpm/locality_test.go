package tpm_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

// TestCheckExtendableMatchesSwtpm asks tpm2-tools, not rimon, which PCRs a
// locality-0 client can extend on swtpm, and compares with CheckExtendable.
func TestCheckExtendableMatchesSwtpm(t *testing.T) {
	spec := testtpm.Swtpm(t)
	tp, err := tpm.Open(context.Background(), spec) // sends TPM2_Startup
	if err != nil {
		t.Fatal(err)
	}
	tp.Close() // swtpm serves one client at a time
	for pcr := 0; pcr <= 23; pcr++ {
		out, err := exec.Command("tpm2_pcrextend", "-T", testtpm.TCTI(spec),
			fmt.Sprintf("%d:sha256=%s", pcr, strings.Repeat("ab", 32))).CombinedOutput()
		tpmSays := err == nil
		if !tpmSays && !strings.Contains(strings.ToLower(string(out)), "locality") {
			t.Fatalf("tpm2_pcrextend %d failed for another reason than locality: %v\n%s", pcr, err, out)
		}
		rimonSays := tpm.CheckExtendable(pcr) == nil
		if tpmSays != rimonSays {
			t.Errorf("PCR %d: swtpm extendable at locality 0 = %v, CheckExtendable = %v (%v)\n%s", pcr, tpmSays, rimonSays, tpm.CheckExtendable(pcr), out)
		}
	}
}

func TestCheckExtendable(t *testing.T) {
	for _, tc := range []struct {
		pcr      int
		locality bool // want ErrPCRLocality
		ok       bool
	}{
		{-1, false, false}, {0, false, true}, {16, false, true}, {17, true, false},
		{22, true, false}, {23, false, true}, {24, false, false},
	} {
		err := tpm.CheckExtendable(tc.pcr)
		if (err == nil) != tc.ok || errors.Is(err, tpm.ErrPCRLocality) != tc.locality {
			t.Errorf("CheckExtendable(%d) = %v; want ok %v, ErrPCRLocality %v", tc.pcr, err, tc.ok, tc.locality)
		}
	}
}

// TestExtendPCRRefusesLocality: the refusal comes before the TPM is asked.
func TestExtendPCRRefusesLocality(t *testing.T) {
	tp := testtpm.Open(t)
	err := tp.ExtendPCR(context.Background(), 17, nil)
	if !errors.Is(err, tpm.ErrPCRLocality) {
		t.Errorf("ExtendPCR(17) = %v, want ErrPCRLocality", err)
	}
}
