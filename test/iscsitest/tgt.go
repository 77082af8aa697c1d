package iscsitest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"
)

// TgtOptions configures StartTgt. The zero value exports the file to every
// initiator without authentication on a free port of 127.0.0.1.
type TgtOptions struct {
	// IQN is the target name; DefaultIQN if empty.
	IQN string
	// Host is the loopback address to listen on; 127.0.0.1 if empty.
	Host string
	// Initiators and InitiatorAddresses, when either is set, replace the
	// "ALL" ACL: only these initiator names / addresses (or CIDRs) may log
	// in. Remember TestCUInitiator and TestCUInitiator2 for iscsi-test-cu.
	Initiators         []string
	InitiatorAddresses []string
	// CHAP, when set, are incoming accounts: the initiator must log in with
	// one of them.
	CHAP []CHAPAccount
	// MutualCHAP, when set, is the outgoing account the target answers the
	// initiator's challenge with (mutual CHAP).
	MutualCHAP *CHAPAccount
	// TargetParams are iSCSI target parameters set with
	// `tgtadm --mode target --op update --name K --value V`, e.g.
	// "HeaderDigest": "None" to refuse digests.
	TargetParams map[string]string
	// LUParams are logical unit parameters for `--mode logicalunit --op
	// update --params`, e.g. "thin_provisioning=1".
	LUParams string
	// Debug runs tgtd with -d 1 (its log then holds every PDU).
	Debug bool
	// Logger receives progress; slog.Default() if nil.
	Logger *slog.Logger
}

// CHAPAccount is a CHAP user name and secret (tgt wants 12–16 bytes of
// secret for most initiators; it does not check).
type CHAPAccount struct{ User, Password string }

// tgtTID is the target ID every harness tgtd uses: each has a daemon of its
// own, so there is never a second target.
const tgtTID = "1"

// tgtLUN is the LUN the file is exported as: tgt makes LUN 0 a controller.
const tgtLUN = 1

// Tgt is a tgtd started by StartTgt.
type Tgt struct {
	proc     *Proc
	out      *syncbuf.Buffer
	dir      string // temp dir: control socket, lock file
	portal   string
	iqn      string
	ctlPort  string
	tgtadm   string
	log      *slog.Logger
	stopOnce onceErr
}

// StartTgt runs Debian's tgtd in the foreground with a control socket of
// its own (TGT_IPC_SOCKET in a temp dir, so it never meets the system's
// tgtd or another test's) and an iSCSI portal on a free loopback port,
// then exports file as LUN 1 of one target with tgtadm (backing store
// rdwr: plain pread/pwrite on the file). On any error nothing is left
// running.
func StartTgt(ctx context.Context, file string, o TgtOptions) (*Tgt, error) {
	tgtd, err := Tool("tgtd")
	if err != nil {
		return nil, err
	}
	tgtadm, err := Tool("tgtadm")
	if err != nil {
		return nil, err
	}
	if o.IQN == "" {
		o.IQN = DefaultIQN
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, fmt.Errorf("tgt: backing file: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("tgt: backing file: %w", err)
	}

	// The port may be taken between FreePortal and tgtd's bind by some
	// other process on this shared machine: try a few.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		t, err := startTgtd(ctx, tgtd, tgtadm, o)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if err := t.configure(ctx, abs, o); err != nil {
			return nil, errors.Join(err, t.Stop())
		}
		o.Logger.Info("tgt started", "pid", t.PID(), "portal", t.portal, "iqn", t.iqn, "file", abs)
		return t, nil
	}
	return nil, lastErr
}

func startTgtd(ctx context.Context, tgtd, tgtadm string, o TgtOptions) (*Tgt, error) {
	portal, err := FreePortal(o.Host)
	if err != nil {
		return nil, fmt.Errorf("tgt: %w", err)
	}
	_, port, _ := net.SplitHostPort(portal)
	// The control "port" only names the socket (tgtd accepts 0–32767); the
	// iSCSI port folded into that range keeps it distinct in ps output.
	n, _ := strconv.Atoi(port)
	ctlPort := strconv.Itoa(n % 32768)
	dir, err := os.MkdirTemp("", "iscsitest-tgt-")
	if err != nil {
		return nil, fmt.Errorf("tgt: temp dir: %w", err)
	}
	sock := filepath.Join(dir, "ipc")
	// tgtd binds "<TGT_IPC_SOCKET>.<control port>", a unix socket path,
	// which the kernel limits to 107 bytes.
	if len(sock)+1+len(ctlPort) > 107 {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("tgt: control socket path %s.%s is too long for a unix socket; set TMPDIR to a shorter directory", sock, ctlPort)
	}
	t := &Tgt{
		out: &syncbuf.Buffer{}, dir: dir, portal: portal, iqn: o.IQN,
		ctlPort: ctlPort, tgtadm: tgtadm, log: o.Logger,
	}
	argv := []string{tgtd, "-f", "-C", ctlPort, "--iscsi", "portal=" + portal}
	if o.Debug {
		argv = append(argv, "-d", "1")
	}
	t.proc, err = startProc(procSpec{
		name: "tgtd", argv: argv, env: []string{"TGT_IPC_SOCKET=" + sock}, dir: dir, out: t.out,
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("tgt: %w", err)
	}
	if err := t.waitReady(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("tgt pid %d on %s: %w; its log: %s", t.PID(), portal, err, tail(t.out.String(), 800)), t.Stop())
	}
	return t, nil
}

