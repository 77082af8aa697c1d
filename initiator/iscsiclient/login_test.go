package iscsiclient

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/iscsi/text"
	"github.com/mhcodi/mhcodi/targetd/login"
)

const (
	testTarget    = "iqn.2026-11.org.mhcodi:demo.node-a.demo.root"
	testInitiator = "iqn.2026-11.org.mhcodi:demo.node-b.initiator"
)

// runLogin drives our login machine against targetd's own (pure) login
// machine, with no socket between them.
func runLogin(t *testing.T, cfg Config, dec login.Decision) (Params, login.Result, error) {
	t.Helper()
	tgt := login.New(login.Config{
		Authorize: func(in, tn string, discovery bool) (login.Decision, error) {
			assert.Equal(t, testInitiator, in)
			assert.Equal(t, testTarget, tn)
			assert.False(t, discovery)
			return dec, nil
		},
		Rand: bytes.NewReader(bytes.Repeat([]byte{7}, 4096)),
	})
	m := newLoginMachine(cfg)
	req := m.start()
	for range 20 {
		resp, err := tgt.Step(login.Request{
			Transit: req.Transit, Continue: req.Continue, CSG: req.CSG, NSG: req.NSG,
			Data: text.EncodeText(req.KVs),
		})
		if err != nil {
			require.NotZero(t, resp.StatusClass)
		}
		next, done, merr := m.step(loginResponse{Transit: resp.Transit, Continue: resp.Continue,
			CSG: resp.CSG, NSG: resp.NSG, Status: resp.Status(), Data: resp.Data})
		if merr != nil {
			return Params{}, tgt.Result(), merr
		}
		if done {
			require.True(t, tgt.Done(), "initiator thinks the login is done, the target does not")
			return m.params, tgt.Result(), nil
		}
		req = next
	}
	t.Fatal("login did not finish")
	return Params{}, login.Result{}, nil
}

func TestLoginNoAuth(t *testing.T) {
	p, res, err := runLogin(t, Config{TargetIQN: testTarget, InitiatorIQN: testInitiator}, login.Decision{Allowed: true})
	require.NoError(t, err)
	assert.False(t, res.CHAP)
	assert.False(t, p.HeaderDigest)
	assert.Equal(t, uint32(262144), p.TargetMaxRecvDataSegmentLength, "targetd declares 256 KiB")
	assert.Equal(t, uint32(1048576), p.MaxBurstLength)
	assert.Equal(t, uint32(262144), p.FirstBurstLength)
	assert.True(t, p.ImmediateData)
	assert.False(t, p.InitialR2T)
	assert.Equal(t, uint32(ourMaxRecvDataSegmentLength), res.Params.InitiatorMaxRecvDataSegmentLength)
	assert.Equal(t, uint8(0), res.Params.ErrorRecoveryLevel)
}

func TestLoginHeaderDigest(t *testing.T) {
	p, res, err := runLogin(t, Config{TargetIQN: testTarget, InitiatorIQN: testInitiator, HeaderDigest: true}, login.Decision{Allowed: true})
	require.NoError(t, err)
	assert.True(t, p.HeaderDigest)
	assert.True(t, res.Params.HeaderDigest)
	assert.False(t, res.Params.DataDigest)
}

func TestLoginCHAP(t *testing.T) {
	creds := &text.Credentials{User: testInitiator, Secret: "twelve-bytes-or-more"}
	cfg := Config{TargetIQN: testTarget, InitiatorIQN: testInitiator, CHAP: &CHAP{User: creds.User, Secret: creds.Secret}}
	_, res, err := runLogin(t, cfg, login.Decision{Allowed: true, CHAP: creds})
	require.NoError(t, err)
	assert.True(t, res.CHAP)
	assert.Equal(t, testInitiator, res.CHAPUser)
}

func TestLoginCHAPWrongSecret(t *testing.T) {
	creds := &text.Credentials{User: testInitiator, Secret: "twelve-bytes-or-more"}
	cfg := Config{TargetIQN: testTarget, InitiatorIQN: testInitiator, CHAP: &CHAP{User: creds.User, Secret: "another-secret-entirely"}}
	_, _, err := runLogin(t, cfg, login.Decision{Allowed: true, CHAP: creds})
	var le *LoginError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, text.StatusAuthFailed, le.Status)
	assert.True(t, le.Refused())
}

func TestLoginCHAPRequiredButNotConfigured(t *testing.T) {
	creds := &text.Credentials{User: testInitiator, Secret: "twelve-bytes-or-more"}
	_, _, err := runLogin(t, Config{TargetIQN: testTarget, InitiatorIQN: testInitiator}, login.Decision{Allowed: true, CHAP: creds})
	var le *LoginError
	require.ErrorAs(t, err, &le, "the target refuses AuthMethod=None when it wants CHAP")
	assert.True(t, le.Refused())
}

func TestLoginNotAllowed(t *testing.T) {
	_, _, err := runLogin(t, Config{TargetIQN: testTarget, InitiatorIQN: testInitiator}, login.Decision{})
	var le *LoginError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, text.StatusAuthorizationFailed, le.Status)
	assert.True(t, le.Refused())
	assert.Contains(t, le.Error(), "authorization failure")
}

