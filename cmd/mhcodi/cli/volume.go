package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/naming"
	"github.com/mhcodi/mhcodi/targetd/volume"
)

// Volume statuses, as list prints them.
const (
	statusOK        = "ok"
	statusMissing   = "missing"
	statusWrongSize = "wrong size"
	statusOrphan    = "orphan" // an mhc- volume the cluster file does not name
)

type volumeFlags struct {
	node, guest string
}

func newVolumeCmd(g *globals) *cobra.Command {
	f := &volumeFlags{}
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Create, list and remove the disk legs a node keeps",
		Long: `Works on the volumes (LVs of the node's volume group, or sparse files in its
directory) that hold the disk legs the cluster file puts on one node. Run it
on that node: --node says which one it is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.PersistentFlags().StringVar(&f.node, "node", "", "the node whose volumes to work on (required)")
	cmd.PersistentFlags().StringVar(&f.guest, "guest", "", "only the legs of this guest")
	_ = cmd.MarkPersistentFlagRequired("node")
	cmd.AddCommand(newVolumeCreateCmd(g, f), newVolumeListCmd(g, f), newVolumeRemoveCmd(g, f))
	return cmd
}

// volumeScope is what every volume subcommand starts from: the node, its
// legs (of one guest with --guest) and its backend.
type volumeScope struct {
	cfg     *configs.Config
	node    string
	guest   string
	legs    []configs.LegInfo
	backend volume.Backend
}

// loadVolumeScope loads the cluster file and picks the node's legs. A
// --guest the file does not name is an error unless allowUnknownGuest
// (remove --orphans cleans up after guests that left the file).
func loadVolumeScope(cmd *cobra.Command, g *globals, f *volumeFlags, allowUnknownGuest bool) (*volumeScope, error) {
	cfg, err := loadConfig(g.config)
	if err != nil {
		return nil, err
	}
	n, ok := cfg.Node(f.node)
	if !ok {
		var names []string
		for _, n := range cfg.Nodes {
			names = append(names, n.Name)
		}
		return nil, &exitError{ExitInvalid, fmt.Errorf("node %q is not in %s (its nodes: %s)", f.node, cfg.Path, strings.Join(names, ", "))}
	}
	if n.Role == configs.RoleWitness {
		return nil, &exitError{ExitInvalid, fmt.Errorf("node %s is a witness: it keeps no volumes", f.node)}
	}
	s := &volumeScope{cfg: cfg, node: f.node, guest: f.guest}
	for _, l := range cfg.LegsOn(f.node) {
		if f.guest == "" || l.Guest == f.guest {
			s.legs = append(s.legs, l)
		}
	}
	if f.guest != "" && len(s.legs) == 0 {
		gu, ok := cfg.Guest(f.guest)
		switch {
		case !ok && !allowUnknownGuest:
			return nil, &exitError{ExitInvalid, fmt.Errorf("guest %q is not in %s", f.guest, cfg.Path)}
		case ok:
			var where []string
			for _, d := range gu.Disks {
				where = append(where, d.Name+" on "+strings.Join(d.Legs, " and "))
			}
			return nil, &exitError{ExitInvalid, fmt.Errorf("guest %s keeps no leg on node %s (%s)", f.guest, f.node, strings.Join(where, "; "))}
		}
	}
	// Backends log at Info what they change; the CLI says that itself,
	// so only warnings reach the terminal.
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	s.backend, err = volume.New(cfg.StorageFor(f.node), volume.WithLogger(log))
	if err != nil {
		return nil, &exitError{ExitInvalid, fmt.Errorf("node %s: %w", f.node, err)}
	}
	return s, nil
}

// where names the node and its storage for messages.
func (s *volumeScope) where() string { return "node " + s.node + " (" + s.backend.Where() + ")" }

// loadConfig loads the cluster file, turning its problems into exit 1.
func loadConfig(path string) (*configs.Config, error) {
	cfg, err := configs.Load(path)
	if err == nil {
		return cfg, nil
	}
	if es, ok := configs.AsErrors(err); ok && !(len(es) == 1 && es[0].Key == "") {
		return nil, &exitError{ExitInvalid, fmt.Errorf("%s is not valid (run mhcodi config check):\n%w", path, es)}
	}
	return nil, &exitError{ExitInvalid, err}
}

func newVolumeCreateCmd(g *globals, f *volumeFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "create",
		Short: "Create every leg the node keeps (of --guest only), with its configured size",
		Long: `Creates the volume of every leg the cluster file puts on --node (only those
of --guest when given), with the disk's configured size. A volume that
already exists with that size is left alone, so running it again is safe; one
that exists with another size is an error (grow it, never shrink it).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := loadVolumeScope(cmd, g, f, false)
			if err != nil {
				return err
			}
			return runVolumeCreate(cmd.Context(), cmd.OutOrStdout(), s)
		},
	}
}

