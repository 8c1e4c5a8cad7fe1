package main

import (
	"crypto"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/tpm"
	"github.com/spf13/cobra"
)

func newPCRCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "pcr", Short: "Read TPM PCRs"}
	var bank string
	read := &cobra.Command{
		Use:   "read [--bank sha256] PCR",
		Short: "Print a PCR's value as lowercase hex",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pcr, err := strconv.Atoi(args[0])
			if err != nil || pcr < 0 || pcr > 23 {
				return usageErr("PCR %q: want an index from 0 to 23", args[0])
			}
			h, err := parseBank(bank)
			if err != nil {
				return err
			}
			t, err := tpm.Open(cmd.Context(), g.tpm)
			if err != nil {
				return err
			}
			defer t.Close()
			v, err := t.ReadPCRs(cmd.Context(), pcr, []crypto.Hash{h})
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, hex.EncodeToString(v[h]))
			return nil
		},
	}
	read.Flags().StringVar(&bank, "bank", "sha256", "PCR bank: sha1, sha256, sha384 or sha512")
	c.AddCommand(read)
	return c
}

func parseBank(name string) (crypto.Hash, error) {
	h, err := eventlog.ParseBank(name)
	if err != nil {
		return 0, usageErr("--bank: %v", err)
	}
	return h, nil
}
