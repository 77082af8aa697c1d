package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ops"
)

// clusterTimeout bounds fetching the view: the local fenced asks every
// node with ops.NodeTimeout each, at once.
const clusterTimeout = 2*ops.NodeTimeout + 5*time.Second

func newStatusCmd(g *globals) *cobra.Command {
	f := &fencedFlags{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Hosts, quorum, and every guest with its owner, epoch and legs",
		Long: `Asks the local mhcodi-fenced for the cluster as it sees it now (every node's
answer and the ledger) and prints two tables: the hosts (up or down, whether
they can write the ledger, free memory, the guests they run) and the guests
(owner, epoch, desired state, where they run, the lease holder, and each
disk's legs: up, degraded, resyncing N%, stale since epoch N, missing, down).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(g.config)
			if err != nil {
				return err
			}
			v, err := fetchCluster(cmd.Context(), f)
			if err != nil {
				return err
			}
			r := ops.Summarize(cfg, v)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			return printStatus(cmd.OutOrStdout(), cfg, r)
		},
	}
	addFencedFlags(cmd, f)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for machines instead of tables")
	return cmd
}

// fetchCluster gets the view from the local fenced's PathCluster.
func fetchCluster(ctx context.Context, f *fencedFlags) (api.ClusterView, error) {
	ctx, cancel := context.WithTimeout(ctx, clusterTimeout)
	defer cancel()
	cc, ok := f.client().(api.ClusterClient)
	if !ok {
		// api.NewUnixClient has Cluster; this is a build without it.
		return api.ClusterView{}, &exitError{ExitInvalid, fmt.Errorf("this mhcodi's fenced client cannot fetch %s", api.PathCluster)}
	}
	v, err := cc.Cluster(ctx)
	if err != nil {
		if api.StatusOf(err) != 0 {
			return v, &exitError{ExitInvalid, err}
		}
		return v, f.unreachable(err)
	}
	return v, nil
}

func printStatus(out io.Writer, cfg *configs.Config, r ops.Report) error {
	ledger := "the ledger has quorum"
	if !r.Quorum {
		ledger = "the ledger has NO quorum (" + orDash(r.LedgerErr) + ")"
	}
	if r.LedgerStale {
		ledger += "; records as " + r.Self + " last read them"
	}
	fmt.Fprintf(out, "cluster %s (%s mode), seen from %s: %s\n\n", cfg.Cluster.Name, r.Mode, r.Self, ledger)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tROLE\tSTATE\tLEDGER\tFREE MEMORY\tRUNNING")
	for _, h := range r.Hosts {
		if !h.Up {
			fmt.Fprintf(tw, "%s\t%s\tdown\t-\t-\t- (%s)\n", h.Node, h.Role, h.Err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\tup\t%s\t%d MiB\t%s\n", h.Node, h.Role, yesNo(h.Quorum, "writable", "no quorum"), h.MemoryFreeMiB, orDash(strings.Join(h.Running, ", ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GUEST\tOWNER\tEPOCH\tDESIRED\tRUNNING ON\tLEASE\tDISK\tLEGS")
	for _, g := range r.Guests {
		name := g.Guest
		if !g.InFile {
			name += " (not in the file)"
		}
		run := orDash(strings.Join(g.Running, ", "))
		if g.State != "" && g.State != "running" {
			run += " (" + g.State + ")"
		}
		head := fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t%s", name, orDash(g.Owner), g.Epoch, orDash(g.Desired), run, orDash(g.Lease))
		if len(g.Disks) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\n", head)
		}
		for i, d := range g.Disks {
			var legs []string
			for _, l := range d.Legs {
				legs = append(legs, l.Node+": "+l.Word())
			}
			if i > 0 {
				head = "\t\t\t\t\t"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", head, d.Disk, strings.Join(legs, ", "))
		}
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}
