// Package openiscsi imports remote legs with open-iscsi: iscsiadm drives
// iscsid, which logs in, keeps the session and brings it back after a
// target restart or a network cut (its recovery), failing I/O after the
// replacement timeout meanwhile.
//
// Every login goes through one iface record, "mhcodi", whose initiator
// name is the node's cluster IQN, so the host's own
// /etc/iscsi/initiatorname.iscsi does not matter. Node records are
// (re)written before each login with the settings mhcodi needs: CHAP,
// replacement_timeout from the config (open-iscsi's 120 s default would
// keep md waiting two minutes on a dead leg), NOP-Out every 5 s with a 5 s
// timeout, a short login timeout and one login attempt per iscsiadm call
// (the daemon does the retrying, with backoff), manual startup (the daemon
// decides what is logged in, not iscsid at boot).
package openiscsi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/initiator"
)

// Iface is the iface record mhcodi's logins use.
const Iface = "mhcodi"

// NOP-Out timers (seconds): a silent connection is probed after 5 s and
// declared dead 5 s later, so a network cut costs at most 10 s before the
// replacement timeout starts.
const (
	NopInterval  = 5
	NopTimeout   = 5
	LoginTimeout = 5
)

// iscsiadm exit statuses (open-iscsi include/iscsi_err.h).
const (
	errSessNotFound  = 2
	errIDBM          = 6
	errSessExists    = 15
	errFatalLogin    = 19
	errISCSIDNotConn = 20
	errNoObjsFound   = 21
	errLoginAuth     = 24
)

// Runner runs iscsiadm with args and returns its output and exit status;
// err is for a command that could not run at all.
type Runner func(ctx context.Context, args ...string) (out string, status int, err error)

// Backend is the open-iscsi initiator.
type Backend struct {
	run   Runner
	sysfs initiator.Sysfs
	// byPath is the udev by-path directory: links point there when udev
	// made the entry (stable across sdX renaming), else at /dev/sdX.
	byPath string
	// records serialises the iface, discovery and node record edits:
	// iscsiadm's record database is files, and two logins creating the
	// same iface at once would trip over each other. The logins
	// themselves run in parallel.
	records sync.Mutex
}

// New returns the backend running iscsiadm (found in PATH, /usr/sbin or
// /sbin).
func New(sysfs initiator.Sysfs) (*Backend, error) {
	path := ""
	for _, c := range []string{"iscsiadm", "/usr/sbin/iscsiadm", "/sbin/iscsiadm"} {
		if p, err := exec.LookPath(c); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		return nil, errors.New("iscsiadm not found (install open-iscsi)")
	}
	return NewWithRunner(ExecRunner(path), sysfs), nil
}

// NewWithRunner returns the backend with run in place of iscsiadm.
func NewWithRunner(run Runner, sysfs initiator.Sysfs) *Backend {
	return &Backend{run: run, sysfs: sysfs, byPath: "/dev/disk/by-path"}
}

