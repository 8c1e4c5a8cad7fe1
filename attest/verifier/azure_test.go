package verifier

import (
	"encoding/pem"
	"os"
	"strings"
	"testing"
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
