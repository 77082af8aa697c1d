package cli

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/fencing/api"
)

func newNodeCmd(g *globals) *cobra.Command {
	_ = g // the local fenced reads the cluster file itself
	f := &fencedFlags{}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Evacuate a node, or declare it dead",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	addFencedFlags(cmd, f)
	cmd.PersistentFlags().DurationVar(&f.timeout, "timeout", 30*time.Minute, "give up waiting for the operation after this long (0: wait as long as it takes)")
	evacuate := &cobra.Command{
		Use:   "evacuate NODE",
		Short: "Fail every guest NODE owns over to the other node that holds its legs",
		Long: `Moves every guest NODE owns, one after the other, to the other node that holds
its legs (the one with the most free memory when there are several). It checks
first that the destinations have the memory for the guests that run (N+1), and
refuses if not. NODE must answer: a dead node is declared dead instead. It
stops at the first guest that fails, saying which guests moved.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd.Context(), cmd.OutOrStdout(), f, api.OpRequest{Op: api.OpEvacuate, Node: args[0]})
		},
	}
	dead := &cobra.Command{
		Use:   "declare-dead NODE",
		Short: "Your word that NODE is down: fail its guests over with its legs stale",
		Long: `Declares NODE down: a ledger without quorum is forked to this node (--node),
and every guest NODE owns is failed over with NODE's legs marked stale, so
they are wiped and resynced in full when NODE returns. Refused while NODE
answers (evacuate it instead).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd.Context(), cmd.OutOrStdout(), f, api.OpRequest{Op: api.OpDeclareDead, Node: args[0], Force: true})
		},
	}
	cmd.AddCommand(evacuate, dead)
	return cmd
}
