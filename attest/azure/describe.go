package azure

import (
	"encoding/hex"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
)

// Info is what `rimon azure report` prints: the runtime claims and the SNP
// report's main fields, none of them verified.
type Info struct {
	VMUniqueID     string   `json:"vmUniqueId"`
	SecureBoot     bool     `json:"secure_boot"`
	TPMEnabled     bool     `json:"tpm_enabled"`
	ConsoleEnabled bool     `json:"console_enabled"`
	Keys           []string `json:"keys"`
	SNPVersion     uint32   `json:"snp_version"`
	// CPUID is the family, model and stepping a version 3 or later report
	// names, with its product line; empty when the report names none.
	CPUID       string `json:"cpuid,omitempty"`
	Policy      uint64 `json:"policy"`
	VMPL        uint32 `json:"vmpl"`
	TCB         string `json:"reported_tcb"`
	ChipID      string `json:"chip_id"`
	Measurement string `json:"measurement"`
	ReportData  string `json:"report_data"`
}

// Describe returns the report's claims and SNP fields.
func Describe(r *Report) (*Info, error) {
	rep, err := abi.ReportToProto(r.SNP)
	if err != nil {
		return nil, bad("SNP report: %v", err)
	}
	t := kds.DecomposeTCBVersion(kds.TCBVersion(rep.GetReportedTcb()))
	i := &Info{
		VMUniqueID: r.VMConfig.VMUniqueID, SecureBoot: r.VMConfig.SecureBoot, TPMEnabled: r.VMConfig.TPMEnabled,
		ConsoleEnabled: r.VMConfig.ConsoleEnabled, SNPVersion: rep.GetVersion(), Policy: rep.GetPolicy(), VMPL: rep.GetVmpl(),
		TCB:         fmt.Sprintf("bl%d tee%d snp%d ucode%d", t.BlSpl, t.TeeSpl, t.SnpSpl, t.UcodeSpl),
		ChipID:      hex.EncodeToString(rep.GetChipId()),
		Measurement: hex.EncodeToString(rep.GetMeasurement()),
		ReportData:  hex.EncodeToString(rep.GetReportData()),
	}
	if fam, mod, step := r.SNP[offCPUIDFamily], r.SNP[offCPUIDModel], r.SNP[offCPUIDStepping]; rep.GetVersion() >= 3 && fam|mod|step != 0 {
		line, ok := productLineOfCPUID(fam, mod)
		if !ok {
			line = "no known product line"
		}
		i.CPUID = fmt.Sprintf("family 0x%02x, model 0x%02x, stepping %d (%s)", fam, mod, step, line)
	}
	for _, k := range r.Keys {
		i.Keys = append(i.Keys, k.Kid)
	}
	return i, nil
}