func runVolumeCreate(ctx context.Context, out io.Writer, s *volumeScope) error {
	var done, failed []string
	for _, l := range s.legs {
		created, err := s.backend.Create(ctx, l.Volume, int64(l.SizeBytes))
		switch {
		case err != nil:
			failed = append(failed, err.Error())
		case created:
			fmt.Fprintf(out, "created %s (%s) at %s\n", l.Volume, l.Size, l.Location)
			done = append(done, l.Volume+" (created)")
		default:
			fmt.Fprintf(out, "%s (%s) is already there at %s\n", l.Volume, l.Size, l.Location)
			done = append(done, l.Volume+" (already there)")
		}
	}
	if len(s.legs) == 0 {
		fmt.Fprintf(out, "%s keeps no legs: nothing to create\n", s.where())
	}
	return partialFailure("create", s, len(s.legs), done, failed)
}

// partialFailure is nil when nothing failed, else an exit-1 error that says
// which volumes were done and which were not, and why.
func partialFailure(verb string, s *volumeScope, total int, done, failed []string) error {
	if len(failed) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "could not %s %d of %d volume(s) on %s:", verb, len(failed), total, s.where())
	for _, f := range failed {
		b.WriteString("\n  not done: " + f)
	}
	if len(done) == 0 {
		b.WriteString("\n  done: none")
	} else {
		b.WriteString("\n  done: " + strings.Join(done, ", "))
	}
	return &exitError{ExitInvalid, errors.New(b.String())}
}

// volumeRow is one line of volume list.
type volumeRow struct {
	Guest           string `json:"guest,omitempty"`
	Disk            string `json:"disk,omitempty"`
	Volume          string `json:"volume"`
	Path            string `json:"path,omitempty"`
	ConfiguredSize  string `json:"configured_size,omitempty"`
	ConfiguredBytes int64  `json:"configured_bytes,omitempty"`
	ActualSize      string `json:"actual_size,omitempty"`
	ActualBytes     *int64 `json:"actual_bytes,omitempty"` // absent when missing
	Status          string `json:"status"`
}

// volumeList is volume list's JSON output.
type volumeList struct {
	Node    string      `json:"node"`
	Backend string      `json:"backend"`
	Where   string      `json:"where"`
	Volumes []volumeRow `json:"volumes"`
}

