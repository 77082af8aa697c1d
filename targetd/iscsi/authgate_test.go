package iscsi

import (
	"crypto/md5"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
	"github.com/mhcodi/mhcodi/iscsi/text"
	"github.com/mhcodi/mhcodi/targetd/login"
)

const testCHAPSecret = "the-right-secret-0123"

// chapFixture is a server that requires CHAP of testInitiator, with a
// fast throttle (20 ms doubling up to 80 ms) and its log in logs.
func chapFixture(t *testing.T) (*fixture, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	f := newFixture(t, func(c *Config) {
		c.Authorize = func(initiator, target string, discovery bool) (login.Decision, error) {
			return login.Decision{Allowed: true, CHAP: &text.Credentials{User: testInitiator, Secret: testCHAPSecret}}, nil
		}
		c.AuthDelay, c.AuthMaxDelay = 20*time.Millisecond, 80*time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	return f, logs
}

// loginStep sends one Login Request in the security stage and returns the
// response's status and keys.
func (c *client) loginStep(itt uint32, transit bool, kv []text.KV) (status uint16, keys []text.KV) {
	c.t.Helper()
	var h pdu.Header
	h.SetOpcode(pdu.OpLoginReq)
	h[0] |= 0x40
	h[1] = 0<<2 | 1 // CSG security, NSG operational
	if transit {
		h[1] |= 0x80
	}
	h.SetISIDTSIH(c.isid, 0)
	h.SetITT(itt)
	h.PutU32(pdu.OffCmdSN, c.cmdSN)
	c.send(&h, text.EncodeText(kv))
	r, data := c.recv()
	require.Equal(c.t, pdu.OpLoginResp, r.Opcode())
	keys, err := text.ParseText(data)
	require.NoError(c.t, err)
	return uint16(r[36])<<8 | uint16(r[37]), keys
}

// chapLogin dials and logs in with CHAP and secret, up to the response
// that judges the CHAP answer, and returns its status.
func chapLogin(t *testing.T, f *fixture, secret string) uint16 {
	t.Helper()
	c := dial(t, f.addr)
	defer c.nc.Close()
	itt := c.nextITT()
	st, _ := c.loginStep(itt, false, []text.KV{
		{Key: "InitiatorName", Value: testInitiator}, {Key: "SessionType", Value: "Normal"},
		{Key: "TargetName", Value: testTarget}, {Key: "AuthMethod", Value: "CHAP"},
	})
	require.Zero(t, st)
	st, keys := c.loginStep(itt, false, []text.KV{{Key: "CHAP_A", Value: "5"}})
	require.Zero(t, st)
	idS, _ := text.Lookup(keys, "CHAP_I")
	chS, _ := text.Lookup(keys, "CHAP_C")
	id, err := strconv.Atoi(idS)
	require.NoError(t, err)
	ch, err := hex.DecodeString(strings.TrimPrefix(chS, "0x"))
	require.NoError(t, err)
	sum := md5.Sum(append(append([]byte{byte(id)}, secret...), ch...))
	st, _ = c.loginStep(itt, true, []text.KV{{Key: "CHAP_N", Value: testInitiator}, {Key: "CHAP_R", Value: "0x" + hex.EncodeToString(sum[:])}})
	return st
}

// TestCHAPFailuresThrottled: ten logins with a wrong secret from one
// address take at least the backoff's delays (20+40+80×7 ms), and the log
// holds two lines about them (the first failure, and a summary of the
// other nine when the server stops), not ten.
func TestCHAPFailuresThrottled(t *testing.T) {
	f, logs := chapFixture(t)
	start := time.Now()
	for range 10 {
		require.Equal(t, uint16(text.StatusAuthFailed), chapLogin(t, f, "a-wrong-secret-0123"))
	}
	elapsed := time.Since(start)
	const least = (20 + 40 + 7*80) * time.Millisecond
	assert.GreaterOrEqual(t, elapsed, least, "the failed logins were not slowed down")
	t.Logf("10 failed CHAP logins took %v (at least %v)", elapsed, least)

	require.NoError(t, f.srv.Close())
	warns := logs.Lines("level=WARN")
	assert.Len(t, warns, 2, "%q", warns)
	first := logs.Lines("level=WARN", "login failed to authenticate")
	require.Len(t, first, 1, "%q", warns)
	assert.Contains(t, first[0], "remote=127.0.0.1:")
	assert.Contains(t, first[0], "does not verify")
	sum := logs.Lines("level=WARN", "more logins failed to authenticate from this address")
	require.Len(t, sum, 1, "%q", warns)
	assert.Contains(t, sum[0], "remote=127.0.0.1 failures=9 in_last=")
}

// TestCHAPSuccessAfterFailures: the right secret still logs in after
// failures (after its wait), and forgets them: the failures not logged
// yet are summed up, and the next login is not held up.
func TestCHAPSuccessAfterFailures(t *testing.T) {
	f, logs := chapFixture(t)
	for range 3 {
		require.Equal(t, uint16(text.StatusAuthFailed), chapLogin(t, f, "a-wrong-secret-0123"))
	}
	require.Zero(t, chapLogin(t, f, testCHAPSecret))
	sum := logs.Lines("level=WARN", "more logins failed to authenticate from this address")
	require.Len(t, sum, 1)
	assert.Contains(t, sum[0], "failures=2")
	f.srv.authMu.Lock()
	wait, _ := f.srv.auth.admit(netip.MustParseAddr("127.0.0.1"), time.Now(), time.Minute)
	f.srv.authMu.Unlock()
	assert.Zero(t, wait, "the address is trusted again")
}
