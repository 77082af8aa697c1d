package cli

import "github.com/spf13/cobra"

// newClusterCmd is a placeholder until issue 6's work lands in this file.
func newClusterCmd(g *globals) *cobra.Command {
	_ = g
	return &cobra.Command{Use: "cluster", Short: "Initialise the cluster: TLS certificates for fenced and etcd", Hidden: true, Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return &exitError{ExitUsage, errNotYet} }}
}

// errNotYet is what a placeholder command says.
var errNotYet = errorString("not implemented yet")

type errorString string

func (e errorString) Error() string { return string(e) }
