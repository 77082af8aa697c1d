// Command uinit is the guest side of test/vm: u-root's init runs it once
// the root file system is set up. It mounts what a job expects (/proc,
// /sys, /dev, /tmp, /run), loads the image's kernel modules with u-root's
// kmodule, runs the job described in guest.ConfigPath with the console as
// its output, prints the exit-status marker and powers the VM off.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/test/vm/internal/guest"
	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

func main() {
	nonce := cmdlineParam(guest.NonceParam)
	if nonce == "" {
		// Not started by test/vm: say so, and still power off.
		nonce = "0"
		fmt.Fprintf(os.Stderr, "uinit: kernel parameter %s is missing\n", guest.NonceParam)
	}
	status := -1
	cfg, err := setup()
	if err != nil {
		say(guest.Marker(guest.SetupFailed, nonce, oneLine(err.Error())))
	} else {
		say(guest.Marker(guest.Start, nonce, ""))
		status = runJob(cfg)
	}
	unix.Sync()
	say(guest.ExitMarker(nonce, status))
	powerOff()
}

// say prints a marker on a line of its own, in one write so that kernel
// messages cannot split it.
func say(line string) {
	_, _ = os.Stdout.WriteString("\n" + line + "\n")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func cmdlineParam(name string) string {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, name+"="); ok {
			return v
		}
	}
	return ""
}

func setup() (*guest.Config, error) {
	for _, m := range []struct{ dir, fstype string }{
		{"/proc", "proc"}, {"/sys", "sysfs"}, {"/dev", "devtmpfs"}, {"/tmp", "tmpfs"}, {"/run", "tmpfs"},
	} {
		if err := ensureMount(m.dir, m.fstype); err != nil {
			return nil, err
		}
	}
	b, err := os.ReadFile(guest.ConfigPath)
	if err != nil {
		return nil, err
	}
	var cfg guest.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", guest.ConfigPath, err)
	}
	if len(cfg.Argv) == 0 {
		return nil, fmt.Errorf("%s: no job (argv is empty)", guest.ConfigPath)
	}
	for _, d := range cfg.Dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	for _, m := range cfg.Modules {
		if err := kmodule.Probe(m, ""); err != nil {
			return nil, fmt.Errorf("loading kernel module %s: %w", m, err)
		}
	}
	if len(cfg.Modules) > 0 {
		fmt.Printf("uinit: loaded %s in %s\n", strings.Join(cfg.Modules, " "), time.Since(start).Round(time.Millisecond))
	}
	return &cfg, nil
}

// ensureMount mounts fstype on dir unless something is mounted there
// already (u-root's init mounts most of them).
func ensureMount(dir, fstype string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) == nil && unix.Stat(dir+"/..", &parent) == nil && st.Dev != parent.Dev {
		return nil
	}
	if err := unix.Mount(fstype, dir, fstype, 0, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, dir, err)
	}
	return nil
}

// runJob runs the job and returns its exit status: 128+n for a death by
// signal n, 127 if it could not start.
func runJob(cfg *guest.Config) int {
	cmd := exec.Command(cfg.Argv[0], cfg.Argv[1:]...)
	cmd.Env = append(os.Environ(), cfg.Env...)
	cmd.Dir = cfg.Dir
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "uinit: %v\n", err)
		return 127
	}
}

func powerOff() {
	// The exit marker must reach the host before the machine goes: wait
	// for the serial line to drain (TCSBRK with a non-zero argument is
	// tcdrain), then give the UART emulation a moment. Without this the
	// marker was lost on about half the runs under TCG.
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1)
	time.Sleep(500 * time.Millisecond)
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Still here: exiting makes init end, the kernel panic and (panic=-1,
	// qemu -no-reboot) qemu exit.
	fmt.Fprintf(os.Stderr, "uinit: power off: %v\n", err)
	os.Exit(1)
}
