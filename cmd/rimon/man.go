package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func newManCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the man pages (rimon.1, rimon-measure.1, ...) into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			hdr := &doc.GenManHeader{Title: "RIMON", Section: "1", Source: "rimon " + version, Manual: "rimon manual"}
			if err := doc.GenManTree(cmd.Root(), hdr, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "man pages written to %s\n", args[0])
			return nil
		},
	}
}
