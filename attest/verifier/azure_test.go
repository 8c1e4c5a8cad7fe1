package verifier

import (
	"encoding/pem"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-sev-guest/kds"
	"github.com/rimon-dev/rimon/attest/azure"
	"github.com/rimon-dev/rimon/policy"
)

// TestAzureBundlesOfAMD: AMD's own ASK/ARK/ASVK files (as Trustee ships
// them) are read as the bundle of their product line, in either order.
func TestAzureBundlesOfAMD(t *testing.T) {
	for _, line := range []string{"Milan", "Genoa", "Turin"} {
		b, err := os.ReadFile("../../testdata/azure/trustee/" + strings.ToLower(line) + "_ask_ark_asvk.pem")
		if err != nil {
			t.Fatal(err)
		}
		got, ask, ark, err := productLineOfBundle(b)
		if err != nil || got != line || ask.Subject.CommonName != "SEV-"+line || ark.Subject.CommonName != "ARK-"+line {
			t.Errorf("productLineOfBundle(%s) = %q, %v, %v, %v", line, got, ask.Subject, ark.Subject, err)
		}
		// ARK first, then the ASVK, then the ASK.
		var blocks []*pem.Block
		for rest := b; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			blocks = append(blocks, blk)
		}
		reordered := append(pem.EncodeToMemory(blocks[1]), append(pem.EncodeToMemory(blocks[2]), pem.EncodeToMemory(blocks[0])...)...)
		if got, _, _, err := productLineOfBundle(reordered); got != line || err != nil {
			t.Errorf("reordered %s bundle: %q, %v", line, got, err)
		}
	}
}

// TestSNPPolicy: the reference file's azure section becomes the SNP
// report's policy field for field, the TCB in the order the file names it
// (bootloader, tee, snp, microcode).
func TestSNPPolicy(t *testing.T) {
	m := strings.Repeat("ab", 48)
	ref, err := policy.ParseReference("r.yaml", strings.NewReader("azure:\n  allow_debug: true\n  allow_migration_agent: true\n  vmpl: 2\n"+
		"  minimum_tcb: {bootloader: 3, tee: 1, snp: 8, microcode: 115}\n  measurement: "+m+"\n  vm_unique_id: 5D3F0000-0000-0000-0000-72696D6F6E00\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := azure.Policy{AllowDebug: true, AllowMigrationAgent: true, VMPL: 2, MinimumTCB: &kds.TCBParts{BlSpl: 3, TeeSpl: 1, SnpSpl: 8, UcodeSpl: 115},
		Measurement: ref.SNP.Measurement, VMUniqueID: "5D3F0000-0000-0000-0000-72696D6F6E00"}
	if got := SNPPolicy(ref.SNP); !reflect.DeepEqual(got, want) || len(got.Measurement) != 48 {
		t.Errorf("SNPPolicy = %+v\nwant %+v", got, want)
	}
	if got := SNPPolicy(policy.SNPPolicy{}); got.MinimumTCB != nil || got.AllowDebug || got.Measurement != nil {
		t.Errorf("SNPPolicy of an empty section = %+v, want nothing set", got)
	}
}