func TestDecodeBinary(t *testing.T) {
	b, err := text.DecodeBinary("0x0aff")
	require.NoError(t, err)
	assert.Equal(t, []byte{0x0a, 0xff}, b)
	b, err = text.DecodeBinary("0bAQI=")
	require.NoError(t, err)
	assert.Equal(t, []byte{1, 2}, b)
	_, err = text.DecodeBinary("12")
	assert.Error(t, err)
}

// mutualSetup is a target asking CHAP of testInitiator and answering
// mutual challenges as testTarget.
func mutualSetup() (*text.Credentials, *text.Credentials, Config) {
	creds := &text.Credentials{User: testInitiator, Secret: "twelve-bytes-or-more"}
	tcreds := &text.Credentials{User: testTarget, Secret: "the-targets-own-secret"}
	cfg := Config{TargetIQN: testTarget, InitiatorIQN: testInitiator,
		CHAP:       &CHAP{User: creds.User, Secret: creds.Secret},
		MutualCHAP: &CHAP{User: tcreds.User, Secret: tcreds.Secret}}
	return creds, tcreds, cfg
}

func TestLoginMutualCHAP(t *testing.T) {
	creds, tcreds, cfg := mutualSetup()
	_, res, err := runLogin(t, cfg, login.Decision{Allowed: true, CHAP: creds, MutualCHAP: tcreds})
	require.NoError(t, err)
	assert.True(t, res.CHAP)
	assert.True(t, res.MutualCHAP, "the target answered our challenge")
}

// A target that knows another secret for itself (or an impostor that
// knows none) is refused by us, as a refusal that retrying will not cure.
func TestLoginMutualCHAPWrongTargetSecret(t *testing.T) {
	creds, tcreds, cfg := mutualSetup()
	tcreds.Secret = "not-what-we-know"
	_, _, err := runLogin(t, cfg, login.Decision{Allowed: true, CHAP: creds, MutualCHAP: tcreds})
	var te *TargetAuthError
	require.ErrorAs(t, err, &te)
	assert.Contains(t, err.Error(), "wrong CHAP_R")
	var r Refuser
	require.ErrorAs(t, err, &r)
	assert.True(t, r.Refused())
}

func TestLoginMutualCHAPWrongTargetName(t *testing.T) {
	creds, tcreds, cfg := mutualSetup()
	tcreds.User = "iqn.2026-11.org.mhcodi:demo.node-z.demo.root"
	_, _, err := runLogin(t, cfg, login.Decision{Allowed: true, CHAP: creds, MutualCHAP: tcreds})
	var te *TargetAuthError
	require.ErrorAs(t, err, &te)
	assert.Contains(t, err.Error(), "answered as")
}

// An impostor that asks no CHAP at all does not get past the security
// stage when we want the target to prove itself.
func TestLoginMutualCHAPTargetSkipsAuth(t *testing.T) {
	_, _, cfg := mutualSetup()
	_, _, err := runLogin(t, cfg, login.Decision{Allowed: true})
	var te *TargetAuthError
	require.ErrorAs(t, err, &te)
	assert.Contains(t, err.Error(), "without answering our challenge")
}

// A target with no mutual secret refuses our challenge itself.
func TestLoginMutualCHAPTargetHasNoSecret(t *testing.T) {
	creds, _, cfg := mutualSetup()
	_, _, err := runLogin(t, cfg, login.Decision{Allowed: true, CHAP: creds})
	var le *LoginError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, text.StatusAuthFailed, le.Status)
}

// A target's answer is checked against our challenge, not just its form:
// a machine fed a response made for another challenge fails.
func TestLoginMutualCHAPReplayedAnswer(t *testing.T) {
	_, tcreds, cfg := mutualSetup()
	cfg.Rand = bytes.NewReader(bytes.Repeat([]byte{1}, 64))
	m := newLoginMachine(cfg)
	m.start()
	m.chap = chapSentA
	kvs, err := m.chapAnswer([]text.KV{{Key: text.KeyCHAPA, Value: "5"}, {Key: text.KeyCHAPI, Value: "3"}, {Key: text.KeyCHAPC, Value: "0x" + strings.Repeat("ab", 16)}})
	require.NoError(t, err)
	i, _ := text.Lookup(kvs, text.KeyCHAPI)
	c, _ := text.Lookup(kvs, text.KeyCHAPC)
	assert.Equal(t, "1", i)
	assert.Equal(t, "0x"+strings.Repeat("01", mutualChallengeLen), c)
	m.chap = chapAnswered
	other := text.CHAPResponse(1, tcreds.Secret, bytes.Repeat([]byte{2}, mutualChallengeLen))
	err = m.verifyTarget([]text.KV{{Key: text.KeyCHAPN, Value: testTarget}, {Key: text.KeyCHAPR, Value: "0x" + hex.EncodeToString(other)}})
	assert.ErrorContains(t, err, "wrong CHAP_R")
	good := text.CHAPResponse(1, tcreds.Secret, bytes.Repeat([]byte{1}, mutualChallengeLen))
	assert.NoError(t, m.verifyTarget([]text.KV{{Key: text.KeyCHAPN, Value: testTarget}, {Key: text.KeyCHAPR, Value: "0x" + hex.EncodeToString(good)}}))
	assert.ErrorContains(t, m.verifyTarget(nil), "did not answer")
}