func newVolumeListCmd(g *globals, f *volumeFlags) *cobra.Command {
	var asJSON, check bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "Show the node's legs and the state of their volumes",
		Long: `Prints one row per leg the cluster file puts on --node (of --guest only):
guest, disk, volume, configured size, actual size and status, which is one of

  ok          the volume exists with the configured size
  missing     there is no volume (mhcodi volume create makes it)
  wrong size  the volume exists with another size
  orphan      an mhc- volume in the node's VG or directory that the cluster
              file does not name (a guest or disk that was removed)

With --check it exits 1 unless every row is ok.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := loadVolumeScope(cmd, g, f, false)
			if err != nil {
				return err
			}
			return runVolumeList(cmd.Context(), cmd.OutOrStdout(), s, asJSON, check)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for machines instead of a table")
	cmd.Flags().BoolVar(&check, "check", false, "exit 1 unless every volume is ok")
	return cmd
}

// volumeRows compares the node's legs with the volumes its backend has.
func volumeRows(ctx context.Context, s *volumeScope) ([]volumeRow, error) {
	have, err := s.backend.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", s.node, err)
	}
	byName := map[string]volume.Info{}
	for _, in := range have {
		byName[in.Name] = in
	}
	named := map[string]bool{}
	for _, l := range s.cfg.LegsOn(s.node) {
		named[l.Volume] = true
	}
	var rows []volumeRow
	for _, l := range s.legs {
		r := volumeRow{Guest: l.Guest, Disk: l.Disk, Volume: l.Volume, Path: l.Location,
			ConfiguredSize: l.Size.String(), ConfiguredBytes: int64(l.SizeBytes), Status: statusMissing}
		if in, ok := byName[l.Volume]; ok {
			r.Path, r.ActualSize, r.ActualBytes = in.Path, volume.FormatSize(in.Size), &in.Size
			ok, err := s.backend.SizeOK(ctx, int64(l.SizeBytes), in.Size)
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", l.Volume, err)
			}
			r.Status = statusWrongSize
			if ok {
				r.Status = statusOK
			}
		}
		rows = append(rows, r)
	}
	for _, in := range have {
		if named[in.Name] || !ofGuest(in.Name, s.guest) {
			continue
		}
		size := in.Size
		rows = append(rows, volumeRow{Volume: in.Name, Path: in.Path,
			ActualSize: volume.FormatSize(size), ActualBytes: &size, Status: statusOrphan})
	}
	return rows, nil
}

// ofGuest reports whether volume name could belong to guest ("" matches
// every name). An orphan's name may split several ways; any will do.
func ofGuest(name, guest string) bool {
	if guest == "" {
		return true
	}
	return slices.ContainsFunc(naming.VolumeNameSplits(name), func(gd [2]string) bool { return gd[0] == guest })
}

func runVolumeList(ctx context.Context, out io.Writer, s *volumeScope, asJSON, check bool) error {
	rows, err := volumeRows(ctx, s)
	if err != nil {
		return &exitError{ExitInvalid, err}
	}
	var bad []string
	count := map[string]int{}
	for _, r := range rows {
		count[r.Status]++
		if r.Status != statusOK {
			bad = append(bad, r.Volume+" "+r.Status)
		}
	}
	if asJSON {
		l := volumeList{Node: s.node, Backend: s.backend.Kind(), Where: s.backend.Where(), Volumes: rows}
		if l.Volumes == nil {
			l.Volumes = []volumeRow{}
		}
		if err := writeJSON(out, l); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "%s: %d leg(s): %d ok, %d missing, %d wrong size; %d orphan(s).\n\n", s.where(),
			len(s.legs), count[statusOK], count[statusMissing], count[statusWrongSize], count[statusOrphan])
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "GUEST\tDISK\tVOLUME\tSIZE\tACTUAL\tSTATUS")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n",
				dash(r.Guest), dash(r.Disk), r.Volume, dash(r.ConfiguredSize), dash(r.ActualSize), r.Status)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if check && len(bad) > 0 {
		return &exitError{ExitInvalid, fmt.Errorf("%d volume(s) on %s are not ok: %s", len(bad), s.where(), strings.Join(bad, ", "))}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newVolumeRemoveCmd(g *globals, f *volumeFlags) *cobra.Command {
	var all, yes, orphans bool
	cmd := &cobra.Command{
		Use:   "remove",
		Short: "Remove the legs of --guest (or of every guest, with --all) from the node",
		Long: `Removes the volumes of the legs the cluster file puts on --node for --guest;
every leg of the node at once needs --all instead. With --orphans it also
removes the mhc- volumes the cluster file no longer names (of --guest only
when given), and --guest may then name a guest the file no longer has.

This destroys the data on those volumes. Without --yes it only says what it
would remove, and exits 1. A volume that is open (served by
mhcodi-targetd) is refused. Legs whose volume is already gone are skipped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case f.guest == "" && !all:
				return fmt.Errorf("remove needs --guest G, or --all to remove every leg of node %s", f.node)
			case f.guest != "" && all:
				return errors.New("give --guest or --all, not both")
			}
			s, err := loadVolumeScope(cmd, g, f, orphans)
			if err != nil {
				return err
			}
			return runVolumeRemove(cmd.Context(), cmd.OutOrStdout(), s, orphans, yes)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "remove every leg of the node (instead of --guest)")
	cmd.Flags().BoolVar(&yes, "yes", false, "really remove; without it, only say what would be removed")
	cmd.Flags().BoolVar(&orphans, "orphans", false, "also remove volumes the cluster file does not name")
	return cmd
}

func runVolumeRemove(ctx context.Context, out io.Writer, s *volumeScope, orphans, yes bool) error {
	rows, err := volumeRows(ctx, s)
	if err != nil {
		return &exitError{ExitInvalid, err}
	}
	var doomed []volumeRow
	for _, r := range rows {
		switch {
		case r.Status == statusMissing:
			fmt.Fprintf(out, "%s is already gone\n", r.Volume)
		case r.Status == statusOrphan && !orphans:
			// Not a leg of the config: only --orphans touches it.
		default:
			doomed = append(doomed, r)
		}
	}
	if len(doomed) == 0 {
		fmt.Fprintf(out, "nothing to remove on %s\n", s.where())
		return nil
	}
	if !yes {
		fmt.Fprintf(out, "would remove from %s:\n", s.where())
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		for _, r := range doomed {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", r.Volume, r.ActualSize, r.Status, r.Path)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		return &exitError{ExitInvalid, fmt.Errorf("refusing to remove %d volume(s) without --yes: it destroys their data", len(doomed))}
	}
	var done, failed []string
	for _, r := range doomed {
		if err := s.backend.Remove(ctx, r.Volume); err != nil {
			failed = append(failed, err.Error())
			continue
		}
		fmt.Fprintf(out, "removed %s (%s) from %s\n", r.Volume, r.ActualSize, r.Path)
		done = append(done, r.Volume)
	}
	return partialFailure("remove", s, len(doomed), done, failed)
}
