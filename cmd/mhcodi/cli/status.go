package cli

import "github.com/spf13/cobra"

// newStatusCmd is a placeholder until issue 6's work lands in this file.
func newStatusCmd(g *globals) *cobra.Command {
	_ = g
	return &cobra.Command{Use: "status", Short: "Hosts, quorum, and every guest with its owner, epoch and legs", Hidden: true, Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return &exitError{ExitUsage, errNotYet} }}
}
