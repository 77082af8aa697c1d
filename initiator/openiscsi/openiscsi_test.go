package openiscsi

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/initiator"
)

// script is a fake iscsiadm: it records calls and answers by the first
// matching rule.
type script struct {
	mu    sync.Mutex
	calls []string
	rules []rule
}

type rule struct {
	match  string // a substring of the command line, or "=" and all of it
	out    string
	status int
}

func (s *script) run(_ context.Context, args ...string) (string, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := strings.Join(args, " ")
	s.calls = append(s.calls, line)
	for _, r := range s.rules {
		if m, exact := strings.CutPrefix(r.match, "="); exact && line == m || !exact && strings.Contains(line, r.match) {
			return r.out, r.status, nil
		}
	}
	return "", 0, nil
}

func target() initiator.Target {
	return initiator.Target{
		IQN: "iqn.2026-11.org.mhcodi:demo.node-b.web1.root", Portal: netip.MustParseAddrPort("10.0.0.2:3260"),
		Initiator: "iqn.2026-11.org.mhcodi:demo.node-a.initiator", ReplacementTimeout: 10 * time.Second,
		CHAP:       &initiator.Credentials{User: "iqn.2026-11.org.mhcodi:demo.node-a.initiator", Secret: "secret-secret-1"},
		MutualCHAP: &initiator.Credentials{User: "iqn.2026-11.org.mhcodi:demo.node-b.web1.root", Secret: "secret-secret-2"},
	}
}

func TestLoginWritesTheNodeRecord(t *testing.T) {
	s := &script{rules: []rule{
		{match: "=-m iface -I mhcodi", out: "", status: errNoObjsFound},
		{match: "--discover", out: "10.0.0.2:3260,1 iqn.2026-11.org.mhcodi:demo.node-b.web1.root\n10.0.0.2:3260,1 iqn.2026-11.org.mhcodi:demo.node-b.db1.root\n"},
	}}
	b := NewWithRunner(s.run, initiator.Sysfs{})
	require.NoError(t, b.Login(context.Background(), target()))
	all := strings.Join(s.calls, "\n")
	for _, want := range []string{
		"-m iface -I mhcodi -o new",
		"-n iface.initiatorname -v iqn.2026-11.org.mhcodi:demo.node-a.initiator",
		"-m discoverydb -t st -p 10.0.0.2:3260 -I mhcodi -o update -n discovery.sendtargets.auth.authmethod -v CHAP",
		"-n node.session.timeo.replacement_timeout -v 10",
		"-n node.conn[0].timeo.noop_out_interval -v 5",
		"-n node.conn[0].timeo.noop_out_timeout -v 5",
		"-n node.session.auth.username_in -v iqn.2026-11.org.mhcodi:demo.node-b.web1.root",
		"-n node.startup -v manual",
		"-m node -T iqn.2026-11.org.mhcodi:demo.node-b.web1.root -p 10.0.0.2:3260 -I mhcodi --login",
	} {
		assert.Contains(t, all, want)
	}
}

func TestLoginRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules []rule
		want  string
	}{
		{"chap", []rule{{match: "--login", out: "iscsiadm: Login failed: authorization failure", status: errLoginAuth}, {match: "--discover", out: "10.0.0.2:3260,1 iqn.2026-11.org.mhcodi:demo.node-b.web1.root"}}, "CHAP authentication failed"},
		{"acl", []rule{{match: "--login", out: "iscsiadm: initiator reported error (19 - encountered non-retryable iSCSI login failure)", status: errFatalLogin}, {match: "--discover", out: "10.0.0.2:3260,1 iqn.2026-11.org.mhcodi:demo.node-b.web1.root"}}, "refused the login"},
		{"hidden", []rule{{match: "--discover", out: "10.0.0.2:3260,1 iqn.2026-11.org.mhcodi:demo.node-b.other.root"}}, "does not offer"},
		{"discovery-chap", []rule{{match: "--discover", out: "iscsiadm: Login failed to authenticate with target", status: errLoginAuth}}, "CHAP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewWithRunner((&script{rules: tc.rules}).run, initiator.Sysfs{})
			err := b.Login(context.Background(), target())
			require.Error(t, err)
			assert.True(t, initiator.IsRefused(err), "%v", err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "secret-secret")
		})
	}
	// A target that is away is not a refusal.
	b := NewWithRunner((&script{rules: []rule{{match: "--discover", out: "iscsiadm: cannot make connection to 10.0.0.2: Connection refused", status: 4}}}).run, initiator.Sysfs{})
	err := b.Login(context.Background(), target())
	require.Error(t, err)
	assert.False(t, initiator.IsRefused(err))
}

func TestRedact(t *testing.T) {
	assert.Equal(t, "-o update -n node.session.auth.password -v ***", redact([]string{"-o", "update", "-n", "node.session.auth.password", "-v", "s3cret"}))
}
