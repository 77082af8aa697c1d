// Package cli implements the mhcodi command line: one cobra command tree,
// run with injected arguments and output so tests can drive it in-process.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/internal/version"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitInvalid = 1 // the config (or the cluster) is not as it should be
	ExitUsage   = 2 // the command line is wrong
)

// exitError carries an exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Main runs mhcodi with args and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(stderr, "mhcodi: "+ee.err.Error())
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "mhcodi: "+err.Error())
	fmt.Fprintln(stderr, "Run 'mhcodi --help' for usage.")
	return ExitUsage
}

// globals are the flags every command shares.
type globals struct {
	config string
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "mhcodi",
		Short: "Manage an mhcodi cluster: guests mirrored across hosts, one runner each",
		Long: `mhcodi manages a small cluster of Xen/KVM hosts whose guests keep every disk
mirrored (md RAID1 inside the guest) across two hosts over iSCSI, with a
fencing daemon that keeps each guest running on one host only.

Every command reads the cluster file, the same on every node.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.String(),
	}
	root.SetVersionTemplate("{{.Name}} {{.Version}} (" + runtime.Version() + ")\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	defConfig := configs.DefaultPath
	if env := os.Getenv(configs.EnvPrefix + "_CONFIG"); env != "" {
		defConfig = env
	}
	root.PersistentFlags().StringVarP(&g.config, "config", "c", defConfig,
		"cluster file (env "+configs.EnvPrefix+"_CONFIG)")
	root.AddCommand(newConfigCmd(g))
	root.AddCommand(newVolumeCmd(g))
	root.AddCommand(newImportCmd(g))
	root.AddCommand(newImageCmd(g))
	root.AddCommand(newClusterCmd(g), newGuestCmd(g), newNodeCmd(g), newStatusCmd(g), newVerifyCmd(g), newEventsCmd(g))
	return root
}
