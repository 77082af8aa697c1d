package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/initiator"
)

func newImportCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Show the legs a node imports from the others and links under /dev/mhcodi",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newImportStatusCmd(g))
	return cmd
}

func newImportStatusCmd(_ *globals) *cobra.Command {
	var node, stateDir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Every leg this node sees: its link, device, state (up, down, refused…), since when and why",
		Long: `Reads the state mhcodi-initiator publishes after every pass
(<state-dir>/initiator-<node>.json) and prints one row per leg of every guest
that may run on the node: local legs (linked to their LV or file) and remote
legs (imported, or reached by the hypervisor with initiator.backend qemu).

Exits 1 when a leg is not up (down, refused, pending) or when the file is
stale (the daemon stopped), so scripts can wait on it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := initiator.ReadState(initiator.StatePath(stateDir, node))
			if errors.Is(err, fs.ErrNotExist) {
				return &exitError{ExitInvalid, fmt.Errorf("%w (is mhcodi-initiator --node %s running with --state-dir %s?)", err, node, stateDir)}
			}
			if err != nil {
				return &exitError{ExitInvalid, err}
			}
			now := time.Now()
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), st); err != nil {
					return err
				}
			} else {
				printImportStatus(cmd.OutOrStdout(), st, now)
			}
			return importVerdict(st, now)
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node whose imports to show (required)")
	cmd.Flags().StringVar(&stateDir, "state-dir", initiator.DefaultStateDir, "mhcodi-initiator's --state-dir")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the state file as JSON")
	_ = cmd.MarkFlagRequired("node")
	return cmd
}

func printImportStatus(out io.Writer, st *initiator.StateFile, now time.Time) {
	fmt.Fprintf(out, "node %s, backend %s, links under %s; updated %s ago by pid %d\n",
		st.Node, st.Backend, st.LinkDir, now.Sub(st.Updated).Round(time.Second), st.PID)
	if st.Stale(now) {
		fmt.Fprintln(out, "WARNING: the state is stale: mhcodi-initiator has not updated it for a while (stopped?)")
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LEG\tLINK\tDEVICE\tSTATE\tSINCE\tREASON")
	for _, l := range st.Legs {
		since := l.Since.Local().Format(time.DateTime) + " (" + now.Sub(l.Since).Round(time.Second).String() + " ago)"
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Leg, dash(l.Link), dash(l.Device), l.State, since, dash(l.Reason))
	}
	tw.Flush()
}

// importVerdict is the exit status: every leg up (or the hypervisor's),
// from a fresh file.
func importVerdict(st *initiator.StateFile, now time.Time) error {
	if st.Stale(now) {
		return &exitError{ExitInvalid, fmt.Errorf("state of node %s is stale (updated %s)", st.Node, st.Updated.Format(time.RFC3339))}
	}
	var bad []string
	for _, l := range st.Legs {
		if l.State != initiator.StateUp && l.State != initiator.StateHypervisor {
			bad = append(bad, l.Leg+" "+string(l.State))
		}
	}
	if len(bad) > 0 {
		return &exitError{ExitInvalid, fmt.Errorf("%d leg(s) not up: %s", len(bad), strings.Join(bad, ", "))}
	}
	return nil
}
