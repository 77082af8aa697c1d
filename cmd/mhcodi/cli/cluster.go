package cli

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/fencing/certs"
)

func newClusterCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "cluster",
		Short: "Initialise the cluster: TLS certificates for fenced and etcd",
	}
	c.AddCommand(newClusterInitCmd(g))
	return c
}

func newClusterInitCmd(g *globals) *cobra.Command {
	var out string
	var force bool
	c := &cobra.Command{
		Use:   "init",
		Short: "Make the cluster's CA and a certificate for every node and for the CLI",
		Long: `init makes the cluster's certificate authority (ECDSA P-256, 10 years) and,
signed by it, a certificate for every node of the cluster file (its name, its
management and SAN addresses; fenced and etcd serve and call with it) and one
for the CLI (admin). Nodes' fenced daemons and etcd members accept only
certificates of this CA.

Run it once, on one machine, then copy the directory to every node (the node's
own .key, ca.crt and the other nodes' .crt are what it needs; ca.key can stay
offline). Run again after adding a node to the cluster file: the CA is kept and
only what is missing or out of date (a changed address) is issued. --force
makes a new CA and reissues everything, which cuts every node off from the
others until they all have the new files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(g.config)
			if err != nil {
				return err
			}
			if out == "" {
				out = cfg.Security.TLSDir
			}
			acts, err := certs.Generate(cfg, out, certs.Options{Force: force})
			if err != nil {
				return &exitError{ExitInvalid, err}
			}
			return printCertActions(cmd.OutOrStdout(), out, acts)
		},
	}
	c.Flags().StringVar(&out, "out", "", "directory of the certificates (default: security.tls_dir of the cluster file)")
	c.Flags().BoolVar(&force, "force", false, "replace an existing CA and every certificate")
	return c
}

func printCertActions(w io.Writer, dir string, acts []certs.Action) error {
	created := 0
	for _, a := range acts {
		if a.What != "kept" {
			created++
		}
	}
	fmt.Fprintf(w, "%s: %d certificate(s) written, %d kept.\n\n", dir, created, len(acts)-created)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCERTIFICATE\tDONE")
	for _, a := range acts {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Name, a.Path, a.What)
	}
	return tw.Flush()
}
