// Package freeport picks TCP ports for tests that hand a port to a daemon
// they start. Such a port is only free when it is picked; the daemon binds
// it later. Two things can take it in between, and both happened on CI:
// the kernel hands the same port to two binds to port 0 in a row, and
// another process's outgoing connection is given it as its source port.
// Portals avoids both: its ports are distinct, held together until all
// are chosen, and come from below the ephemeral range, which the kernel
// never gives to outgoing connections.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Portals returns n distinct "host:port" addresses whose TCP ports were
// free on host when it returned. Callers that start a daemon on one still
// retry on a bind failure: a test of another package may pick the same
// port in the same instant.
func Portals(host string, n int) ([]string, error) {
	lo, _ := EphemeralRange()
	span := lo - minPort
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	maxTries := 20*n + 100
	for tries := 0; len(out) < n && tries < maxTries; tries++ {
		port := 0 // the range was configured away: let the kernel choose
		if span > 100 {
			port = minPort + rand.IntN(span)
		}
		l, err := net.Listen("tcp4", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	if len(out) < n {
		return nil, fmt.Errorf("free ports on %s: found %d of %d in %d tries", host, len(out), n, maxTries)
	}
	return out, nil
}

// Port is Portals for one port, returned as a number.
func Port(host string) (int, error) {
	ps, err := Portals(host, 1)
	if err != nil {
		return 0, err
	}
	_, p, _ := net.SplitHostPort(ps[0])
	return strconv.Atoi(p)
}

// minPort is the lowest port handed out: above the well-known and the
// registered ports daemons commonly use (iSCSI 3260, etcd 2379/2380,
// metrics 9595, …).
const minPort = 10000

// EphemeralRange reads net.ipv4.ip_local_port_range, or returns Linux's
// default 32768–60999 when it cannot.
func EphemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	l, err1 := strconv.Atoi(f[0])
	h, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || l <= 0 || h < l {
		return lo, hi
	}
	return l, h
}
