package cli

import "github.com/spf13/cobra"

// newVerifyCmd is a placeholder until issue 6's work lands in this file.
func newVerifyCmd(g *globals) *cobra.Command {
	_ = g
	return &cobra.Command{Use: "verify", Short: "Check the cluster like gnt-cluster verify; non-zero exit on any error", Hidden: true, Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return &exitError{ExitUsage, errNotYet} }}
}
