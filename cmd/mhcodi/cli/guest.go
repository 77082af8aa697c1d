package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/fencing/api"
)

// fencedFlags say which node's fenced the command talks to: the one on
// the node it runs on, through its root-only socket.
type fencedFlags struct {
	node, socket string
	timeout      time.Duration
}

// addFencedFlags puts --node and --socket on cmd and its subcommands.
func addFencedFlags(cmd *cobra.Command, f *fencedFlags) {
	cmd.PersistentFlags().StringVar(&f.node, "node", "", "the node this command runs on (required): its mhcodi-fenced carries the command out")
	cmd.PersistentFlags().StringVar(&f.socket, "socket", "", "the fenced's socket (default /run/mhcodi/fenced-<node>.sock)")
	_ = cmd.MarkPersistentFlagRequired("node")
}

func (f *fencedFlags) socketPath() string {
	if f.socket != "" {
		return f.socket
	}
	return "/run/mhcodi/fenced-" + f.node + ".sock"
}

func (f *fencedFlags) client() api.Client { return api.NewUnixClient(f.node, f.socketPath()) }

// unreachable is the error of a fenced that did not answer.
func (f *fencedFlags) unreachable(err error) error {
	return &exitError{ExitInvalid, fmt.Errorf("cannot reach %s's mhcodi-fenced at %s: %w\n  is it running there? (systemctl status mhcodi-fenced; --socket names another socket)",
		f.node, f.socketPath(), err)}
}

func newGuestCmd(g *globals) *cobra.Command {
	f := &fencedFlags{}
	cmd := &cobra.Command{
		Use:   "guest",
		Short: "Create, start, stop, fail over and destroy guests",
		Long: `Asks the local mhcodi-fenced (--node says which node this is) to carry out an
operation on a guest, and prints its progress as it goes. A refused operation
says why and what would make it allowed; a failed one says exactly what it
changed before it stopped. Exit status 0 when done, 1 when refused or failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	addFencedFlags(cmd, f)
	cmd.PersistentFlags().DurationVar(&f.timeout, "timeout", 10*time.Minute, "give up waiting for the operation after this long (0: wait as long as it takes)")

	var to string
	var force bool
	sub := func(use, op, short, long string) *cobra.Command {
		return &cobra.Command{
			Use: use + " GUEST", Short: short, Long: long, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return runOp(cmd.Context(), cmd.OutOrStdout(), f, api.OpRequest{Op: op, Guest: args[0], To: to, Force: force})
			},
		}
	}
	create := sub("create", api.OpCreate, "Record a guest of the cluster file in the ledger, stopped",
		`Writes the guest's ledger record, stopped and without an owner. The guest must
be in the cluster file; its legs' volumes are made by mhcodi volume create.`)
	start := sub("start", api.OpStart, "Start a guest that runs nowhere",
		`Bumps the guest's epoch with --to (default: its preferred node) as owner,
fences every leg node that answers to that owner, marks the legs on nodes that
do not answer stale, and starts it. Refused when it runs anywhere, when another
node holds its lease, or when the ledger has no quorum.`)
	start.Flags().StringVar(&to, "to", "", "the node to start it on (default: its preferred node)")
	stop := sub("stop", api.OpStop, "Stop a guest (ACPI, then destroy after hypervisor.stop_timeout)",
		`Records the guest stopped in the ledger, then stops it wherever it runs.`)
	failover := sub("failover", api.OpFailover, "Move a guest to another node: claim, fence, stop, start",
		`Bumps the guest's epoch with --to (default: the other node that holds its
legs) as owner, fences its legs to it, stops it where it ran if that node
answers, and starts it on --to (a stopped guest only changes owner).

Without --force it needs the ledger's quorum, and with two nodes and no
witness the other node must answer. --force is your word that the nodes that
do not answer are down: a ledger without quorum is forked to this node, and
their legs are marked stale (resynced in full when they return).`)
	failover.Flags().StringVar(&to, "to", "", "the node to move it to (default: the other node that holds its legs)")
	failover.Flags().BoolVar(&force, "force", false, "the nodes that do not answer are really down: fork the ledger if needed and mark their legs stale")
	destroy := sub("destroy", api.OpDestroy, "Pull the plug on a guest wherever it runs, and record it stopped",
		`Destroys the guest at once on every node that runs it and records it stopped.
Works without quorum too (the ledger is then left as it was, and it says so).`)
	cmd.AddCommand(create, start, stop, failover, destroy, newConsoleCmd(g, f))
	return cmd
}

// runOp sends r to the local fenced and prints its progress lines as
// they come; a refusal or failure becomes exit 1 with the reason and the
// hint.
func runOp(ctx context.Context, out io.Writer, f *fencedFlags, r api.OpRequest) error {
	if f.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	heard := false
	err := f.client().Op(ctx, r, func(p api.Progress) {
		heard = true
		if p.Err != "" {
			return // said on stderr, with the hint
		}
		fmt.Fprintln(out, progressLine(p))
	})
	if err == nil {
		return nil
	}
	var oe *api.OpError
	if errors.As(err, &oe) {
		msg := oe.Message
		if oe.Hint != "" {
			msg += "\n  hint: " + oe.Hint
		}
		return &exitError{ExitInvalid, errors.New(msg)}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &exitError{ExitInvalid, fmt.Errorf("gave up waiting after %s: %w\n  the operation may still be running or have stopped midway: mhcodi status shows where things stand", f.timeout, err)}
	}
	if api.StatusOf(err) != 0 {
		return &exitError{ExitInvalid, err}
	}
	if heard {
		return &exitError{ExitInvalid, fmt.Errorf("%w\n  the operation may have stopped midway: mhcodi status shows where things stand", err)}
	}
	return f.unreachable(err)
}

// progressLine is "12:00:01  ledger  web1: epoch 4 → 5, owner node-b".
func progressLine(p api.Progress) string {
	return p.Time.Local().Format("15:04:05") + "  " + p.Step + "  " + p.Message
}