// ExecRunner runs the iscsiadm at path.
func ExecRunner(path string) Runner {
	return func(ctx context.Context, args ...string) (string, int, error) {
		cmd := exec.CommandContext(ctx, path, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.WaitDelay = 5 * time.Second
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ctx.Err() == nil && ee.ExitCode() >= 0 {
			return out.String(), ee.ExitCode(), nil
		}
		if err != nil {
			return out.String(), -1, fmt.Errorf("iscsiadm %s: %w: %s", redact(args), err, strings.TrimSpace(out.String()))
		}
		return out.String(), 0, nil
	}
}

// Name implements initiator.Backend.
func (b *Backend) Name() string { return configs.InitiatorOpenISCSI }

// Recovers implements initiator.Backend: iscsid reopens lost sessions.
func (b *Backend) Recovers() bool { return true }

// Sessions implements initiator.Backend from sysfs.
func (b *Backend) Sessions(context.Context) ([]initiator.Session, error) {
	ss, err := b.sysfs.Sessions()
	if err != nil {
		return nil, err
	}
	for i := range ss {
		b.preferByPath(&ss[i])
	}
	return ss, nil
}

// preferByPath points the device at udev's by-path link when there is
// one for this LUN.
func (b *Backend) preferByPath(s *initiator.Session) {
	if s.Device.Name == "" || s.Portal == "" {
		return
	}
	p := filepath.Join(b.byPath, "ip-"+s.Portal+"-iscsi-"+s.Target+"-lun-0")
	if dest, err := filepath.EvalSymlinks(p); err == nil && filepath.Base(dest) == s.Device.Name {
		s.Device.Path = p
	}
}

// iscsiadm runs one command and turns a failure into an error that says
// which; ok lists statuses that are not failures.
func (b *Backend) iscsiadm(ctx context.Context, ok []int, args ...string) (string, error) {
	out, st, err := b.run(ctx, args...)
	if err != nil {
		return out, err
	}
	if st == 0 {
		return out, nil
	}
	for _, o := range ok {
		if st == o {
			return out, nil
		}
	}
	return out, &exitError{args: args, status: st, out: strings.TrimSpace(out)}
}

type exitError struct {
	args   []string
	status int
	out    string
}

func (e *exitError) Error() string {
	return fmt.Sprintf("iscsiadm %s: exit status %d: %s", redact(e.args), e.status, lastLine(e.out))
}

// redact hides CHAP secrets from errors and logs.
func redact(args []string) string {
	out := append([]string(nil), args...)
	for i := 1; i < len(out); i++ {
		if out[i-1] == "-v" && i >= 2 && strings.Contains(out[i-2], "password") {
			out[i] = "***"
		}
	}
	return strings.Join(out, " ")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func statusOf(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.status
	}
	return -1
}

// ensureIface creates the mhcodi iface with the node's initiator name.
func (b *Backend) ensureIface(ctx context.Context, initiatorName string) error {
	// A missing iface is "no objects found" or, from iscsiadm versions
	// that try to read its file, an idbm error.
	out, err := b.iscsiadm(ctx, []int{errNoObjsFound, errIDBM}, "-m", "iface", "-I", Iface)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "iface.iscsi_ifacename = "+Iface) {
		if _, err := b.iscsiadm(ctx, nil, "-m", "iface", "-I", Iface, "-o", "new"); err != nil {
			return err
		}
	}
	if !strings.Contains(out, "iface.initiatorname = "+initiatorName+"\n") {
		if _, err := b.iscsiadm(ctx, nil, "-m", "iface", "-I", Iface, "-o", "update", "-n", "iface.initiatorname", "-v", initiatorName); err != nil {
			return err
		}
	}
	return nil
}

