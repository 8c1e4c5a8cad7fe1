package logfile

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rimon-dev/rimon/eventlog"
)

// extendAll extends the first n records into f.
func extendAll(t *testing.T, f *fakePCRs, recs []eventlog.Record) {
	for i := range recs {
		if err := extendRecord(context.Background(), f, &recs[i], allBanks); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReconcile(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		records  int
		extended int // how many leading records the TPM saw
		tamper   func(f *fakePCRs)
		noRepair bool // MaxRepair 0; every other case allows the 1 a crash leaves
		rebuild  bool
		repaired []int
		pending  []int
		wantErr  string
		reset    bool // the error says the PCR was reset
	}{
		{name: "agree", records: 5, extended: 5},
		{name: "empty_log_fresh_tpm", records: 0, extended: 0},
		{name: "last_record_not_extended", records: 5, extended: 4, repaired: []int{4}},
		{name: "only_record_not_extended", records: 1, extended: 0, repaired: []int{0}},
		{name: "report_only", records: 5, extended: 4, noRepair: true, pending: []int{4}},
		{name: "too_many_missing", records: 5, extended: 2, wantErr: "the TPM matches the first 2 records, and 3 records were never extended"},
		{name: "pcr_reset", records: 5, extended: 0, wantErr: "the PCR was reset", reset: true},
		{name: "pcr_reset_report_only", records: 5, extended: 0, noRepair: true, wantErr: "the PCR was reset", reset: true},
		{name: "report_only_more_than_a_crash", records: 5, extended: 3, noRepair: true, wantErr: "3 records, and 2 records were never extended, more than the 1 a crash can leave"},
		{name: "report_only_first_record", records: 1, extended: 0, noRepair: true, pending: []int{0}},
		{name: "rebuild_fresh_simulator", records: 5, extended: 0, rebuild: true, repaired: []int{0, 1, 2, 3, 4}},
		{name: "extended_outside_rimon", records: 3, extended: 3, tamper: func(f *fakePCRs) { f.extendRaw(23, crypto.SHA256, "evil") },
			wantErr: "no prefix of the log replays"},
		{name: "one_bank_tampered_after_reset", records: 3, extended: 3, tamper: func(f *fakePCRs) { f.reset(23) },
			wantErr: "the PCR was reset", reset: true},
		{name: "log_truncated", records: 2, extended: 3, wantErr: "no prefix of the log replays"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all := logOf(t, max(tc.records, tc.extended))
			f := newFake()
			extendAll(t, f, all[:tc.extended])
			if tc.tamper != nil {
				tc.tamper(f)
			}
			opts := ReconcileOptions{Banks: allBanks, PCRs: []int{23}, MaxRepair: 1, Rebuild: tc.rebuild}
			if tc.noRepair {
				opts.MaxRepair = 0
			}
			res, err := Reconcile(ctx, all[:tc.records], f, opts)
			if tc.wantErr != "" {
				var div *DivergenceError
				if !errors.As(err, &div) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Reconcile = %v, want *DivergenceError containing %q", err, tc.wantErr)
				}
				if div.Reset != tc.reset {
					t.Errorf("DivergenceError.Reset = %v, want %v", div.Reset, tc.reset)
				}
				if len(div.Mismatches) == 0 {
					t.Error("DivergenceError lists no mismatching PCR")
				}
				return
			}
			if err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			if diff := cmp.Diff(tc.repaired, res.Repaired); diff != "" {
				t.Errorf("Repaired (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.pending, res.Pending); diff != "" {
				t.Errorf("Pending (-want +got):\n%s", diff)
			}
			if len(tc.pending) == 0 {
				// After reconciliation the TPM equals the replay of every record.
				got, _ := f.ReadPCRs(ctx, 23, allBanks)
				for _, h := range allBanks {
					if !cmp.Equal(got[h], res.State.Value(23, h)) {
						t.Errorf("%v: TPM %x, replay %x", h, got[h], res.State.Value(23, h))
					}
				}
			}
		})
	}
}

func TestReconcileRefusesEditedRecord(t *testing.T) {
	recs := logOf(t, 3)
	f := newFake()
	extendAll(t, f, recs)
	for i := range recs[2].Content {
		if recs[2].Content[i].Key == "path" {
			recs[2].Content[i].Str = "/bin/evil"
		}
	}
	_, err := Reconcile(context.Background(), recs, f, ReconcileOptions{Banks: allBanks, MaxRepair: 1})
	var re *eventlog.ReplayError
	if !errors.As(err, &re) || re.Index != 2 {
		t.Errorf("Reconcile with an edited record = %v, want *ReplayError at record 2", err)
	}
	if f.extends != 3 {
		t.Errorf("Reconcile extended the TPM %d times, want no extends beyond the 3 of the test", f.extends-3)
	}
}
