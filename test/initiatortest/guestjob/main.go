// Command guestjob is the guest side of test/initiator_vm_test.go: inside
// a test/vm guest it brings up the network, starts iscsid and
// mhcodi-initiator for one node, checks the /dev/mhcodi links, and (in
// full mode) drives the I/O the host test measures while it restarts and
// kills targetd.
//
// It talks to the host with "IT-…" lines on the console (stdout) and
// reads the host's commands, one per line, from a second serial port.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/initiator"
)

func main() {
	if err := run(); err != nil {
		say("IT-FAIL %v", err)
		os.Exit(1)
	}
	say("IT-DONE")
}

func say(format string, args ...any) {
	_, _ = os.Stdout.WriteString("\n" + fmt.Sprintf(format, args...) + "\n")
}

type job struct {
	cfg      *configs.Config
	node     string
	stateDir string
	ctl      *bufio.Reader
}

func run() error {
	cfgPath := flag.String("config", "/etc/mhcodi/cluster.yaml", "cluster file")
	node := flag.String("node", "", "node this guest is")
	addr := flag.String("addr", "", "the guest's address, ip/len")
	mode := flag.String("mode", "links", "links or full")
	ctlPath := flag.String("ctl", "/dev/ttyS1", "serial port the host's commands arrive on")
	leg := flag.String("leg", "", "full mode: the remote leg to drive I/O on (guest/disk/node)")
	withISCSID := flag.Bool("iscsid", true, "start iscsid (open-iscsi); off for the netlink backend, which must be alone on the iSCSI netlink socket")
	flag.Parse()
	for _, c := range [][]string{
		{"/sbin/ip", "link", "set", "lo", "up"},
		{"/sbin/ip", "addr", "add", *addr, "dev", "eth0"},
		{"/sbin/ip", "link", "set", "eth0", "up"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	cfg, err := configs.Load(*cfgPath)
	if err != nil {
		return err
	}
	j := &job{cfg: cfg, node: *node, stateDir: "/run/mhcodi"}
	if err := os.WriteFile("/etc/iscsi/initiatorname.iscsi", []byte("InitiatorName="+cfg.InitiatorIQN(*node)+"\n"), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("/bin/mhcodi", "volume", "create", "--config", *cfgPath, "--node", *node).CombinedOutput(); err != nil {
		return fmt.Errorf("mhcodi volume create: %v: %s", err, out)
	}
	if *withISCSID {
		if err := startISCSID(); err != nil {
			return err
		}
	}
	d := exec.Command("/bin/mhcodi-initiator", "--config", *cfgPath, "--node", *node, "--state-dir", j.stateDir, "--interval", "500ms")
	d.Stdout, d.Stderr = prefixed("initiator: "), prefixed("initiator: ")
	start := time.Now()
	if err := d.Start(); err != nil {
		return fmt.Errorf("mhcodi-initiator: %w", err)
	}
	st, err := j.waitState(45*time.Second, func(l initiator.LegStatus) bool { return l.State == initiator.StateUp })
	if err != nil {
		return err
	}
	say("IT-UP after_ms=%d", time.Since(start).Milliseconds())
	links, err := j.checkLinks(st)
	if err != nil {
		return err
	}
	say("IT-LINKS %s", strings.Join(links, " "))
	if *mode != "full" {
		return nil
	}
	f, err := os.OpenFile(*ctlPath, os.O_RDONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	if err := rawTTY(int(f.Fd())); err != nil {
		return err
	}
	j.ctl = bufio.NewReader(f)
	return j.full(filepath.Join(cfg.Initiator.LinkDir, *leg), *leg)
}

func startISCSID() error {
	iscsid := exec.Command("/sbin/iscsid", "-f")
	iscsid.Stdout, iscsid.Stderr = prefixed("iscsid: "), prefixed("iscsid: ")
	if err := iscsid.Start(); err != nil {
		return fmt.Errorf("iscsid: %w", err)
	}
	// iscsiadm answers once iscsid listens on its socket.
	for i := 0; ; i++ {
		err := exec.Command("/sbin/iscsiadm", "-m", "session").Run()
		var ee *exec.ExitError
		if err == nil || errors.As(err, &ee) && ee.ExitCode() == 21 {
			break
		}
		if i > 100 {
			return fmt.Errorf("iscsid does not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// waitState waits until every leg in the state file satisfies ok.
func (j *job) waitState(timeout time.Duration, ok func(initiator.LegStatus) bool) (*initiator.StateFile, error) {
	deadline := time.Now().Add(timeout)
	var last *initiator.StateFile
	for time.Now().Before(deadline) {
		st, err := initiator.ReadState(initiator.StatePath(j.stateDir, j.node))
		if err == nil {
			last = st
			all := len(st.Legs) > 0
			for _, l := range st.Legs {
				all = all && ok(l)
			}
			if all {
				return st, nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil, fmt.Errorf("legs not in the wanted state after %s: %+v", timeout, last)
}

// checkLinks checks every leg's link: remote ones point at a block device
// whose VPD serial is the leg's; it returns the links relative to the
// link dir, sorted.
func (j *job) checkLinks(st *initiator.StateFile) ([]string, error) {
	serials := map[string]string{}
	for _, l := range j.cfg.Legs() {
		serials[l.Leg.String()] = l.Serial
	}
	var rels []string
	err := filepath.Walk(j.cfg.Initiator.LinkDir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			rel, _ := filepath.Rel(j.cfg.Initiator.LinkDir, p)
			rels = append(rels, rel)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(rels)
	for _, l := range st.Legs {
		if l.Local {
			continue
		}
		dest, err := filepath.EvalSymlinks(l.Link)
		if err != nil {
			return nil, err
		}
		var s unix.Stat_t
		if err := unix.Stat(dest, &s); err != nil || s.Mode&unix.S_IFMT != unix.S_IFBLK {
			return nil, fmt.Errorf("%s -> %s is not a block device (%v)", l.Link, dest, err)
		}
		got := initiator.Sysfs{}.SerialOf(filepath.Base(dest))
		if got != serials[l.Leg] {
			return nil, fmt.Errorf("%s -> %s: VPD serial %q, naming says %q", l.Link, dest, got, serials[l.Leg])
		}
		say("IT-SERIAL %s %s %s", l.Leg, dest, got)
	}
	return rels, nil
}

func (j *job) cmd() (string, error) {
	s, err := j.ctl.ReadString('\n')
	return strings.TrimSpace(s), err
}

func (j *job) expect(want string) error {
	got, err := j.cmd()
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("host said %q, expected %q", got, want)
	}
	return nil
}

// full: pattern through the link, then targetd restarted (I/O must
// resume, no error), then targetd killed (I/O must fail after about the
// replacement timeout), then import status.
func (j *job) full(link, leg string) error {
	dev, err := os.OpenFile(link, os.O_RDWR|unix.O_DIRECT|unix.O_SYNC, 0)
	if err != nil {
		return err
	}
	defer dev.Close()
	buf := aligned(4096)
	for i := range buf {
		buf[i] = byte(i*7 + 13)
	}
	copy(buf, "mhcodi initiator test pattern")
	const off = 1 << 20
	if _, err := dev.WriteAt(buf, off); err != nil {
		return fmt.Errorf("write through %s: %w", link, err)
	}
	sum := sha256.Sum256(buf)
	say("IT-WROTE off=%d sha=%s", off, hex.EncodeToString(sum[:]))
	if err := j.expect("pattern-ok"); err != nil {
		return err
	}

	// Restart.
	say("IT-READY restart")
	if err := j.expect("stopping"); err != nil {
		return err
	}
	t0 := time.Now()
	target := j.targetOf(leg)
	var sawDown, relogin time.Duration = -1, -1
	ioErrs, maxStall := 0, time.Duration(0)
	var resumed time.Duration = -1
	deadline := t0.Add(40 * time.Second)
	for time.Now().Before(deadline) {
		state := sessionState(target)
		now := time.Since(t0)
		if state != initiator.SessionLoggedIn && sawDown < 0 {
			sawDown = now
		}
		if state == initiator.SessionLoggedIn && sawDown >= 0 && relogin < 0 {
			relogin = now
		}
		s := time.Now()
		_, err := dev.WriteAt(buf, off)
		if err == nil {
			_, err = dev.ReadAt(buf, off)
		}
		stall := time.Since(s)
		maxStall = max(maxStall, stall)
		if err != nil {
			ioErrs++
			say("IT-IOERR restart %v", err)
		}
		if err == nil && relogin >= 0 && s.Sub(t0) >= relogin {
			resumed = time.Since(t0)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	say("IT-RESTART down_ms=%d relogin_ms=%d resumed_ms=%d max_stall_ms=%d io_errors=%d",
		sawDown.Milliseconds(), relogin.Milliseconds(), resumed.Milliseconds(), maxStall.Milliseconds(), ioErrs)
	if resumed < 0 {
		return errors.New("I/O did not resume after targetd's restart")
	}
	if _, err := j.waitState(20*time.Second, func(l initiator.LegStatus) bool { return l.State == initiator.StateUp }); err != nil {
		return err
	}

	// Kill.
	say("IT-READY kill")
	if err := j.expect("killed"); err != nil {
		return err
	}
	t0 = time.Now()
	var failed time.Duration = -1
	var ferr error
	for time.Since(t0) < 150*time.Second {
		if _, err := dev.ReadAt(buf, 0); err != nil {
			failed, ferr = time.Since(t0), err
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	say("IT-KILL fail_ms=%d err=%v", failed.Milliseconds(), ferr)
	if failed < 0 {
		return errors.New("I/O never failed after targetd was killed")
	}
	st, err := j.waitState(20*time.Second, func(l initiator.LegStatus) bool { return l.Leg != leg || l.State == initiator.StateDown })
	if err != nil {
		return err
	}
	out, err := exec.Command("/bin/mhcodi", "import", "status", "--node", j.node, "--state-dir", j.stateDir).CombinedOutput()
	say("IT-STATUS-BEGIN\n%sIT-STATUS-END exit=%v", out, err)
	if err == nil {
		return errors.New("import status exited 0 with a leg down")
	}
	for _, l := range st.Legs {
		if l.Leg == leg {
			if _, err := os.Lstat(l.Link); err != nil {
				return fmt.Errorf("the down leg's link is gone: %w", err)
			}
		}
	}
	return nil
}

func (j *job) targetOf(leg string) string {
	for _, l := range j.cfg.Legs() {
		if l.Leg.String() == leg {
			return l.TargetIQN
		}
	}
	return ""
}

func sessionState(target string) string {
	ss, _ := initiator.Sysfs{}.Sessions()
	for _, s := range ss {
		if s.Target == target {
			return s.State
		}
	}
	return ""
}

// aligned returns n bytes aligned for O_DIRECT.
func aligned(n int) []byte {
	b := make([]byte, n+4096)
	a := int(uintptr(unsafe.Pointer(&b[0])) & 4095)
	if a != 0 {
		a = 4096 - a
	}
	return b[a : a+n]
}

// rawTTY turns off echo and line editing on the host's command port.
func rawTTY(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// prefixed writes a child's output to the console line by line with a
// prefix.
func prefixed(p string) *os.File {
	r, w, err := os.Pipe()
	if err != nil {
		return os.Stderr
	}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			_, _ = os.Stdout.Write(append([]byte(p), append(bytes.TrimRight(sc.Bytes(), "\r"), '\n')...))
		}
	}()
	return w
}