// waitReady waits for both the control socket and the iSCSI portal.
func (t *Tgt) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := t.admin(ctx, "--op", "show", "--mode", "sys"); err == nil {
			break
		} else if t.proc.Exited() {
			return fmt.Errorf("tgtd exited: %v", t.proc.WaitErr())
		} else if time.Now().After(deadline) {
			return fmt.Errorf("control socket not answering after 10s: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := waitListening(ctx, t.portal, t.proc.Done(), 10*time.Second); err != nil {
		return err
	}
	// tgtd logs a failed portal bind and keeps running; a listener on our
	// portal would then be another process's.
	if strings.Contains(t.out.String(), "Address already in use") {
		return errors.New("portal taken by another process")
	}
	return nil
}

// configure creates the target, its LUN, ACLs and accounts.
func (t *Tgt) configure(ctx context.Context, file string, o TgtOptions) error {
	lun := strconv.Itoa(tgtLUN)
	steps := [][]string{
		{"--lld", "iscsi", "--mode", "target", "--op", "new", "--tid", tgtTID, "--targetname", o.IQN},
		{"--lld", "iscsi", "--mode", "logicalunit", "--op", "new", "--tid", tgtTID, "--lun", lun,
			"--backing-store", file, "--bstype", "rdwr"},
	}
	if o.LUParams != "" {
		steps = append(steps, []string{"--lld", "iscsi", "--mode", "logicalunit", "--op", "update",
			"--tid", tgtTID, "--lun", lun, "--params", o.LUParams})
	}
	for k, v := range o.TargetParams {
		steps = append(steps, []string{"--lld", "iscsi", "--mode", "target", "--op", "update",
			"--tid", tgtTID, "--name", k, "--value", v})
	}
	if len(o.Initiators) == 0 && len(o.InitiatorAddresses) == 0 {
		steps = append(steps, []string{"--lld", "iscsi", "--mode", "target", "--op", "bind", "--tid", tgtTID, "--initiator-address", "ALL"})
	}
	for _, name := range o.Initiators {
		steps = append(steps, []string{"--lld", "iscsi", "--mode", "target", "--op", "bind", "--tid", tgtTID, "--initiator-name", name})
	}
	for _, addr := range o.InitiatorAddresses {
		steps = append(steps, []string{"--lld", "iscsi", "--mode", "target", "--op", "bind", "--tid", tgtTID, "--initiator-address", addr})
	}
	for _, a := range o.CHAP {
		steps = append(steps,
			[]string{"--lld", "iscsi", "--mode", "account", "--op", "new", "--user", a.User, "--password", a.Password},
			[]string{"--lld", "iscsi", "--mode", "account", "--op", "bind", "--tid", tgtTID, "--user", a.User})
	}
	if a := o.MutualCHAP; a != nil {
		steps = append(steps,
			[]string{"--lld", "iscsi", "--mode", "account", "--op", "new", "--user", a.User, "--password", a.Password},
			[]string{"--lld", "iscsi", "--mode", "account", "--op", "bind", "--tid", tgtTID, "--user", a.User, "--outgoing"})
	}
	for _, args := range steps {
		if _, err := t.admin(ctx, args...); err != nil {
			return fmt.Errorf("tgt: configure: %w", err)
		}
	}
	return nil
}

// admin runs tgtadm against this tgtd's control socket.
func (t *Tgt) admin(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	argv := append([]string{"-C", t.ctlPort}, args...)
	cmd := exec.CommandContext(ctx, t.tgtadm, argv...)
	cmd.Env = append(os.Environ(), "TGT_IPC_SOCKET="+filepath.Join(t.dir, "ipc"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("tgtadm %s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Admin runs tgtadm with args against this tgtd (the -C option and the
// control socket are added), e.g. to show sessions. It returns the output.
func (t *Tgt) Admin(ctx context.Context, args ...string) (string, error) {
	return t.admin(ctx, args...)
}

// Name implements Target.
func (t *Tgt) Name() string { return "tgt" }

// Portal implements Target.
func (t *Tgt) Portal() string { return t.portal }

// IQN implements Target.
func (t *Tgt) IQN() string { return t.iqn }

// LUN implements Target: 1, because tgt's LUN 0 is its controller.
func (t *Tgt) LUN() int { return tgtLUN }

// URL implements Target.
func (t *Tgt) URL() string { return LUNURL(t.portal, t.iqn, tgtLUN) }

// PID implements Target.
func (t *Tgt) PID() int { return t.proc.PID() }

// PeakRSS implements Target: tgtd's VmHWM.
func (t *Tgt) PeakRSS() (int64, error) { return t.proc.PeakRSS() }

// Log is what tgtd wrote to stdout and stderr so far.
func (t *Tgt) Log() string { return t.out.String() }

// Stop kills tgtd by PID and removes its temp dir. tgtd 1.0.85 catches
// SIGTERM but does not exit while it has targets (and `tgtadm --op delete
// --mode system` is refused), so it gets SIGKILL straight away; that loses
// nothing, since the rdwr backing store pwrite()s every write to the file
// before answering.
func (t *Tgt) Stop() error {
	return t.stopOnce.do(func() error {
		err := t.proc.Stop(0)
		if err == nil {
			t.log.Info("tgt stopped", "pid", t.PID())
		}
		return errors.Join(err, removeDir(t.dir))
	})
}
