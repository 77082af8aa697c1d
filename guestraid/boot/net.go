package boot

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/mhcodi/mhcodi/guestraid/channel"
)

// Network brings up lo and every NIC the host info names, found by MAC
// (the names the kernel gives them do not matter), and gives those with
// an address in the cluster file that address. A NIC without one is only
// brought up: the u-root test image runs no DHCP client. It waits up to
// wait for the NICs to appear (virtio_net probes them after the module
// loads).
func Network(h *channel.Host, wait time.Duration, log *slog.Logger) error {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	if h == nil || len(h.NICs) == 0 {
		return nil
	}
	var errs []string
	for _, nic := range h.NICs {
		l, err := linkByMAC(nic.MAC, wait)
		if err != nil {
			errs = append(errs, fmt.Sprintf("NIC %s: %v", nic.Name, err))
			continue
		}
		if nic.Address != "" {
			a, err := netlink.ParseAddr(nic.Address)
			if err != nil {
				errs = append(errs, fmt.Sprintf("NIC %s: address %q: %v", nic.Name, nic.Address, err))
				continue
			}
			if err := netlink.AddrReplace(l, a); err != nil {
				errs = append(errs, fmt.Sprintf("NIC %s: address %s: %v", nic.Name, nic.Address, err))
				continue
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Sprintf("NIC %s: up: %v", nic.Name, err))
			continue
		}
		log.Info("network interface up", "nic", nic.Name, "dev", l.Attrs().Name, "mac", nic.MAC, "address", nic.Address)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func linkByMAC(mac string, wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		links, err := netlink.LinkList()
		if err == nil {
			for _, l := range links {
				if strings.EqualFold(l.Attrs().HardwareAddr.String(), mac) {
					return l, nil
				}
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("no interface with MAC %s after %s", mac, wait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// EchoPort is where the u-root test image answers TCP with what it gets
// (the echo service, RFC 862), so a test can open a connection to a guest.
const EchoPort = 7

// Echo serves the echo service on EchoPort until ctx ends.
func Echo(ctx context.Context, log *slog.Logger) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", fmt.Sprintf(":%d", EchoPort))
	if err != nil {
		log.Warn("echo service", "err", err)
		return
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// ShellPrompt ends every answer of ConsoleShell.
const ShellPrompt = "guest# "

// ConsoleShell answers a few commands typed on the serial console, so the
// u-root test image (which has no shell) can be talked to through
// mhcodi guest console: "ip" lists the interfaces with MAC and
// addresses, "hostname" the guest's name as the host info gives it, "echo
// WORDS" says them back. It runs until in ends or ctx is done.
func ConsoleShell(ctx context.Context, in io.Reader, out io.Writer, h *channel.Host) {
	fmt.Fprint(out, "\r\n"+ShellPrompt)
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case line, ok := <-lines:
			if !ok {
				return
			}
			f := strings.Fields(strings.TrimSpace(line))
			switch {
			case len(f) == 0:
			case f[0] == "ip":
				fmt.Fprint(out, ipText())
			case f[0] == "hostname":
				name := "unknown"
				if h != nil {
					name = h.Guest
				}
				fmt.Fprintf(out, "%s\r\n", name)
			case f[0] == "echo":
				fmt.Fprintf(out, "%s\r\n", strings.Join(f[1:], " "))
			default:
				fmt.Fprintf(out, "%s: unknown command (this test image knows ip, hostname, echo)\r\n", f[0])
			}
			fmt.Fprint(out, ShellPrompt)
		}
	}
}

// ipText is one line per interface: name, MAC, state and addresses.
func ipText() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Sprintf("ip: %v\r\n", err)
	}
	sort.Slice(ifs, func(i, j int) bool { return ifs[i].Index < ifs[j].Index })
	var b strings.Builder
	for _, i := range ifs {
		state := "down"
		if i.Flags&net.FlagUp != 0 {
			state = "up"
		}
		var addrs []string
		if as, err := i.Addrs(); err == nil {
			for _, a := range as {
				addrs = append(addrs, a.String())
			}
		}
		fmt.Fprintf(&b, "%s %s %s %s\r\n", i.Name, orDash(i.HardwareAddr.String()), state, strings.Join(addrs, " "))
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Console is the guest's serial console for ConsoleShell: /dev/console,
// or nil when it cannot be opened.
func Console() *os.File {
	f, err := os.OpenFile("/dev/console", os.O_RDWR, 0)
	if err != nil {
		return nil
	}
	return f
}
