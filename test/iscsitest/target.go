package iscsitest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/internal/freeport"
)

// Target is an iSCSI target under test exporting one file as one LUN on a
// loopback portal.
type Target interface {
	// Name identifies the implementation in reports: "tgt", "gotgt", …
	Name() string
	// Portal is the "127.x.y.z:port" the target listens on.
	Portal() string
	// IQN is the exported target's name.
	IQN() string
	// LUN is the number of the LUN backed by the file (tgt: 1, since its
	// LUN 0 is a controller).
	LUN() int
	// URL is libiscsi's form of the LUN: iscsi://127.0.0.1:port/iqn/lun.
	URL() string
	// PID is the target daemon's process ID, 0 when it runs in this process.
	PID() int
	// PeakRSS is the target's peak resident set in bytes. For an in-process
	// target it is this whole process's, harness included.
	PeakRSS() (int64, error)
	// Stop stops the target (by PID for daemons) and removes its temp
	// files. It is idempotent.
	Stop() error
}

// The names iscsi-test-cu logs in with (its -i and -I defaults); an ACL
// must admit both for the tests that open a second session.
const (
	TestCUInitiator  = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
	TestCUInitiator2 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"
)

// The names the other libiscsi tools log in with by default.
const (
	PerfInitiator         = "iqn.2010-11.libiscsi:iscsi-perf"
	ReadCapacityInitiator = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-readcapacity16"
)

// QemuInitiatorName is the name QEMU's iSCSI driver logs in with when none
// is configured.
const QemuInitiatorName = "iqn.2008-11.org.linux-kvm"

// DefaultIQN is the target name starters use when the caller gives none.
const DefaultIQN = "iqn.2026-11.org.mhcodi:iscsitest.disk"

// LUNURL builds libiscsi's URL for a LUN: iscsi://portal/iqn/lun.
func LUNURL(portal, iqn string, lun int) string {
	return "iscsi://" + portal + "/" + iqn + "/" + strconv.Itoa(lun)
}

// WithCHAP returns the iscsi:// URL u with CHAP credentials in libiscsi's
// user%password@ form ('%' is literal there, not URL escaping).
func WithCHAP(u, user, password string) (string, error) {
	rest, ok := strings.CutPrefix(u, "iscsi://")
	if !ok {
		return "", fmt.Errorf("url %q: not iscsi://", u)
	}
	return "iscsi://" + user + "%" + password + "@" + rest, nil
}

// FreePortal returns "host:port" with a TCP port free on host, a loopback
// address. The port is free when this returns; callers that hand it to a
// daemon retry on a bind failure, since another process may take it first.
func FreePortal(host string) (string, error) {
	p, err := FreePortals(host, 1)
	if err != nil {
		return "", err
	}
	return p[0], nil
}

// FreePortals returns n distinct "host:port" portals free on host, a
// loopback address (see freeport.Portals).
func FreePortals(host string, n int) ([]string, error) {
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return nil, fmt.Errorf("free portal: %q is not an IPv4 loopback address; this harness only talks to 127.0.0.0/8", host)
	}
	return freeport.Portals(host, n)
}

// waitListening dials portal until it accepts a TCP connection, the
// deadline passes, or exited is closed (the daemon died).
func waitListening(ctx context.Context, portal string, exited <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp4", portal)
		if err == nil {
			return c.Close()
		}
		select {
		case <-exited:
			return errors.New("the daemon exited before listening")
		case <-ctx.Done():
			return fmt.Errorf("nothing listening on %s after %v: %w", portal, timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkLoopback refuses a portal outside 127.0.0.0/8.
func checkLoopback(portal string) error {
	host, _, err := net.SplitHostPort(portal)
	if err != nil {
		return fmt.Errorf("portal %q: %w", portal, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return fmt.Errorf("portal %q is not on 127.0.0.0/8; this harness only talks to loopback", portal)
	}
	return nil
}