// Discover asks portal for its targets (SendTargets, with CHAP when t has
// it) and records them; it returns the target names.
func (b *Backend) Discover(ctx context.Context, t initiator.Target) ([]string, error) {
	portal := t.Portal.String()
	base := []string{"-m", "discoverydb", "-t", "st", "-p", portal, "-I", Iface}
	if _, err := b.iscsiadm(ctx, nil, append(base, "-o", "new")...); err != nil {
		return nil, err
	}
	set := func(name, value string) error {
		_, err := b.iscsiadm(ctx, nil, append(base, "-o", "update", "-n", name, "-v", value)...)
		return err
	}
	auth := [][2]string{{"discovery.sendtargets.auth.authmethod", "None"}}
	if t.CHAP != nil {
		auth = [][2]string{
			{"discovery.sendtargets.auth.authmethod", "CHAP"},
			{"discovery.sendtargets.auth.username", t.CHAP.User},
			{"discovery.sendtargets.auth.password", t.CHAP.Secret},
		}
	}
	auth = append(auth, [2]string{"discovery.sendtargets.timeo.login_timeout", strconv.Itoa(LoginTimeout)})
	for _, kv := range auth {
		if err := set(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	out, err := b.iscsiadm(ctx, nil, append(base, "--discover", "-o", "new", "-o", "update")...)
	if err != nil {
		return nil, classify(err, "discovery at "+portal)
	}
	var names []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		// "10.0.0.1:3260,1 iqn.…" (iscsiadm may prefix "[iface]").
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && strings.HasPrefix(f[len(f)-1], "iqn.") {
			names = append(names, f[len(f)-1])
		}
	}
	return names, nil
}

// Login implements initiator.Backend: discovery at the owning node's SAN
// address, the node record's settings, then the login.
func (b *Backend) Login(ctx context.Context, t initiator.Target) error {
	if err := b.prepare(ctx, t); err != nil {
		return err
	}
	_, err := b.iscsiadm(ctx, []int{errSessExists}, "-m", "node", "-T", t.IQN, "-p", t.Portal.String(), "-I", Iface, "--login")
	if err != nil {
		return classify(err, "login to "+t.IQN)
	}
	return nil
}

// prepare makes the iface, discovers the portal and writes t's node
// record.
func (b *Backend) prepare(ctx context.Context, t initiator.Target) error {
	b.records.Lock()
	defer b.records.Unlock()
	if err := b.ensureIface(ctx, t.Initiator); err != nil {
		return err
	}
	names, err := b.Discover(ctx, t)
	if err != nil {
		return err
	}
	found := false
	for _, n := range names {
		found = found || strings.EqualFold(n, t.IQN)
	}
	if !found {
		return &initiator.RefusedError{Reason: fmt.Sprintf("%s does not offer %s to %s in SendTargets (not exported, or fenced to another node)", t.Portal, t.IQN, t.Initiator)}
	}
	node := []string{"-m", "node", "-T", t.IQN, "-p", t.Portal.String(), "-I", Iface}
	for _, kv := range nodeSettings(t) {
		if _, err := b.iscsiadm(ctx, nil, append(node, "-o", "update", "-n", kv[0], "-v", kv[1])...); err != nil {
			return err
		}
	}
	return nil
}

// nodeSettings are the node record's settings for t.
func nodeSettings(t initiator.Target) [][2]string {
	rt := int(t.ReplacementTimeout.Round(time.Second) / time.Second)
	if rt <= 0 {
		rt = int(configs.DefaultReplacementTimeout / time.Second)
	}
	kv := [][2]string{
		{"node.startup", "manual"},
		{"node.session.timeo.replacement_timeout", strconv.Itoa(rt)},
		{"node.conn[0].timeo.noop_out_interval", strconv.Itoa(NopInterval)},
		{"node.conn[0].timeo.noop_out_timeout", strconv.Itoa(NopTimeout)},
		{"node.conn[0].timeo.login_timeout", strconv.Itoa(LoginTimeout)},
		{"node.session.initial_login_retry_max", "1"},
	}
	if t.CHAP == nil {
		return append(kv, [2]string{"node.session.auth.authmethod", "None"})
	}
	kv = append(kv,
		[2]string{"node.session.auth.authmethod", "CHAP"},
		[2]string{"node.session.auth.username", t.CHAP.User},
		[2]string{"node.session.auth.password", t.CHAP.Secret},
	)
	if t.MutualCHAP != nil {
		kv = append(kv,
			[2]string{"node.session.auth.username_in", t.MutualCHAP.User},
			[2]string{"node.session.auth.password_in", t.MutualCHAP.Secret},
		)
	}
	return kv
}

// classify turns iscsiadm's login and discovery failures into refusals
// (status class 2 from the target: the same answer comes back until a
// config changes) or plain errors (the target is away).
func classify(err error, what string) error {
	switch statusOf(err) {
	case errLoginAuth:
		return &initiator.RefusedError{Reason: what + ": CHAP authentication failed (check security.chap_secrets on both nodes): " + lastLineOf(err)}
	case errFatalLogin:
		return &initiator.RefusedError{Reason: what + ": the target refused the login (initiator not authorized, or no such target): " + lastLineOf(err)}
	}
	return fmt.Errorf("%s: %w", what, err)
}

func lastLineOf(err error) string {
	var e *exitError
	if errors.As(err, &e) {
		return lastLine(e.out)
	}
	return err.Error()
}

// Logout implements initiator.Backend.
func (b *Backend) Logout(ctx context.Context, s initiator.Session) error {
	_, err := b.iscsiadm(ctx, []int{errSessNotFound, errNoObjsFound}, "-m", "session", "-r", strconv.Itoa(s.ID), "--logout")
	if err != nil {
		return fmt.Errorf("logout of session %d (%s): %w", s.ID, s.Target, err)
	}
	return nil
}

// Check reports what is missing for iscsiadm to work: iscsid answering.
func Check(ctx context.Context, b *Backend) error {
	_, err := b.iscsiadm(ctx, []int{errNoObjsFound}, "-m", "session")
	if statusOf(err) == errISCSIDNotConn {
		return fmt.Errorf("iscsid is not running: %w", err)
	}
	return err
}

var _ initiator.Backend = (*Backend)(nil)
