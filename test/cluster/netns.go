package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns add` bind-mounts named namespaces.
const netnsDir = "/run/netns"

// ipTool is iproute2's ip; the cluster needs nothing else from the system
// to build its network.
func ipTool() (string, error) {
	for _, p := range []string{"ip", "/usr/sbin/ip", "/sbin/ip"} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", errors.New("ip (iproute2) not found: run `make deps`")
}

// runIP runs `ip args...` and returns its error with its output.
func runIP(ctx context.Context, ip string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, ip, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// netnsExists reports whether the named namespace is still mounted.
func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

// deleteNetns removes a named namespace; one already gone is not an error.
func deleteNetns(ctx context.Context, ip, name string) error {
	if !netnsExists(name) {
		return nil
	}
	if err := runIP(ctx, ip, "netns", "del", name); err != nil && netnsExists(name) {
		return err
	}
	return nil
}

// netnsPIDs lists the processes that run in the named namespace.
func netnsPIDs(ctx context.Context, ip, name string) ([]string, error) {
	out, err := exec.CommandContext(ctx, ip, "netns", "pids", name).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", name, err)
	}
	return strings.Fields(string(out)), nil
}

// inNetns runs fn with the calling goroutine's OS thread in the named
// network namespace, so sockets fn creates live there. A socket keeps the
// namespace it was created in, so a connection dialled here may be used
// from anywhere afterwards. The thread goes back to its namespace after
// fn; should that fail, the thread stays locked and the runtime discards it
// when the goroutine ends, rather than let another goroutine run in the
// wrong namespace.
func inNetns(name string, fn func() error) error {
	target, err := os.Open(filepath.Join(netnsDir, name))
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer target.Close()

	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("this thread's netns: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	defer func() {
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

// dialIn connects to addr (ip:port, no names) over TCP from inside the
// named namespace.
func dialIn(ctx context.Context, netns, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(netns, func() error {
		var d net.Dialer
		var err error
		// tcp4/tcp6 with an IP literal: one socket, created on this
		// goroutine's thread, no resolver goroutines.
		network := "tcp4"
		if strings.HasPrefix(addr, "[") {
			network = "tcp6"
		}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from netns %s: %w", addr, netns, err)
	}
	return c, nil
}

// listenIn opens a TCP listener on addr inside the named namespace.
func listenIn(ctx context.Context, netns, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetns(netns, func() error {
		var lc net.ListenConfig
		var err error
		l, err = lc.Listen(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in netns %s: %w", addr, netns, err)
	}
	return l, nil
}
