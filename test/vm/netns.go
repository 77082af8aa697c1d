package vm

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace a test made: the guest's network (a tap
// device), and the daemons it talks to, live there and nowhere else, so a
// test sends nothing to the machine's own networks. It is deleted when
// the test ends, and also on SIGINT/SIGTERM before that.
type Netns struct {
	Name string
	ip   string
}

// NewNetns creates a namespace named <prefix>-<random>, with loopback up.
func NewNetns(t testing.TB, prefix string) *Netns {
	t.Helper()
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatalf("ip (package iproute2): %v: %v", err, ErrMissing)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	n := &Netns{Name: prefix + "-" + hex.EncodeToString(b[:]), ip: ip}
	if out, err := exec.Command(ip, "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	del := func() { _ = exec.Command(ip, "netns", "del", n.Name).Run() }
	release := guardSignals(del)
	t.Cleanup(func() {
		release()
		del()
	})
	if err := n.Run(ip, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return n
}

// Command is name run inside the namespace (ip netns exec, which execs it:
// the process's PID is the command's).
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command(n.ip, append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace.
func (n *Netns) Run(name string, args ...string) error {
	out, err := n.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("in netns %s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return nil
}

// Tap creates a tap device in the namespace with addrs (CIDR) and sets it
// up; qemu (see WrapQEMU) attaches to it with
// -nic tap,ifname=<name>,script=no,downscript=no.
func (n *Netns) Tap(t testing.TB, name string, addrs ...string) string {
	t.Helper()
	steps := [][]string{{"tuntap", "add", "dev", name, "mode", "tap"}}
	for _, a := range addrs {
		steps = append(steps, []string{"addr", "add", a, "dev", name})
	}
	steps = append(steps, []string{"link", "set", name, "up"})
	for _, s := range steps {
		if err := n.Run(n.ip, s...); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// SetLink sets a link of the namespace up or down (a network cut).
func (n *Netns) SetLink(name string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return n.Run(n.ip, "link", "set", name, state)
}

// WrapQEMU makes every VM the test boots run inside the namespace: a
// qemu-system-x86_64 that execs the real one through ip netns exec is
// put first in PATH for the rest of the test (QEMU finds qemu in PATH).
// Since it execs, qemu keeps the PID Run started and kills.
func (n *Netns) WrapQEMU(t testing.TB) {
	t.Helper()
	real, err := QEMU()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\nexec %s netns exec %s %s \"$@\"\n", n.ip, n.Name, real)
	if err := os.WriteFile(filepath.Join(dir, "qemu-system-x86_64"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if s, ok := t.(interface{ Setenv(k, v string) }); ok {
		s.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		return
	}
	t.Fatal("WrapQEMU needs a *testing.T or *testing.B (it sets PATH)")
}

// Dial connects to addr (host:port) from inside the namespace: the socket
// is made on a thread switched into it, and belongs to it from then on.
func (n *Netns) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer self.Close()
	target, err := os.Open(filepath.Join("/run/netns", n.Name))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", n.Name, err)
	}
	c, err := net.DialTimeout("tcp", addr, timeout)
	if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
		// Back in the process's namespace: the thread may serve other
		// goroutines again. Otherwise it stays locked and dies with
		// this goroutine.
		runtime.UnlockOSThread()
	}
	return c, err
}
