package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// The service network (Options.ServiceNetwork): guests' NICs, apart from
// the SAN. Every storage host has its own bridge ServiceBridge (as a real
// host has, with its uplink as a port), whose uplink is a veth to a second
// bridge in the bridge namespace; a "client" namespace sits on that bridge
// too, the outside world that reaches the guests.
const (
	// ServiceNetwork is the network's name in the cluster file.
	ServiceNetwork = "svc"
	// ServiceBridge is each storage host's bridge of it.
	ServiceBridge = "br-svc"
	// serviceSwitch is the bridge in the bridge namespace that joins the
	// hosts' uplinks and the client.
	serviceSwitch = "br1"
)

// buildService makes the service network; New runs it after the SAN when
// Options.ServiceNetwork.
func (c *Cluster) buildService(ctx context.Context) error {
	br := c.bridgeNetns
	steps := [][]string{
		{"-n", br, "link", "add", serviceSwitch, "type", "bridge"},
		{"-n", br, "link", "set", serviceSwitch, "up"},
	}
	for i, h := range c.hosts {
		if h.Role != "storage" {
			continue
		}
		up := fmt.Sprintf("s%d", i)
		steps = append(steps,
			[]string{"-n", h.Netns, "link", "add", ServiceBridge, "type", "bridge"},
			[]string{"-n", h.Netns, "link", "set", ServiceBridge, "up"},
			[]string{"-n", br, "link", "add", up, "type", "veth", "peer", "name", "svc0", "netns", h.Netns},
			[]string{"-n", br, "link", "set", up, "master", serviceSwitch},
			[]string{"-n", br, "link", "set", up, "up"},
			[]string{"-n", h.Netns, "link", "set", "svc0", "master", ServiceBridge},
			[]string{"-n", h.Netns, "link", "set", "svc0", "up"},
		)
	}
	steps = append(steps,
		[]string{"netns", "add", c.clientNetns},
		[]string{"-n", c.clientNetns, "link", "set", "lo", "up"},
		[]string{"-n", br, "link", "add", "sc", "type", "veth", "peer", "name", "eth0", "netns", c.clientNetns},
		[]string{"-n", br, "link", "set", "sc", "master", serviceSwitch},
		[]string{"-n", br, "link", "set", "sc", "up"},
		[]string{"-n", c.clientNetns, "addr", "add", netip.PrefixFrom(c.ClientAddr(), c.svcSubnet.Bits()).String(), "dev", "eth0"},
		[]string{"-n", c.clientNetns, "link", "set", "eth0", "up"},
	)
	for _, s := range steps {
		if c.isClosing() {
			return errors.New("service network: torn down while being built (signal)")
		}
		if err := runIP(ctx, c.ip, s...); err != nil {
			return fmt.Errorf("service network: %w", err)
		}
	}
	return nil
}

// ServiceSubnet is the service network's subnet; zero without one.
func (c *Cluster) ServiceSubnet() netip.Prefix { return c.svcSubnet }

// ClientNetns is the client's namespace on the service network.
func (c *Cluster) ClientNetns() string { return c.clientNetns }

// ClientAddr is the client's address (.1 of the service subnet).
func (c *Cluster) ClientAddr() netip.Addr {
	a := c.svcSubnet.Addr().As4()
	a[3] = 1
	return netip.AddrFrom4(a)
}

// ServiceAddr is host number n of the service subnet with its prefix
// length, e.g. for a guest's NIC (n from 50 up stays clear of the client).
func (c *Cluster) ServiceAddr(n byte) netip.Prefix {
	a := c.svcSubnet.Addr().As4()
	a[3] = n
	return netip.PrefixFrom(netip.AddrFrom4(a), c.svcSubnet.Bits())
}

// Ping sends one ICMP echo request from the client namespace to addr
// (an address of the service network) and waits up to timeout for the
// reply; it returns the round trip.
func (c *Cluster) Ping(ctx context.Context, addr netip.Addr, timeout time.Duration) (time.Duration, error) {
	if !c.svcSubnet.Contains(addr) {
		return 0, fmt.Errorf("ping %s: not on the service network %s", addr, c.svcSubnet)
	}
	var conn *icmp.PacketConn
	err := inNetns(c.clientNetns, func() error {
		var err error
		conn, err = icmp.ListenPacket("ip4:icmp", c.ClientAddr().String())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", addr, err)
	}
	defer conn.Close()
	id := int(time.Now().UnixNano() & 0xffff)
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("mhcodi test cluster")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	start := time.Now()
	if _, err := conn.WriteTo(b, &net.IPAddr{IP: addr.AsSlice()}); err != nil {
		return 0, fmt.Errorf("ping %s: %w", addr, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return 0, fmt.Errorf("ping %s: no answer: %w", addr, err)
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && from.String() == addr.String() {
			return time.Since(start), nil
		}
	}
}

// WaitPing pings addr from the client every interval until it answers or
// ctx ends; it returns when the first answer came.
func (c *Cluster) WaitPing(ctx context.Context, addr netip.Addr) (time.Time, error) {
	var last error
	for {
		if _, err := c.Ping(ctx, addr, 500*time.Millisecond); err == nil {
			return time.Now(), nil
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// DialClient opens a TCP connection from the client namespace to addr
// (ip:port on the service network).
func (c *Cluster) DialClient(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	if !c.svcSubnet.Contains(addr.Addr()) {
		return nil, fmt.Errorf("dial %s: not on the service network %s", addr, c.svcSubnet)
	}
	return dialIn(ctx, c.clientNetns, addr.String())
}

// ClientNeighbour is the MAC the client's neighbour table has for addr
// ("" when it has none); FlushClientNeighbours empties the table, so the
// next ping learns the MAC afresh.
func (c *Cluster) ClientNeighbour(ctx context.Context, addr netip.Addr) (string, error) {
	out, err := exec.CommandContext(ctx, c.ip, "-n", c.clientNetns, "neigh", "show", addr.String()).Output()
	if err != nil {
		return "", fmt.Errorf("ip neigh show %s: %w", addr, err)
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			return f[i+1], nil
		}
	}
	return "", nil
}

// FlushClientNeighbours empties the client's neighbour table.
func (c *Cluster) FlushClientNeighbours(ctx context.Context) error {
	return runIP(ctx, c.ip, "-n", c.clientNetns, "neigh", "flush", "all")
}

// SetServiceBridge takes the host's service bridge away (present false:
// renamed, so the host has no bridge of that name) or gives it back.
func (h *Host) SetServiceBridge(ctx context.Context, present bool) error {
	from, to := ServiceBridge, ServiceBridge+"-off"
	if present {
		from, to = to, from
	}
	for _, s := range [][]string{
		{"-n", h.Netns, "link", "set", from, "down"},
		{"-n", h.Netns, "link", "set", from, "name", to},
		{"-n", h.Netns, "link", "set", to, "up"},
	} {
		if err := runIP(ctx, h.c.ip, s...); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	return nil
}
