package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/internal/console"
)

func newConsoleCmd(g *globals, f *fencedFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "console GUEST",
		Short: "Attach the terminal to a guest's serial console (Ctrl-] detaches)",
		Long: `Attaches the terminal to the serial console of a guest that runs on this node
(--node), like virsh console: what the guest writes appears, what you type
goes to the guest (Ctrl-C too), and Ctrl-] detaches, leaving the guest
running. One attach at a time: a second one is refused and says who holds
the console. The console log (<run_dir>/<guest>/console.log) is written
whether or not anyone is attached.

On the node that runs the guest it attaches the guest's console socket
itself; on any other node its mhcodi-fenced relays the console from the
runner's fenced (HTTPS with the cluster's certificates). Under Xen it runs
xl console, on the node that runs the guest only.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConsole(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), g, f, args[0])
		},
	}
}

func runConsole(ctx context.Context, in io.Reader, out, errw io.Writer, g *globals, f *fencedFlags, guest string) error {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := f.client().NodeStatus(sctx)
	cancel()
	if err != nil {
		return f.unreachable(err)
	}
	var gs *hypervisor.Status
	for i := range st.Guests {
		if st.Guests[i].Name == guest {
			gs = &st.Guests[i]
		}
	}
	if gs == nil {
		return relayConsole(ctx, in, out, errw, f, guest)
	}
	if gs.ConsoleSocket == "" {
		cfg, err := configs.Load(g.config)
		if err == nil && cfg.Hypervisor.Driver == configs.DriverXen {
			fmt.Fprintf(errw, "Attaching %s's console with xl console (Ctrl-] detaches).\n", guest)
			cmd := exec.CommandContext(ctx, "xl", "console", guest)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, errw
			if err := cmd.Run(); err != nil {
				return &exitError{ExitInvalid, fmt.Errorf("xl console %s: %w", guest, err)}
			}
			return nil
		}
		return &exitError{ExitInvalid, fmt.Errorf("%s runs on %s, but its hypervisor reports no console socket", guest, f.node)}
	}
	unlock, err := console.Lock(filepath.Dir(gs.ConsoleSocket))
	if err != nil {
		return &exitError{ExitInvalid, fmt.Errorf("%s's console on %s: %w", guest, f.node, err)}
	}
	defer unlock()
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := d.DialContext(dctx, "unix", gs.ConsoleSocket)
	cancel()
	if err != nil {
		return &exitError{ExitInvalid, fmt.Errorf("%s's console on %s: %w", guest, f.node, err)}
	}
	fmt.Fprintf(errw, "Connected to %s's serial console on %s; Ctrl-] detaches (the log: %s).\r\n", guest, f.node, gs.Console)
	return attach(ctx, conn, in, out, errw, guest)
}

// relayConsole attaches the console of a guest that runs on another node
// through the local fenced, which relays it from that node's.
func relayConsole(ctx context.Context, in io.Reader, out, errw io.Writer, f *fencedFlags, guest string) error {
	cc, ok := f.client().(api.ConsoleClient)
	if !ok {
		return &exitError{ExitInvalid, fmt.Errorf("%s does not run on %s, and this build cannot relay a console", guest, f.node)}
	}
	rwc, err := cc.Console(ctx, guest)
	if err != nil {
		var se *api.StatusError
		if errors.As(err, &se) {
			return &exitError{ExitInvalid, errors.New(se.Message)}
		}
		return f.unreachable(err)
	}
	fmt.Fprintf(errw, "Connected to %s's serial console, relayed by %s's mhcodi-fenced from the node that runs it; Ctrl-] detaches.\r\n", guest, f.node)
	return attach(ctx, rwc, in, out, errw, guest)
}

// attach runs a console session on the terminal (raw mode when in is one)
// until Ctrl-] or the console's end.
func attach(ctx context.Context, conn io.ReadWriteCloser, in io.Reader, out, errw io.Writer, guest string) error {
	if fd, ok := in.(interface{ Fd() uintptr }); ok {
		restore, err := console.MakeRaw(int(fd.Fd()))
		if err != nil {
			conn.Close()
			return &exitError{ExitInvalid, err}
		}
		defer restore()
	}
	detached, err := console.Attach(ctx, conn, in, out)
	switch {
	case detached:
		fmt.Fprintf(errw, "\r\nDetached from %s's console; %s keeps running.\r\n", guest, guest)
		return nil
	case errors.Is(err, io.EOF):
		fmt.Fprintf(errw, "\r\n%s's console closed: the guest ended, or its qemu did.\r\n", guest)
		return nil
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return nil
	}
	return &exitError{ExitInvalid, err}
}
