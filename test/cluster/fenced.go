package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
)

// FencedName is the name the host gives its mhcodi-fenced process.
const FencedName = "fenced"

// fencedReady is how long StartFenced and Revive wait for a new fenced to
// answer on its socket: it starts its etcd member first, which may wait
// for peers, but it serves the local socket without quorum.
const fencedReady = 30 * time.Second

// ConfigPath is the host's own copy of the cluster file (see writeConfig):
// what its fenced and its CLI read.
func (h *Host) ConfigPath() string { return h.c.path("nodes", h.Name+".yaml") }

// FencedSocket is the local unix socket of the host's fenced, where its
// CLI talks to it.
func (h *Host) FencedSocket() string { return filepath.Join(h.RunDir(), "fenced.sock") }

// TLSDir holds the cluster's certificates when Options.TLS.
func (c *Cluster) TLSDir() string { return c.path("tls") }

// initTLS makes the cluster's certificates the way an operator does.
func (c *Cluster) initTLS(ctx context.Context, cfg *configs.Config) error {
	cmd := exec.CommandContext(ctx, c.Bin("mhcodi"), "cluster", "init", "--config", cfg.Path, "--out", c.TLSDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("cluster certificates: %s cluster init (make build builds it): %w: %s", c.Bin("mhcodi"), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// StartFenced starts mhcodi-fenced on the host (--witness on the witness,
// else --targetd-socket TargetdControl) with its own copy of the cluster
// file and its local socket, and returns
// once the socket answers GET /v1/node. extra are more fenced flags.
// Revive starts it again the same way.
func (h *Host) StartFenced(ctx context.Context, extra ...string) (*Proc, error) {
	bin := h.c.Bin("mhcodi-fenced")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("host %s: %w (make build builds it)", h.Name, err)
	}
	// A socket left by a fenced that was killed would answer nothing and
	// could be mistaken for the new one's until it binds.
	if err := os.Remove(h.FencedSocket()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("host %s: %w", h.Name, err)
	}
	return h.startReady(ctx, daemonSpec{Name: FencedName, Argv: h.FencedArgv(extra...), Socket: h.FencedSocket(), Wanted: true})
}

// FencedArgv is the command line StartFenced runs inside the host: the
// host's own cluster file, its local socket and its targetd's control
// socket (both under RunDir, not fenced's defaults under /run/mhcodi).
// Metrics are off: nothing scrapes them here, and one listener fewer to
// wait for.
func (h *Host) FencedArgv(extra ...string) []string {
	argv := []string{h.c.Bin("mhcodi-fenced"), "--config", h.ConfigPath(), "--node", h.Name, "--socket", h.FencedSocket(), "--metrics", "off"}
	if h.Role == configs.RoleWitness {
		argv = append(argv, "--witness")
	} else {
		argv = append(argv, "--targetd-socket", h.TargetdControl())
	}
	return append(argv, extra...)
}

// CLIArgv is the mhcodi command line CLI runs inside the host for args.
func (h *Host) CLIArgv(args ...string) []string {
	argv := append([]string{h.c.Bin("mhcodi")}, args...)
	return append(argv, "--config", h.ConfigPath(), "--node", h.Name, "--socket", h.FencedSocket())
}

// waitSocket waits until a daemon's unix socket answers GET /v1/node with
// 200, or the daemon exits.
func (h *Host) waitSocket(ctx context.Context, p *Proc, d daemonSpec) error {
	ctx, cancel := context.WithTimeout(ctx, fencedReady)
	defer cancel()
	var last error
	for {
		if last = h.c.pingSocket(ctx, d.Socket); last == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("host %s: %s exited before answering on %s (%v); its log:\n%s", h.Name, d.Name, d.Socket, p.WaitErr(), p.LogTail(4000))
		case <-ctx.Done():
			_ = p.Stop(5 * time.Second)
			return fmt.Errorf("host %s: %s did not answer on %s: %w (last try: %v); its log:\n%s", h.Name, d.Name, d.Socket, ctx.Err(), last, p.LogTail(4000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pingSocket asks GET /v1/node on a unix socket.
func (c *Cluster) pingSocket(ctx context.Context, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://fenced"+api.PathNode, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", api.PathNode, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// StopFenced stops the host's fenced (SIGTERM, SIGKILL after 10 s) and
// keeps it down. The guests it started keep running, as on a real host.
func (h *Host) StopFenced() error { return h.Stop(FencedName, 10*time.Second) }

// CLIResult is what a mhcodi command run by Host.CLI did.
type CLIResult struct {
	Code           int
	Stdout, Stderr string
	Took           time.Duration
}

// String is the command's outcome for failure messages.
func (r CLIResult) String() string {
	return fmt.Sprintf("exit %d after %.1f s\nstdout:\n%s\nstderr:\n%s", r.Code, r.Took.Seconds(), r.Stdout, r.Stderr)
}

// CLI runs `mhcodi <args> --config <ConfigPath> --node <name> --socket
// <FencedSocket>` inside the host, as its sysadmin would, and returns its
// exit code and output. The flags come after args, where both the root's
// and a subcommand's flags are accepted. The error is only for a command
// that could not run (or ctx ended); a non-zero exit is in the result.
func (h *Host) CLI(ctx context.Context, args ...string) (CLIResult, error) {
	cmd := h.Exec(ctx, h.CLIArgv(args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Its own process group, so a ^C of the test reaches only the test,
	// which tears down in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	err := cmd.Run()
	res := CLIResult{Stdout: stdout.String(), Stderr: stderr.String(), Took: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.Exited():
		res.Code = exit.ExitCode()
	case ctx.Err() != nil:
		return res, fmt.Errorf("host %s: mhcodi %s: %w", h.Name, strings.Join(args, " "), ctx.Err())
	default:
		return res, fmt.Errorf("host %s: mhcodi %s: %w", h.Name, strings.Join(args, " "), err)
	}
	return res, nil
}

// TrackGuests tracks every process named by a pid file in the host's
// guest run directories (<RunDir>/<guest>/*.pid: qemu.pid, bridge.pid),
// the guests a fenced started: qemu daemonizes and the leg bridge has its
// own session, so neither dies with fenced, and without tracking Freeze,
// Kill and teardown would miss them. A pid file whose process is gone, or
// runs outside the host's namespace (a stale file whose PID was reused),
// is skipped. It returns the processes it tracks, already tracked ones
// included; calling it again is harmless.
func (h *Host) TrackGuests() ([]*Proc, error) { return h.trackGuests(false) }

func (h *Host) trackGuests(closing bool) ([]*Proc, error) {
	found, err := guestPIDs(h.RunDir(), h.Netns)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Name, err)
	}
	var out []*Proc
	var errs []error
	for _, g := range found {
		pid := g.pid
		p, err := h.track(g.name, pid, closing)
		if err != nil {
			if _, _, serr := procStart(pid); serr != nil {
				continue // exited meanwhile
			}
			errs = append(errs, err)
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

func readPID(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 1 {
		return 0, fmt.Errorf("pid file %s: %q", file, b)
	}
	return pid, nil
}

// guestPID is a process a guest's pid file names.
type guestPID struct {
	name string // <guest>-<file name without .pid>: demo-qemu, demo-bridge
	pid  int
}

// guestPIDs are the processes named by the pid files in a host's guest
// run directories (<runDir>/<guest>/*.pid) that run in its namespace: a
// pid file whose process is gone, or runs elsewhere (a stale file whose
// PID was reused), is left out, as is one being written or removed.
func guestPIDs(runDir, netns string) ([]guestPID, error) {
	files, err := filepath.Glob(filepath.Join(runDir, "*", "*.pid"))
	if err != nil {
		return nil, err
	}
	var out []guestPID
	for _, f := range files {
		pid, err := readPID(f)
		if err != nil || !pidInNetns(netns, pid) {
			continue
		}
		guest := filepath.Base(filepath.Dir(f))
		out = append(out, guestPID{name: guest + "-" + strings.TrimSuffix(filepath.Base(f), ".pid"), pid: pid})
	}
	return out, nil
}

// pidInNetns reports whether pid runs in the named network namespace.
func pidInNetns(netns string, pid int) bool {
	var want, got syscall.Stat_t
	if syscall.Stat(filepath.Join("/run/netns", netns), &want) != nil {
		return false
	}
	if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &got) != nil {
		return false
	}
	return want.Dev == got.Dev && want.Ino == got.Ino
}

// stopFenced is teardown's first step: every fenced stops (so none starts
// or restarts a guest while the rest goes down), then whatever guests
// they left are tracked, so the general stop ends them too.
func (c *Cluster) stopFenced() []error {
	var errs []error
	for _, h := range c.hosts {
		if p := h.Proc(FencedName); p != nil {
			if err := p.Stop(5 * time.Second); err != nil {
				errs = append(errs, fmt.Errorf("host %s: %w", h.Name, err))
			}
		}
	}
	for _, h := range c.hosts {
		if _, err := h.trackGuests(true); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// StartFencedAll starts fenced on every host at once (an embedded etcd
// member waits for its peers, so one at a time would stall) and then
// waits, up to d, until every fenced says its ledger can be written: a
// fenced answers on its socket before its member has found its peers,
// and an operator waits for that too before starting guests.
func (c *Cluster) StartFencedAll(ctx context.Context, d time.Duration) error {
	hosts := c.Hosts()
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = h.StartFenced(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.WaitQuorum(ctx, d)
}

// WaitQuorum waits, up to d, until every host's fenced says its ledger
// has quorum.
func (c *Cluster) WaitQuorum(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for _, h := range c.Hosts() {
		for {
			sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := api.NewUnixClient(h.Name, h.FencedSocket()).NodeStatus(sctx)
			scancel()
			if err == nil && st.Quorum {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("host %s: its fenced's ledger has no quorum %v after it started (%v %s); its log: %s",
					h.Name, d, err, st.LedgerErr, h.LogPath(FencedName))
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}
