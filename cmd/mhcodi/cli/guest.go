package cli

import "github.com/spf13/cobra"

// newGuestCmd is a placeholder until issue 6's work lands in this file.
func newGuestCmd(g *globals) *cobra.Command {
	_ = g
	return &cobra.Command{Use: "guest", Short: "Create, start, stop, fail over and destroy guests", Hidden: true, Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return &exitError{ExitUsage, errNotYet} }}
}
