package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/configs"
)

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with the cluster file",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var asJSON bool
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate the cluster file and show every disk leg with its derived names",
		Long: `Validates the cluster file and prints one row per disk leg: guest, disk, the
node that keeps it, where it lives there (LV or file), its iSCSI target IQN,
its /dev/mhcodi path (the same on every node), and the serial and WWN a
guest and the SCSI layer see; then one row per guest NIC: its network, VLAN,
MAC (derived from cluster, guest and NIC name, the same on every node),
address, host tap device and each node's bridge. Exits 1 and lists every problem, each with the
file, the key path and the rule, when the file is not valid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConfigCheck(cmd.OutOrStdout(), g.config, asJSON)
		},
	}
	check.Flags().BoolVar(&asJSON, "json", false, "print JSON for machines instead of a table")
	cmd.AddCommand(check)
	return cmd
}

// checkReport is config check's JSON output.
type checkReport struct {
	File    string               `json:"file"`
	Valid   bool                 `json:"valid"`
	Errors  []checkError         `json:"errors,omitempty"`
	Cluster *configs.ClusterInfo `json:"cluster,omitempty"`
	Nodes   []checkNode          `json:"nodes,omitempty"`
	Legs    []configs.LegInfo    `json:"legs,omitempty"`
	NICs    []configs.NICInfo    `json:"nics,omitempty"`
}

type checkError struct {
	File string `json:"file"`
	Key  string `json:"key,omitempty"`
	Env  string `json:"env,omitempty"`
	Rule string `json:"rule"`
}

type checkNode struct {
	Name         string `json:"name"`
	Role         string `json:"role"`
	SANAddress   string `json:"san_address,omitempty"`
	MgmtAddress  string `json:"mgmt_address"`
	InitiatorIQN string `json:"initiator_iqn,omitempty"`
	Backend      string `json:"backend,omitempty"`
}

func runConfigCheck(out io.Writer, path string, asJSON bool) error {
	cfg, err := configs.Load(path)
	if err != nil {
		es, ok := configs.AsErrors(err)
		if !ok {
			return &exitError{ExitInvalid, err}
		}
		if asJSON {
			r := checkReport{File: path}
			for _, e := range es {
				r.Errors = append(r.Errors, checkError{File: e.File, Key: e.Key, Env: e.Env, Rule: e.Rule})
			}
			if err := writeJSON(out, r); err != nil {
				return err
			}
		}
		if len(es) == 1 && es[0].Key == "" {
			return &exitError{ExitInvalid, es[0]} // unreadable file: say just that
		}
		noun := "problem"
		if len(es) > 1 {
			noun = "problems"
		}
		return &exitError{ExitInvalid, fmt.Errorf("%s is not valid (%d %s):\n%w", path, len(es), noun, es)}
	}
	legs := cfg.Legs()
	if asJSON {
		r := checkReport{File: cfg.Path, Valid: true, Cluster: &cfg.Cluster, Legs: legs, NICs: cfg.NICs("")}
		for _, n := range cfg.Nodes {
			cn := checkNode{Name: n.Name, Role: n.Role, MgmtAddress: n.MgmtAddress.AddrPort(configs.DefaultMgmtPort).String()}
			if n.Role == configs.RoleStorage {
				cn.SANAddress = n.SANAddress.AddrPort(configs.DefaultSANPort).String()
				cn.InitiatorIQN = cfg.InitiatorIQN(n.Name)
				cn.Backend = cfg.StorageFor(n.Name).Backend
			}
			r.Nodes = append(r.Nodes, cn)
		}
		return writeJSON(out, r)
	}
	storage, witness := 0, 0
	for _, n := range cfg.Nodes {
		if n.Role == configs.RoleWitness {
			witness++
		} else {
			storage++
		}
	}
	disks := 0
	for _, g := range cfg.Guests {
		disks += len(g.Disks)
	}
	fmt.Fprintf(out, "%s: valid. Cluster %s: %d storage node(s), %d witness(es), %d guest(s), %d disk(s), %d leg(s).\n\n",
		cfg.Path, cfg.Cluster.Name, storage, witness, len(cfg.Guests), disks, len(legs))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GUEST\tDISK\tNODE\tSIZE\tVOLUME\tTARGET IQN\tPATH\tSERIAL\tWWN")
	for _, l := range legs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			l.Guest, l.Disk, l.Node, l.Size, l.Location, l.TargetIQN, l.DevPath, l.Serial, l.WWN)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	nics := cfg.NICs("")
	if len(nics) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "GUEST\tNIC\tNETWORK\tVLAN\tMAC\tADDRESS\tTAP\tBRIDGES")
	for _, n := range nics {
		vlan, mac, addr := "-", n.MAC, n.Address
		if n.VLAN != 0 {
			vlan = fmt.Sprint(n.VLAN)
		}
		if !n.Derived {
			mac += " (set)"
		}
		if addr == "" {
			addr = "-"
		}
		var br []string
		for _, node := range cfg.Nodes {
			if b, ok := n.Bridges[node.Name]; ok {
				br = append(br, node.Name+":"+b)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Guest, n.Name, n.Network, vlan, mac, addr, n.Tap, strings.Join(br, " "))
	}
	return tw.Flush()
}

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
