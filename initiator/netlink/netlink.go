// Package netlink imports remote legs with the kernel's iSCSI netlink
// interface through github.com/u-root/iscsinl, for minimal hosts without
// iscsid (u-root images, appliances).
//
// iscsinl logs in with AuthMethod=None only and has no session recovery:
// when a connection dies the kernel fails I/O after recovery_tmo and the
// session stays FAILED for good. So this backend reports Recovers() false
// (the reconciler tears the dead session down and logs in anew, with
// backoff), sets recovery_tmo to the config's replacement timeout itself
// (iscsinl leaves the kernel's 120 s) and sets the NOP timers to 5/5 (its
// default is 60/60). A target that demands CHAP refuses its login; the
// refusal says to use open-iscsi. Config validation already refuses
// initiator.backend netlink together with security.chap_secrets.
package netlink

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/u-root/iscsinl"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/initiator"
)

// NOP timers, seconds: the kernel pings a connection idle for RecvTimeout
// and drops it when the answer takes longer than PingTimeout.
const (
	RecvTimeout = 5
	PingTimeout = 5
)

// Backend is the iscsinl initiator.
type Backend struct {
	sysfs initiator.Sysfs
	// mu serialises netlink use: iscsinl reads replies assuming it is the
	// only one waiting on the socket.
	mu sync.Mutex
}

// New returns the backend.
func New(sysfs initiator.Sysfs) *Backend { return &Backend{sysfs: sysfs} }

// Name implements initiator.Backend.
func (b *Backend) Name() string { return configs.InitiatorNetlink }

// Recovers implements initiator.Backend: iscsinl does not.
func (b *Backend) Recovers() bool { return false }

// Sessions implements initiator.Backend from sysfs.
func (b *Backend) Sessions(context.Context) ([]initiator.Session, error) {
	return b.sysfs.Sessions()
}

// loginStatusRE reads iscsinl's login failure "error in login response
// <class> <detail>".
var loginStatusRE = regexp.MustCompile(`error in login response (\d+) (\d+)`)

// Login implements initiator.Backend. ctx bounds nothing inside iscsinl
// (its netlink socket has 30 s timeouts); it is checked before starting.
func (b *Backend) Login(ctx context.Context, t initiator.Target) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.CHAP != nil {
		return &initiator.RefusedError{Reason: "the cluster uses CHAP, which the netlink backend cannot do; use initiator.backend open-iscsi"}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	nl, err := iscsinl.ConnectNetlink()
	if err != nil {
		return fmt.Errorf("iSCSI netlink (is iscsi_tcp loaded, and iscsid not running?): %w", err)
	}
	defer nl.Conn.Close()
	timers := func(o *iscsinl.IscsiOptions) { o.RecvTimeout, o.PingTimeout = RecvTimeout, PingTimeout }
	s := iscsinl.NewSession(nl,
		iscsinl.WithInitiator(t.Initiator),
		iscsinl.WithTarget(t.Portal.String(), t.IQN),
		iscsinl.WithDigests("None"),
		iscsinl.WithScanTimeout(5*time.Second),
		timers,
	)
	fail := func(step string, err error) error {
		if terr := s.TearDown(); terr != nil {
			err = fmt.Errorf("%w (and tearing the half-made session down: %v)", err, terr)
		}
		return fmt.Errorf("%s %s at %s: %w", step, t.IQN, t.Portal, err)
	}
	if err := s.Connect(); err != nil {
		return fail("connect to", err)
	}
	if err := s.Login(); err != nil {
		if r := refusal(err); r != nil {
			_ = s.TearDown()
			return r
		}
		return fail("login to", err)
	}
	if err := s.SetParams(); err != nil {
		return fail("setting the session parameters of", err)
	}
	if err := s.Start(); err != nil {
		return fail("starting the session of", err)
	}
	// The session's number is the kernel's; find it by target to set
	// the recovery timeout.
	ss, err := b.sysfs.Sessions()
	if err != nil {
		return err
	}
	rt := int(t.ReplacementTimeout / time.Second)
	if rt <= 0 {
		rt = int(configs.DefaultReplacementTimeout / time.Second)
	}
	for _, ks := range ss {
		if ks.Target == t.IQN && ks.State == initiator.SessionLoggedIn {
			if err := b.sysfs.SetRecoveryTimeout(ks.ID, rt); err != nil {
				return err
			}
		}
	}
	// The kernel adds the LUN's disk after a scan; the next pass finds
	// it, so a slow scan is not a failed login.
	_ = s.ReScan()
	return nil
}

// refusal turns a login status class 2 (RFC 7143 §11.13.5) into a
// RefusedError.
func refusal(err error) error {
	m := loginStatusRE.FindStringSubmatch(err.Error())
	if m == nil {
		return nil
	}
	class, _ := strconv.Atoi(m[1])
	detail, _ := strconv.Atoi(m[2])
	if class != 2 {
		return nil
	}
	switch detail {
	case 1:
		return &initiator.RefusedError{Reason: "authentication failed: the target demands CHAP, which the netlink backend cannot do; use initiator.backend open-iscsi"}
	case 2:
		return &initiator.RefusedError{Reason: "initiator not authorized by the target's ACL"}
	case 3:
		return &initiator.RefusedError{Reason: "target not found (not exported there)"}
	}
	return &initiator.RefusedError{Reason: fmt.Sprintf("initiator error, status detail %d", detail)}
}

// Logout implements initiator.Backend: stop and destroy connection 0 and
// the session.
func (b *Backend) Logout(ctx context.Context, s initiator.Session) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	nl, err := iscsinl.ConnectNetlink()
	if err != nil {
		return fmt.Errorf("iSCSI netlink: %w", err)
	}
	defer nl.Conn.Close()
	sid := uint32(s.ID)
	stopErr := nl.StopConnection(sid, 0)
	destroyErr := nl.DestroyConnection(sid, 0)
	if err := nl.DestroySession(sid); err != nil {
		return fmt.Errorf("tearing down session %d (%s): %w", s.ID, s.Target, errors.Join(err, stopErr, destroyErr))
	}
	return nil
}

var _ initiator.Backend = (*Backend)(nil)
