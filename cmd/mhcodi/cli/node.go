package cli

import "github.com/spf13/cobra"

// newNodeCmd is a placeholder until issue 6's work lands in this file.
func newNodeCmd(g *globals) *cobra.Command {
	_ = g
	return &cobra.Command{Use: "node", Short: "Evacuate a node, or declare it dead", Hidden: true, Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return &exitError{ExitUsage, errNotYet} }}
}
