package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/fencing/ops"
)

// verifyReport is verify's JSON output.
type verifyReport struct {
	Self     string        `json:"self"`
	Errors   int           `json:"errors"`
	Warnings int           `json:"warnings"`
	Findings []ops.Finding `json:"findings"`
}

func newVerifyCmd(g *globals) *cobra.Command {
	f := &fencedFlags{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the cluster like gnt-cluster verify; non-zero exit on any error",
		Long: `Checks the cluster as the local mhcodi-fenced sees it against the cluster file,
and prints one line per finding, an error or a warning:

  hosts        a node that does not answer, a ledger without quorum, a node
               that cannot write it, cluster files that differ between nodes
  guests       running where the ledger does not give it, on two hosts at once,
               not running though it should (or the other way round), unknown
               to the file or to the ledger, a lease held by another node
  legs         stale, degraded, resyncing or missing legs
  exports      a leg its node does not export, an export fenced to another
               owner or epoch or not fenced at all, a remote leg the runner
               has no session to
  N+1          a node whose guests would not fit in the free memory of the
               nodes they would fail over to

Exits 1 when there is any error, 0 otherwise (warnings included).`,
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
			fs := ops.Verify(cfg, v)
			r := verifyReport{Self: v.Self, Findings: fs}
			for _, x := range fs {
				if x.Severity == ops.SeverityError {
					r.Errors++
				} else {
					r.Warnings++
				}
			}
			if r.Findings == nil {
				r.Findings = []ops.Finding{}
			}
			if asJSON {
				err = writeJSON(cmd.OutOrStdout(), r)
			} else {
				err = printFindings(cmd.OutOrStdout(), r)
			}
			if err != nil {
				return err
			}
			if r.Errors > 0 {
				return &exitError{ExitInvalid, fmt.Errorf("verify: %d error(s), %d warning(s)", r.Errors, r.Warnings)}
			}
			return nil
		},
	}
	addFencedFlags(cmd, f)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for machines instead of a table")
	return cmd
}

func printFindings(out io.Writer, r verifyReport) error {
	if len(r.Findings) == 0 {
		fmt.Fprintf(out, "no problem found (seen from %s)\n", r.Self)
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tCODE\tFINDING")
	for _, f := range r.Findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Severity, f.Code, f.Message)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%d error(s), %d warning(s), seen from %s\n", r.Errors, r.Warnings, r.Self)
	return nil
}
