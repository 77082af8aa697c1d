// Package boot is what guestraid does as the init of a u-root guest image
// (u-root's init is PID 1 and runs `guestraid boot` as uinit): mount the
// pseudo file systems, load kernel modules, run the guest's commands, and
// shut down cleanly on the ACPI power button or SIGTERM.
package boot

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

// Mounts mounts /proc, /sys, /dev (devtmpfs), /tmp and /run unless
// something is mounted there already (u-root's init mounts some).
func Mounts() error {
	for _, m := range []struct{ dir, fstype string }{
		{"/proc", "proc"}, {"/sys", "sysfs"}, {"/dev", "devtmpfs"}, {"/tmp", "tmpfs"}, {"/run", "tmpfs"},
	} {
		if err := ensureMount(m.dir, m.fstype); err != nil {
			return err
		}
	}
	return nil
}

func ensureMount(dir, fstype string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) == nil && unix.Stat(filepath.Join(dir, ".."), &parent) == nil && st.Dev != parent.Dev {
		return nil // a mount point already
	}
	if err := unix.Mount(fstype, dir, fstype, 0, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, dir, err)
	}
	return nil
}

// LoadModules loads the modules named in file (one per line, # comments),
// with their dependencies, through u-root's kmodule; a missing file is no
// error. Each failure is logged and the rest still load: a module missing
// from the image must not keep the guest from booting what it can.
func LoadModules(file string, log *slog.Logger) error {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var errs []error
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, _, _ := strings.Cut(sc.Text(), "#")
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if err := kmodule.Probe(name, ""); err != nil {
			log.Warn("loading kernel module", "module", name, "err", err)
			errs = append(errs, fmt.Errorf("module %s: %w", name, err))
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", file, err))
	}
	return errors.Join(errs...)
}

// Input event constants (linux/input-event-codes.h).
const (
	evKey    = 0x01
	keyPower = 116
)

// inputEventSize is sizeof(struct input_event) on 64-bit Linux: a
// struct timeval (16 bytes), type and code (u16 each), value (s32).
const inputEventSize = 24

// PowerButton reports (once, by closing the returned channel) an ACPI
// power button press: EV_KEY KEY_POWER with value 1 on any
// /dev/input/event* (the button and evdev modules make them). qemu's
// system_powerdown and Xen's shutdown press it.
func PowerButton(ctx context.Context, log *slog.Logger) <-chan struct{} {
	pressed := make(chan struct{})
	var once sync.Once
	paths, _ := filepath.Glob("/dev/input/event*")
	if len(paths) == 0 {
		log.Info("no /dev/input/event* devices: the power button is not watched (modules button and evdev)")
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			log.Warn("power button", "dev", p, "err", err)
			continue
		}
		go func() {
			<-ctx.Done()
			f.Close()
		}()
		go func() {
			buf := make([]byte, inputEventSize)
			for {
				if _, err := io.ReadFull(f, buf); err != nil {
					return
				}
				typ := binary.LittleEndian.Uint16(buf[16:])
				code := binary.LittleEndian.Uint16(buf[18:])
				val := int32(binary.LittleEndian.Uint32(buf[20:]))
				if typ == evKey && code == keyPower && val == 1 {
					once.Do(func() { close(pressed) })
					return
				}
			}
		}()
	}
	return pressed
}

// Children are the guest's commands, run after assembly.
type Children struct {
	log   *slog.Logger
	mu    sync.Mutex
	procs []*exec.Cmd
	wg    sync.WaitGroup
}

// NewChildren starts nothing yet.
func NewChildren(log *slog.Logger) *Children { return &Children{log: log} }

// Start runs argv with the console as stdout and stderr.
func (c *Children) Start(argv []string) error {
	if len(argv) == 0 {
		return errors.New("empty command")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %q: %w", strings.Join(argv, " "), err)
	}
	c.mu.Lock()
	c.procs = append(c.procs, cmd)
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := cmd.Wait()
		c.log.Info("command ended", "cmd", strings.Join(argv, " "), "pid", cmd.Process.Pid, "status", exitText(err))
	}()
	c.log.Info("command started", "cmd", strings.Join(argv, " "), "pid", cmd.Process.Pid)
	return nil
}

func exitText(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// Stop sends SIGTERM to every child still running (its process group)
// and waits up to grace for them, then SIGKILLs what is left.
func (c *Children) Stop(grace time.Duration) {
	c.mu.Lock()
	procs := append([]*exec.Cmd(nil), c.procs...)
	c.mu.Unlock()
	for _, p := range procs {
		// The group of a child that already ended is gone: ESRCH.
		_ = unix.Kill(-p.Process.Pid, unix.SIGTERM)
	}
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		c.log.Warn("commands still running after SIGTERM; killing them", "grace", grace)
		for _, p := range procs {
			_ = unix.Kill(-p.Process.Pid, unix.SIGKILL)
		}
		<-done
	}
}

// PowerOff syncs and powers the machine off; it returns only on failure.
func PowerOff() error {
	unix.Sync()
	fmt.Fprintln(os.Stdout, "guestraid: powering off")
	return unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
