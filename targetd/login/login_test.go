package login

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/iscsi/text"
)

const (
	openISCSIName = "iqn.2004-10.com.ubuntu:01:b5e6f5c4d3a2"
	libiscsiName  = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
	targetIQN     = "iqn.2026-11.org.mhcodi:prod.node-b.web1.root"
	chapUser      = "iqn.2026-11.org.mhcodi:prod.node-a.initiator"
	chapSecret    = "initiator-secret-0123"
	mutualUser    = targetIQN
	mutualSecret  = "target-secret-456789"
)

var isid = [6]byte{0x00, 0x02, 0x3d, 0x00, 0x00, 0x01}

// counterRand yields 0, 1, 2, ... so CHAP identifiers and challenges are
// predictable: the identifier is 0 and the challenge 01 02 ... 20.
type counterRand struct{ n byte }

func (r *counterRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.n
		r.n++
	}
	return len(p), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("entropy exhausted") }

type authCall struct {
	initiator, target string
	discovery         bool
}

// newLogin returns a Login whose Authorize always answers d and records
// its calls.
func newLogin(d Decision, lim Limits) (*Login, *[]authCall) {
	var calls []authCall
	l := New(Config{
		Limits: lim,
		Authorize: func(i, tg string, disc bool) (Decision, error) {
			calls = append(calls, authCall{i, tg, disc})
			return d, nil
		},
		Rand: &counterRand{},
	})
	return l, &calls
}

var (
	allow     = Decision{Allowed: true}
	allowCHAP = Decision{Allowed: true, CHAP: &text.Credentials{User: chapUser, Secret: chapSecret}}
	allowBoth = Decision{Allowed: true, CHAP: &text.Credentials{User: chapUser, Secret: chapSecret}, MutualCHAP: &text.Credentials{User: mutualUser, Secret: mutualSecret}}
)

// step runs one request that must succeed and returns the response and its
// parsed text.
func step(t *testing.T, l *Login, req Request) (Response, []text.KV) {
	t.Helper()
	resp, err := l.Step(req)
	require.NoError(t, err)
	require.Equal(t, text.StatusSuccess, resp.Status())
	require.False(t, resp.Continue && resp.Transit, "C and T together")
	kvs, err := text.ParseText(resp.Data)
	require.NoError(t, err)
	return resp, kvs
}

// stepFail runs one request that must be rejected with status want.
func stepFail(t *testing.T, l *Login, req Request, want text.Status) *Error {
	t.Helper()
	resp, err := l.Step(req)
	require.Error(t, err)
	var le *Error
	require.True(t, errors.As(err, &le), "error %v is not an *Error", err)
	assert.Equal(t, want, le.Status, "error: %v", err)
	assert.Equal(t, want, resp.Status())
	assert.False(t, resp.Transit)
	assert.Empty(t, resp.Data)
	return le
}

func kv(s string) text.KV {
	k, v, _ := strings.Cut(s, "=")
	return text.KV{Key: k, Value: v}
}

func kvList(pairs ...string) []text.KV {
	out := make([]text.KV, len(pairs))
	for i, p := range pairs {
		out[i] = kv(p)
	}
	return out
}

func cat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// The exact keys open-iscsi sends (usr/login.c: iscsi_make_login_pdu and
// fill_op_params_text, in that order, default iscsid.conf values).
var (
	openISCSIIdentity = []string{
		"InitiatorName=" + openISCSIName,
		"InitiatorAlias=node-a",
		"TargetName=" + targetIQN,
		"SessionType=Normal",
	}
	openISCSIOps = []string{
		"HeaderDigest=None", "DataDigest=None",
		"DefaultTime2Wait=2", "DefaultTime2Retain=0",
		"IFMarker=No", "OFMarker=No", "ErrorRecoveryLevel=0",
		"InitialR2T=No", "ImmediateData=Yes", "MaxBurstLength=16776192", "FirstBurstLength=262144",
		"MaxOutstandingR2T=1", "MaxConnections=1", "DataPDUInOrder=Yes", "DataSequenceInOrder=Yes",
		"MaxRecvDataSegmentLength=262144",
	}
	// What the target answers to openISCSIOps with default Limits.
	openISCSIOpsAnswer = []string{
		"HeaderDigest=None", "DataDigest=None",
		"DefaultTime2Wait=2", "DefaultTime2Retain=0",
		"IFMarker=Reject", "OFMarker=Reject", "ErrorRecoveryLevel=0",
		"InitialR2T=No", "ImmediateData=Yes", "MaxBurstLength=1048576", "FirstBurstLength=262144",
		"MaxOutstandingR2T=1", "MaxConnections=1", "DataPDUInOrder=Yes", "DataSequenceInOrder=Yes",
	}
)

// openISCSIAccepts checks a response the way open-iscsi's
// iscsi_process_login_response does: in the security stage only
// TargetAlias, TargetAddress, TargetPortalGroupTag and the auth keys may
// appear, in the operational stage only the keys of
// get_op_params_text_keys, with the values it insists on.
func openISCSIAccepts(t *testing.T, stage uint8, kvs []text.KV) {
	t.Helper()
	sec := map[string]bool{text.KeyTargetAlias: true, text.KeyTargetAddress: true, text.KeyTargetPortalGroupTag: true,
		text.KeyAuthMethod: true, text.KeyCHAPA: true, text.KeyCHAPN: true, text.KeyCHAPR: true, text.KeyCHAPI: true, text.KeyCHAPC: true}
	op := map[string]bool{text.KeyTargetAlias: true, text.KeyTargetAddress: true, text.KeyTargetPortalGroupTag: true,
		text.KeyInitialR2T: true, text.KeyImmediateData: true, text.KeyMaxRecvDataSegmentLength: true, text.KeyFirstBurstLength: true,
		text.KeyMaxBurstLength: true, text.KeyHeaderDigest: true, text.KeyDataDigest: true, text.KeyDefaultTime2Wait: true,
		text.KeyDefaultTime2Retain: true, text.KeyOFMarker: true, text.KeyOFMarkInt: true, text.KeyIFMarker: true, text.KeyIFMarkInt: true,
		text.KeyDataPDUInOrder: true, text.KeyDataSequenceInOrder: true, text.KeyMaxOutstandingR2T: true, text.KeyMaxConnections: true,
		text.KeyErrorRecoveryLevel: true, text.KeyRDMAExtensions: true}
	for _, kv := range kvs {
		if stage == text.StageSecurity {
			assert.True(t, sec[kv.Key], "open-iscsi refuses %s in the security stage", kv.Key)
			continue
		}
		assert.True(t, op[kv.Key], "open-iscsi refuses %s in the operational stage", kv.Key)
		switch kv.Key {
		case text.KeyHeaderDigest, text.KeyDataDigest:
			assert.Contains(t, []string{"None", "CRC32C"}, kv.Value, kv.Key)
		case text.KeyMaxOutstandingR2T, text.KeyMaxConnections:
			assert.Equal(t, "1", kv.Value, kv.Key)
		case text.KeyErrorRecoveryLevel:
			assert.Equal(t, "0", kv.Value, kv.Key)
		}
	}
}

// hexUpper encodes like libiscsi's i2h: "0x" and upper-case digits.
func hexUpper(b []byte) string { return "0x" + strings.ToUpper(hex.EncodeToString(b)) }

// initiatorCHAP computes an initiator's answer to the target's challenge.
func initiatorCHAP(t *testing.T, kvs []text.KV, secret string) string {
	t.Helper()
	idS, ok := text.Lookup(kvs, text.KeyCHAPI)
	require.True(t, ok, "no CHAP_I in %v", kvs)
	cS, ok := text.Lookup(kvs, text.KeyCHAPC)
	require.True(t, ok, "no CHAP_C in %v", kvs)
	require.True(t, strings.HasPrefix(cS, "0x"), "libiscsi only parses 0x challenges")
	id, err := strconv.Atoi(idS)
	require.NoError(t, err)
	ch, err := hex.DecodeString(cS[2:])
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(ch), 16, "challenge too short")
	sum := md5.Sum(append(append([]byte{byte(id)}, secret...), ch...))
	return hexUpper(sum[:])
}

func TestOpenISCSINormalLogin(t *testing.T) {
	l, calls := newLogin(allow, Limits{})
	resp, kvs := step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid,
		Data: textData(cat(openISCSIIdentity, openISCSIOps)...)})
	assert.Equal(t, Response{Transit: true, CSG: 1, NSG: 3, Data: resp.Data}, resp)
	assert.Equal(t, kvList(cat(openISCSIOpsAnswer, []string{"TargetPortalGroupTag=1", "MaxRecvDataSegmentLength=262144"})...), kvs)
	openISCSIAccepts(t, text.StageOperational, kvs)
	assert.Equal(t, []authCall{{openISCSIName, targetIQN, false}}, *calls)

	require.True(t, l.Done())
	r := l.Result()
	assert.Equal(t, Result{
		Params: Params{
			InitiatorMaxRecvDataSegmentLength: 262144, TargetMaxRecvDataSegmentLength: 262144,
			MaxBurstLength: 1048576, FirstBurstLength: 262144, ImmediateData: true, InitialR2T: false,
			MaxOutstandingR2T: 1, DataPDUInOrder: true, DataSequenceInOrder: true,
			DefaultTime2Wait: 2, DefaultTime2Retain: 0, ErrorRecoveryLevel: 0, MaxConnections: 1,
		},
		InitiatorName: openISCSIName, InitiatorAlias: "node-a", TargetName: targetIQN,
		SessionType: SessionNormal, ISID: isid, Leading: true,
	}, r)

	// The login is over: more requests are refused.
	stepFail(t, l, Request{CSG: 3, ISID: isid}, text.StatusInitiatorError)
}

func TestOpenISCSIDiscoveryAndSendTargets(t *testing.T) {
	l, calls := newLogin(allow, Limits{})
	_, kvs := step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, Data: textData(
		"InitiatorName="+openISCSIName, "InitiatorAlias=node-a", "SessionType=Discovery",
		"HeaderDigest=None", "DataDigest=None", "DefaultTime2Wait=2", "DefaultTime2Retain=0",
		"IFMarker=No", "OFMarker=No", "ErrorRecoveryLevel=0", "MaxRecvDataSegmentLength=32768")})
	assert.Equal(t, kvList("HeaderDigest=None", "DataDigest=None", "DefaultTime2Wait=2", "DefaultTime2Retain=0",
		"IFMarker=Reject", "OFMarker=Reject", "ErrorRecoveryLevel=0", "MaxRecvDataSegmentLength=262144"), kvs,
		"no TargetPortalGroupTag in discovery sessions")
	openISCSIAccepts(t, text.StageOperational, kvs)
	assert.Equal(t, []authCall{{openISCSIName, "", true}}, *calls)
	require.True(t, l.Done())
	r := l.Result()
	assert.Equal(t, SessionDiscovery, r.SessionType)
	assert.Empty(t, r.TargetName)
	assert.EqualValues(t, 32768, r.Params.InitiatorMaxRecvDataSegmentLength)

	// Full feature phase: SendTargets=All.
	req, err := text.ParseText(textData("SendTargets=All"))
	require.NoError(t, err)
	answers, err := NegotiateText(&r.Params, req)
	require.NoError(t, err)
	assert.Empty(t, answers)
	v, _ := text.Lookup(req, text.KeySendTargets)
	targets := []TargetInfo{
		{Name: targetIQN, Portals: []Portal{{"192.0.2.2:3260", 1}, {"[2001:db8::2]:3260", 1}}},
		{Name: "iqn.2026-11.org.mhcodi:prod.node-b.web1.data", Portals: []Portal{{"192.0.2.2:3260", 1}}},
	}
	st := SendTargets(v, targets)
	assert.Equal(t, kvList(
		"TargetName="+targetIQN, "TargetAddress=192.0.2.2:3260,1", "TargetAddress=[2001:db8::2]:3260,1",
		"TargetName=iqn.2026-11.org.mhcodi:prod.node-b.web1.data", "TargetAddress=192.0.2.2:3260,1"), st)
	back, err := ParseSendTargets(text.EncodeText(st))
	require.NoError(t, err)
	assert.Equal(t, targets, back)
}

// TestOpenISCSICHAP follows open-iscsi's auth.c: one-way CHAP offers
// "AuthMethod=CHAP,None" with T=1 (acl_set_auth_method_valid, auth_rmt 0);
// mutual CHAP offers "AuthMethod=CHAP" with T=0 and a 16-byte challenge.
func TestOpenISCSICHAP(t *testing.T) {
	tests := []struct {
		name     string
		decision Decision
		offer    string
		firstT   bool
		mutual   bool
	}{
		{"one-way", allowCHAP, "CHAP,None", true, false},
		{"one-way, CHAP only", allowCHAP, "CHAP", true, false},
		{"mutual", allowBoth, "CHAP", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := newLogin(tc.decision, Limits{})
			first := Request{Transit: tc.firstT, CSG: 0, ISID: isid,
				Data: textData(cat(openISCSIIdentity, []string{"AuthMethod=" + tc.offer})...)}
			if tc.firstT {
				first.NSG = 1
			}
			resp, kvs := step(t, l, first)
			assert.Equal(t, Response{CSG: 0, Data: resp.Data}, resp, "no transit before CHAP")
			assert.Equal(t, kvList("AuthMethod=CHAP", "TargetPortalGroupTag=1"), kvs)
			openISCSIAccepts(t, text.StageSecurity, kvs)

			resp, kvs = step(t, l, Request{CSG: 0, NSG: 0, ISID: isid, Data: textData("CHAP_A=5")})
			assert.False(t, resp.Transit)
			assert.Equal(t, kvList("CHAP_A=5", "CHAP_I=0", "CHAP_C=0x"+hex.EncodeToString(seq(1, 32))), kvs)
			openISCSIAccepts(t, text.StageSecurity, kvs)

			// open-iscsi writes binary values in lower-case hex.
			answer := strings.ToLower(initiatorCHAP(t, kvs, chapSecret))
			third := []string{"CHAP_N=" + chapUser, "CHAP_R=" + answer}
			mch := seq(0x40, 16)
			if tc.mutual {
				third = append(third, "CHAP_I=77", "CHAP_C=0x"+hex.EncodeToString(mch))
			}
			resp, kvs = step(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid, Data: textData(third...)})
			assert.Equal(t, Response{Transit: true, CSG: 0, NSG: 1, Data: resp.Data}, resp)
			if tc.mutual {
				want := md5.Sum(append(append([]byte{77}, mutualSecret...), mch...))
				assert.Equal(t, kvList("CHAP_N="+mutualUser, "CHAP_R=0x"+hex.EncodeToString(want[:])), kvs)
				openISCSIAccepts(t, text.StageSecurity, kvs)
			} else {
				assert.Empty(t, kvs)
			}
			assert.False(t, l.Done())

			resp, kvs = step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, Data: textData(openISCSIOps...)})
			assert.True(t, resp.Transit)
			assert.Equal(t, kvList(cat(openISCSIOpsAnswer, []string{"MaxRecvDataSegmentLength=262144"})...), kvs)
			openISCSIAccepts(t, text.StageOperational, kvs)
			require.True(t, l.Done())
			r := l.Result()
			assert.True(t, r.CHAP)
			assert.Equal(t, tc.mutual, r.MutualCHAP)
			assert.Equal(t, chapUser, r.CHAPUser)
		})
	}
}

// seq returns the bytes from, from+1, ..., n of them.
// textData builds a text data segment from "key=value" strings.
func textData(pairs ...string) []byte {
	var b []byte
	for _, p := range pairs {
		b = append(b, p...)
		b = append(b, 0)
	}
	return b
}

func seq(from byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

// The exact keys libiscsi sends (lib/login.c: iscsi_login_async, in that
// order, with its default settings as QEMU uses them).
var (
	libiscsiIdentity = []string{
		"InitiatorName=" + libiscsiName,
		"TargetName=" + targetIQN,
		"SessionType=Normal",
	}
	libiscsiOps = []string{
		"HeaderDigest=None,CRC32C", "DataDigest=None", "InitialR2T=No", "ImmediateData=Yes",
		"MaxBurstLength=16776192", "FirstBurstLength=262144", "DefaultTime2Wait=2", "DefaultTime2Retain=0",
		"MaxOutstandingR2T=1", "ErrorRecoveryLevel=0", "IFMarker=No", "OFMarker=No", "MaxConnections=1",
		"MaxRecvDataSegmentLength=262144", "DataPDUInOrder=Yes", "DataSequenceInOrder=Yes",
	}
	libiscsiOpsAnswer = []string{
		"HeaderDigest=None", "DataDigest=None", "InitialR2T=No", "ImmediateData=Yes",
		"MaxBurstLength=1048576", "FirstBurstLength=262144", "DefaultTime2Wait=2", "DefaultTime2Retain=0",
		"MaxOutstandingR2T=1", "ErrorRecoveryLevel=0", "IFMarker=Reject", "OFMarker=Reject", "MaxConnections=1",
		"DataPDUInOrder=Yes", "DataSequenceInOrder=Yes",
	}
)

func TestLibiscsiNormalLogin(t *testing.T) {
	l, _ := newLogin(allow, Limits{})
	// libiscsi and its header (InitialR2T=No etc.) in one PDU, starting in
	// the operational stage when no CHAP user is set.
	resp, kvs := step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid,
		Data: textData(cat(libiscsiIdentity, libiscsiOps)...)})
	assert.True(t, resp.Transit)
	assert.Equal(t, kvList(cat(libiscsiOpsAnswer, []string{"TargetPortalGroupTag=1", "MaxRecvDataSegmentLength=262144"})...), kvs)
	require.True(t, l.Done())
	assert.False(t, l.Result().Params.HeaderDigest)
}

func TestLibiscsiCHAPWithoutCHAPConfigured(t *testing.T) {
	// libiscsi with a user set offers CHAP,None; a target with no CHAP for
	// this initiator answers None and lets it through.
	l, _ := newLogin(allow, Limits{})
	resp, kvs := step(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid,
		Data: textData(cat(libiscsiIdentity, []string{"AuthMethod=CHAP,None"})...)})
	assert.Equal(t, Response{Transit: true, CSG: 0, NSG: 1, Data: resp.Data}, resp)
	assert.Equal(t, kvList("AuthMethod=None", "TargetPortalGroupTag=1"), kvs)
	// libiscsi repeats its identity keys in the operational stage.
	resp, _ = step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid,
		Data: textData(cat(libiscsiIdentity, libiscsiOps)...)})
	assert.True(t, resp.Transit)
	assert.True(t, l.Done())
	assert.False(t, l.Result().CHAP)
}

func TestLibiscsiMutualCHAP(t *testing.T) {
	l, _ := newLogin(allowBoth, Limits{})
	resp, kvs := step(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid,
		Data: textData(cat(libiscsiIdentity, []string{"AuthMethod=CHAP,None"})...)})
	assert.False(t, resp.Transit)
	assert.Equal(t, kvList("AuthMethod=CHAP", "TargetPortalGroupTag=1"), kvs)

	// SELECT_ALGORITHM: T=0, NSG=1.
	resp, kvs = step(t, l, Request{CSG: 0, NSG: 1, ISID: isid, Data: textData("CHAP_A=5")})
	assert.False(t, resp.Transit)
	answer := initiatorCHAP(t, kvs, chapSecret)

	// SEND_RESPONSE: libiscsi's answer in upper-case hex, and its own
	// 32-byte challenge with identifier 1.
	mch := seq(0xa0, 32)
	resp, kvs = step(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid,
		Data: textData("CHAP_N="+chapUser, "CHAP_R="+answer, "CHAP_I=1", "CHAP_C="+hexUpper(mch))})
	assert.Equal(t, Response{Transit: true, CSG: 0, NSG: 1, Data: resp.Data}, resp,
		"libiscsi requires T=1 with the mutual answer")
	want := md5.Sum(append(append([]byte{1}, mutualSecret...), mch...))
	require.Equal(t, kvList("CHAP_N="+mutualUser, "CHAP_R=0x"+hex.EncodeToString(want[:])), kvs)
	// libiscsi's check: "0x" and exactly 32 hex digits.
	r, _ := text.Lookup(kvs, text.KeyCHAPR)
	assert.Len(t, r, 9+32-len("CHAP_R="))

	// Operational stage: libiscsi sends its identity keys again.
	resp, kvs = step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid,
		Data: textData(cat(libiscsiIdentity, libiscsiOps)...)})
	assert.Equal(t, Response{Transit: true, CSG: 1, NSG: 3, Data: resp.Data}, resp)
	assert.Equal(t, kvList(cat(libiscsiOpsAnswer, []string{"MaxRecvDataSegmentLength=262144"})...), kvs)
	require.True(t, l.Done())
	res := l.Result()
	assert.True(t, res.CHAP)
	assert.True(t, res.MutualCHAP)
}

func TestLibiscsiDiscoveryIrrelevantKeys(t *testing.T) {
	l, calls := newLogin(allow, Limits{})
	_, kvs := step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid,
		Data: textData(cat([]string{"InitiatorName=" + libiscsiName, "SessionType=Discovery"}, libiscsiOps)...)})
	assert.Equal(t, kvList(
		"HeaderDigest=None", "DataDigest=None", "InitialR2T=Irrelevant", "ImmediateData=Irrelevant",
		"MaxBurstLength=Irrelevant", "FirstBurstLength=Irrelevant", "DefaultTime2Wait=2", "DefaultTime2Retain=0",
		"MaxOutstandingR2T=Irrelevant", "ErrorRecoveryLevel=0", "IFMarker=Reject", "OFMarker=Reject",
		"MaxConnections=Irrelevant", "DataPDUInOrder=Irrelevant", "DataSequenceInOrder=Irrelevant",
		"MaxRecvDataSegmentLength=262144"), kvs)
	assert.Equal(t, []authCall{{libiscsiName, "", true}}, *calls)
	assert.True(t, l.Done())
}

func TestSecurityStageStraightToFullFeature(t *testing.T) {
	// A discovery login may go from security to full feature phase; the
	// target never declares its MaxRecvDataSegmentLength, so 8192 holds.
	l, _ := newLogin(allow, Limits{})
	resp, kvs := step(t, l, Request{Transit: true, CSG: 0, NSG: 3, ISID: isid,
		Data: textData("InitiatorName="+openISCSIName, "SessionType=Discovery", "AuthMethod=None")})
	assert.Equal(t, Response{Transit: true, CSG: 0, NSG: 3, Data: resp.Data}, resp)
	assert.Equal(t, kvList("AuthMethod=None"), kvs)
	require.True(t, l.Done())
	assert.Equal(t, DefaultParams(), l.Result().Params)
}

func TestOperationalKeysInSecurityStage(t *testing.T) {
	// Without CHAP the initiator is as authenticated as it will be: the
	// keys are answered in the security stage.
	l, _ := newLogin(allow, Limits{})
	_, kvs := step(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid,
		Data: textData(cat(openISCSIIdentity, []string{"AuthMethod=None", "MaxBurstLength=65536"})...)})
	assert.Equal(t, kvList("AuthMethod=None", "MaxBurstLength=65536", "TargetPortalGroupTag=1"), kvs)

	// With CHAP pending they are refused.
	l, _ = newLogin(allowCHAP, Limits{})
	stepFail(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid,
		Data: textData(cat(openISCSIIdentity, []string{"AuthMethod=CHAP", "MaxBurstLength=65536"})...)}, text.StatusInitiatorError)

	// Unknown keys are answered NotUnderstood even before authentication.
	l, _ = newLogin(allowCHAP, Limits{})
	_, kvs = step(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid,
		Data: textData(cat(openISCSIIdentity, []string{"AuthMethod=CHAP", "X-com.example.Foo=1"})...)})
	assert.Equal(t, kvList("AuthMethod=CHAP", "X-com.example.Foo=NotUnderstood", "TargetPortalGroupTag=1"), kvs)
}

func TestTransitOnlyWhenAsked(t *testing.T) {
	l, _ := newLogin(allow, Limits{})
	resp, kvs := step(t, l, Request{CSG: 1, NSG: 1, ISID: isid,
		Data: textData(cat(openISCSIIdentity, []string{"MaxBurstLength=65536"})...)})
	assert.False(t, resp.Transit, "T=0 request, T=0 response")
	assert.Equal(t, kvList("MaxBurstLength=65536", "TargetPortalGroupTag=1", "MaxRecvDataSegmentLength=262144"), kvs)
	resp, kvs = step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid})
	assert.Equal(t, Response{Transit: true, CSG: 1, NSG: 3}, resp)
	assert.Empty(t, kvs, "declarations are made once")
	assert.True(t, l.Done())
}

func TestSecurityStageWaitsForAuthMethod(t *testing.T) {
	// T=0 and no AuthMethod yet: the target waits.
	l, _ := newLogin(allowCHAP, Limits{})
	resp, kvs := step(t, l, Request{CSG: 0, ISID: isid, Data: textData(openISCSIIdentity...)})
	assert.False(t, resp.Transit)
	assert.Equal(t, kvList("TargetPortalGroupTag=1"), kvs)
	_, kvs = step(t, l, Request{CSG: 0, ISID: isid, Data: textData("AuthMethod=CHAP")})
	assert.Equal(t, kvList("AuthMethod=CHAP"), kvs)
	// Still no CHAP_A, T=0: wait again.
	resp, _ = step(t, l, Request{CSG: 0, ISID: isid})
	assert.False(t, resp.Transit)
	_, kvs = step(t, l, Request{CSG: 0, ISID: isid, Data: textData("CHAP_A=7,5")})
	assert.Equal(t, "5", kvs[0].Value, "MD5 picked out of the list")
}

func TestNonLeadingLogin(t *testing.T) {
	l, _ := newLogin(allow, Limits{})
	_, kvs := step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, TSIH: 7, CID: 1,
		Data: textData(cat(openISCSIIdentity, []string{"HeaderDigest=CRC32C", "MaxBurstLength=65536", "MaxRecvDataSegmentLength=65536"})...)})
	assert.Equal(t, kvList("HeaderDigest=CRC32C", "MaxBurstLength=Irrelevant", "TargetPortalGroupTag=1", "MaxRecvDataSegmentLength=262144"), kvs)
	r := l.Result()
	assert.False(t, r.Leading)
	assert.EqualValues(t, 7, r.TSIH)
	assert.EqualValues(t, 1, r.CID)
	assert.True(t, r.Params.HeaderDigest)
	assert.EqualValues(t, 65536, r.Params.InitiatorMaxRecvDataSegmentLength)
}

func TestMultiPDURequest(t *testing.T) {
	full := textData(cat(openISCSIIdentity, openISCSIOps)...)
	// Cut in the middle of a key and in the middle of a value.
	cut1 := strings.Index(string(full), "TargetName") + 4
	cut2 := strings.Index(string(full), "MaxBurstLength=") + 17
	l, calls := newLogin(allow, Limits{})
	for _, part := range [][]byte{full[:cut1], full[cut1:cut2]} {
		resp, kvs := step(t, l, Request{Continue: true, CSG: 1, NSG: 3, ISID: isid, Data: part})
		assert.Equal(t, Response{CSG: 1}, resp, "an empty acknowledgement")
		assert.Empty(t, kvs)
	}
	assert.Empty(t, *calls, "nothing is decided before the text is complete")
	resp, kvs := step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, Data: full[cut2:]})
	assert.True(t, resp.Transit)
	assert.Equal(t, kvList(cat(openISCSIOpsAnswer, []string{"TargetPortalGroupTag=1", "MaxRecvDataSegmentLength=262144"})...), kvs)
	assert.True(t, l.Done())
}

func TestMultiPDUResponse(t *testing.T) {
	// 300 unknown keys: the NotUnderstood answers exceed 8192 bytes.
	var ext []string
	var want []text.KV
	for i := range 300 {
		k := fmt.Sprintf("X-org.example.vendor.key%03d", i)
		ext = append(ext, k+"=1")
		want = append(want, text.KV{Key: k, Value: "NotUnderstood"})
	}
	want = append(want, kvList("TargetPortalGroupTag=1", "MaxRecvDataSegmentLength=262144")...)

	l, _ := newLogin(allow, Limits{})
	var got []byte
	resp, err := l.Step(Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, Data: textData(cat(openISCSIIdentity, ext)...)})
	require.NoError(t, err)
	pieces := 1
	for resp.Continue {
		assert.False(t, resp.Transit, "C=1 responses never transit")
		assert.LessOrEqual(t, len(resp.Data), 8192)
		got = append(got, resp.Data...)
		// The initiator acknowledges each piece with an empty request.
		resp, err = l.Step(Request{Transit: true, CSG: 1, NSG: 3, ISID: isid})
		require.NoError(t, err)
		pieces++
	}
	got = append(got, resp.Data...)
	assert.Equal(t, 2, pieces)
	assert.True(t, resp.Transit)
	assert.EqualValues(t, 3, resp.NSG)
	kvs, err := text.ParseText(got)
	require.NoError(t, err)
	assert.Equal(t, want, kvs)
	assert.True(t, l.Done())
}

func TestResponseSplitForSmallInitiatorSegments(t *testing.T) {
	// An initiator declaring 512 bytes gets 512-byte login responses, and
	// the final piece transits only if its request asks to.
	var ext []string
	for i := range 10 {
		ext = append(ext, fmt.Sprintf("X-%s%02d=1", strings.Repeat("k", 58), i))
	}
	l, _ := newLogin(allow, Limits{})
	resp, err := l.Step(Request{Transit: true, CSG: 1, NSG: 3, ISID: isid,
		Data: textData(cat(openISCSIIdentity, openISCSIOps[:len(openISCSIOps)-1], []string{"MaxRecvDataSegmentLength=512"}, ext)...)})
	require.NoError(t, err)
	require.True(t, resp.Continue)
	var got []byte
	for resp.Continue {
		assert.LessOrEqual(t, len(resp.Data), 512)
		got = append(got, resp.Data...)
		resp, err = l.Step(Request{CSG: 1, ISID: isid})
		require.NoError(t, err)
	}
	got = append(got, resp.Data...)
	assert.False(t, resp.Transit, "the last request had T=0")
	assert.False(t, l.Done())
	_, err = text.ParseText(got)
	require.NoError(t, err)
	resp, err = l.Step(Request{Transit: true, CSG: 1, NSG: 3, ISID: isid})
	require.NoError(t, err)
	assert.True(t, resp.Transit)
	assert.True(t, l.Done())
}

func TestDataWhileResponseContinues(t *testing.T) {
	var ext []string
	for i := range 300 {
		ext = append(ext, fmt.Sprintf("X-org.example.vendor.key%03d=1", i))
	}
	l, _ := newLogin(allow, Limits{})
	resp, err := l.Step(Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, Data: textData(cat(openISCSIIdentity, ext)...)})
	require.NoError(t, err)
	require.True(t, resp.Continue)
	stepFail(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, Data: textData("MaxBurstLength=512")}, text.StatusInitiatorError)
}

func TestCHAPFailures(t *testing.T) {
	// start runs the exchange up to the challenge and returns the
	// initiator's correct answer.
	start := func(t *testing.T, d Decision) (*Login, string) {
		l, _ := newLogin(d, Limits{})
		step(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid,
			Data: textData(cat(openISCSIIdentity, []string{"AuthMethod=CHAP"})...)})
		_, kvs := step(t, l, Request{CSG: 0, ISID: isid, Data: textData("CHAP_A=5")})
		return l, initiatorCHAP(t, kvs, chapSecret)
	}
	ourChallenge := hexUpper(seq(1, 32))
	tests := []struct {
		name     string
		decision Decision
		data     func(answer string) []byte
		want     text.Status
	}{
		{"wrong secret", allowCHAP, func(string) []byte {
			return textData("CHAP_N="+chapUser, "CHAP_R=0x00112233445566778899aabbccddeeff")
		}, text.StatusAuthFailed},
		{"wrong user", allowCHAP, func(a string) []byte { return textData("CHAP_N=someone-else", "CHAP_R="+a) }, text.StatusAuthFailed},
		{"short response", allowCHAP, func(a string) []byte { return textData("CHAP_N="+chapUser, "CHAP_R="+a[:20]) }, text.StatusAuthFailed},
		{"response not binary", allowCHAP, func(string) []byte { return textData("CHAP_N="+chapUser, "CHAP_R=secret") }, text.StatusAuthFailed},
		{"CHAP_N without CHAP_R", allowCHAP, func(string) []byte { return textData("CHAP_N=" + chapUser) }, text.StatusAuthFailed},
		{"CHAP_R without CHAP_N", allowCHAP, func(a string) []byte { return textData("CHAP_R=" + a) }, text.StatusAuthFailed},
		{"mutual refused", allowCHAP, func(a string) []byte {
			return textData("CHAP_N="+chapUser, "CHAP_R="+a, "CHAP_I=1", "CHAP_C=0x0102030405060708090a0b0c0d0e0f10")
		}, text.StatusAuthFailed},
		{"mutual challenge reflected", allowBoth, func(a string) []byte {
			return textData("CHAP_N="+chapUser, "CHAP_R="+a, "CHAP_I=1", "CHAP_C="+ourChallenge)
		}, text.StatusAuthFailed},
		{"mutual CHAP_I without CHAP_C", allowBoth, func(a string) []byte {
			return textData("CHAP_N="+chapUser, "CHAP_R="+a, "CHAP_I=1")
		}, text.StatusAuthFailed},
		{"mutual CHAP_I out of range", allowBoth, func(a string) []byte {
			return textData("CHAP_N="+chapUser, "CHAP_R="+a, "CHAP_I=256", "CHAP_C=0x01020304")
		}, text.StatusAuthFailed},
		{"mutual CHAP_C too long", allowBoth, func(a string) []byte {
			return textData("CHAP_N="+chapUser, "CHAP_R="+a, "CHAP_I=1", "CHAP_C=0b"+strings.Repeat("AAAA", 342))
		}, text.StatusAuthFailed},
		{"CHAP_I and CHAP_C before the response", allowBoth, func(string) []byte {
			return textData("CHAP_I=1", "CHAP_C=0x01020304")
		}, text.StatusAuthFailed},
		{"CHAP_A again", allowCHAP, func(a string) []byte { return textData("CHAP_A=5", "CHAP_N="+chapUser, "CHAP_R="+a) }, text.StatusInitiatorError},
		{"AuthMethod again", allowCHAP, func(a string) []byte { return textData("AuthMethod=CHAP") }, text.StatusInitiatorError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, answer := start(t, tc.decision)
			stepFail(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid, Data: tc.data(answer)}, tc.want)
			assert.False(t, l.Done())
		})
	}

	t.Run("correct answer in base64", func(t *testing.T) {
		l, answer := start(t, allowCHAP)
		raw, err := hex.DecodeString(answer[2:])
		require.NoError(t, err)
		b64 := "0b" + base64Std(raw)
		resp, _ := step(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid, Data: textData("CHAP_N="+chapUser, "CHAP_R="+b64)})
		assert.True(t, resp.Transit)
	})
	t.Run("answer with T=0 then transit", func(t *testing.T) {
		l, answer := start(t, allowCHAP)
		resp, _ := step(t, l, Request{CSG: 0, ISID: isid, Data: textData("CHAP_N="+chapUser, "CHAP_R="+answer)})
		assert.False(t, resp.Transit)
		resp, _ = step(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid})
		assert.True(t, resp.Transit)
	})
	t.Run("T=1 without answering the challenge", func(t *testing.T) {
		l, _ := start(t, allowCHAP)
		stepFail(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid}, text.StatusAuthFailed)
	})
}

func base64Std(b []byte) string {
	const enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var sb strings.Builder
	for i := 0; i < len(b); i += 3 {
		var n uint32
		k := min(3, len(b)-i)
		for j := 0; j < 3; j++ {
			n <<= 8
			if j < k {
				n |= uint32(b[i+j])
			}
		}
		for j := 0; j < 4; j++ {
			if j <= k {
				sb.WriteByte(enc[n>>(18-6*j)&63])
			} else {
				sb.WriteByte('=')
			}
		}
	}
	return sb.String()
}

func TestCHAPNegotiationFailures(t *testing.T) {
	ident := func(extra ...string) []byte { return textData(cat(openISCSIIdentity, extra)...) }
	tests := []struct {
		name     string
		decision Decision
		reqs     []Request
		want     text.Status
	}{
		{"only None offered to a CHAP target", allowCHAP,
			[]Request{{Transit: true, CSG: 0, NSG: 1, Data: ident("AuthMethod=None")}}, text.StatusAuthFailed},
		{"only CHAP offered to a target without CHAP", allow,
			[]Request{{Transit: true, CSG: 0, NSG: 1, Data: ident("AuthMethod=CHAP")}}, text.StatusAuthFailed},
		{"skipping the security stage", allowCHAP,
			[]Request{{Transit: true, CSG: 1, NSG: 3, Data: ident(openISCSIOps...)}}, text.StatusAuthFailed},
		{"T=1 without AuthMethod", allowCHAP,
			[]Request{{Transit: true, CSG: 0, NSG: 1, Data: ident()}}, text.StatusAuthFailed},
		{"only SHA-256 offered", allowCHAP, []Request{
			{Transit: true, CSG: 0, NSG: 1, Data: ident("AuthMethod=CHAP")},
			{CSG: 0, Data: textData("CHAP_A=7")}}, text.StatusAuthFailed},
		{"T=1 while the algorithm is awaited", allowCHAP, []Request{
			{Transit: true, CSG: 0, NSG: 1, Data: ident("AuthMethod=CHAP")},
			{Transit: true, CSG: 0, NSG: 1}}, text.StatusAuthFailed},
		{"CHAP keys before AuthMethod", allowCHAP,
			[]Request{{CSG: 0, Data: ident("CHAP_A=5")}}, text.StatusInitiatorError},
		{"CHAP_N before the challenge", allowCHAP, []Request{
			{Transit: true, CSG: 0, NSG: 1, Data: ident("AuthMethod=CHAP")},
			{CSG: 0, Data: textData("CHAP_N=" + chapUser)}}, text.StatusInitiatorError},
		{"CHAP keys without CHAP", allow,
			[]Request{{CSG: 0, Data: ident("AuthMethod=None", "CHAP_A=5")}}, text.StatusInitiatorError},
		{"CHAP key after CHAP completed is out of sequence", allow, []Request{
			{CSG: 0, Data: ident("AuthMethod=None")},
			{CSG: 0, Data: textData("CHAP_N=x")}}, text.StatusInitiatorError},
		{"security key in operational stage", allow,
			[]Request{{Transit: true, CSG: 1, NSG: 3, Data: ident("AuthMethod=None")}}, text.StatusInitiatorError},
		{"short secret fails closed", Decision{Allowed: true, CHAP: &text.Credentials{User: chapUser, Secret: "short"}},
			[]Request{{Transit: true, CSG: 0, NSG: 1, Data: ident("AuthMethod=CHAP")}}, text.StatusTargetError},
		{"empty CHAP user fails closed", Decision{Allowed: true, CHAP: &text.Credentials{User: "", Secret: chapSecret}},
			[]Request{{Transit: true, CSG: 0, NSG: 1, Data: ident("AuthMethod=CHAP")}}, text.StatusTargetError},
		{"same secret both ways fails closed", Decision{Allowed: true, CHAP: &text.Credentials{User: chapUser, Secret: chapSecret}, MutualCHAP: &text.Credentials{User: mutualUser, Secret: chapSecret}},
			[]Request{{Transit: true, CSG: 0, NSG: 1, Data: ident("AuthMethod=CHAP")}}, text.StatusTargetError},
		{"short mutual secret fails closed", Decision{Allowed: true, CHAP: &text.Credentials{User: chapUser, Secret: chapSecret}, MutualCHAP: &text.Credentials{User: mutualUser, Secret: "x"}},
			[]Request{{Transit: true, CSG: 0, NSG: 1, Data: ident("AuthMethod=CHAP")}}, text.StatusTargetError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := newLogin(tc.decision, Limits{})
			for i, r := range tc.reqs {
				r.ISID = isid
				if i < len(tc.reqs)-1 {
					step(t, l, r)
					continue
				}
				stepFail(t, l, r, tc.want)
			}
		})
	}
}

func TestCHAPRandomFailure(t *testing.T) {
	l := New(Config{Authorize: func(string, string, bool) (Decision, error) { return allowCHAP, nil }, Rand: errReader{}})
	step(t, l, Request{Transit: true, CSG: 0, NSG: 1, ISID: isid, Data: textData(cat(openISCSIIdentity, []string{"AuthMethod=CHAP"})...)})
	e := stepFail(t, l, Request{CSG: 0, ISID: isid, Data: textData("CHAP_A=5")}, text.StatusTargetError)
	assert.ErrorContains(t, e, "entropy exhausted")
}

func TestLoginFailures(t *testing.T) {
	normal := func(extra ...string) []byte { return textData(cat(openISCSIIdentity, extra)...) }
	op := func(data []byte) Request { return Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, Data: data} }
	tests := []struct {
		name     string
		decision Decision
		req      Request
		want     text.Status
		msg      string
	}{
		{"target not found", Decision{NotFound: true}, op(normal()), text.StatusNotFound, "not found"},
		{"not allowed", Decision{}, op(normal()), text.StatusAuthorizationFailed, "may not reach"},
		{"not found wins over allowed", Decision{Allowed: true, NotFound: true}, op(normal()), text.StatusNotFound, ""},
		{"missing InitiatorName", allow, op(textData("TargetName=" + targetIQN)), text.StatusMissingParameter, "InitiatorName"},
		{"missing TargetName", allow, op(textData("InitiatorName=" + openISCSIName)), text.StatusMissingParameter, "TargetName"},
		{"empty first request", allow, op(nil), text.StatusMissingParameter, ""},
		{"bad InitiatorName", allow, op(textData("InitiatorName=bob", "TargetName="+targetIQN)), text.StatusInitiatorError, "not an iqn."},
		{"bad TargetName", allow, op(textData("InitiatorName="+openISCSIName, "TargetName=iqn.x y")), text.StatusInitiatorError, "space"},
		{"unknown session type", allow, op(textData("InitiatorName="+openISCSIName, "SessionType=Bulk")), text.StatusSessionTypeNotSupported, "Bulk"},
		{"unsupported version", allow, Request{Transit: true, CSG: 1, NSG: 3, VersionMax: 2, VersionMin: 1, ISID: isid, Data: normal()}, text.StatusUnsupportedVersion, "0x01"},
		{"CSG 2", allow, Request{CSG: 2, ISID: isid, Data: normal()}, text.StatusInitiatorError, "CSG 2"},
		{"CSG 3", allow, Request{CSG: 3, ISID: isid, Data: normal()}, text.StatusInitiatorError, "CSG 3"},
		{"NSG 2", allow, Request{Transit: true, CSG: 1, NSG: 2, ISID: isid, Data: normal()}, text.StatusInitiatorError, "transition"},
		{"NSG backwards", allow, Request{Transit: true, CSG: 1, NSG: 0, ISID: isid, Data: normal()}, text.StatusInitiatorError, "transition"},
		{"NSG same stage", allow, Request{Transit: true, CSG: 0, NSG: 0, ISID: isid, Data: normal()}, text.StatusInitiatorError, "transition"},
		{"T and C", allow, Request{Transit: true, Continue: true, CSG: 1, NSG: 3, ISID: isid, Data: normal()}, text.StatusInitiatorError, "T and C"},
		{"malformed text", allow, op([]byte("InitiatorName")), text.StatusInitiatorError, "malformed"},
		{"duplicate key in one PDU", allow, op(normal("MaxBurstLength=512", "MaxBurstLength=512")), text.StatusInitiatorError, "twice"},
		{"invalid MaxRecvDataSegmentLength", allow, op(normal("MaxRecvDataSegmentLength=0")), text.StatusInitiatorError, "MaxRecvDataSegmentLength"},
		{"target key from the initiator", allow, op(normal("TargetPortalGroupTag=1")), text.StatusInitiatorError, "target key"},
		{"text too long", allow, op(make([]byte, maxLoginText+1)), text.StatusInitiatorError, "longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := newLogin(tc.decision, Limits{})
			e := stepFail(t, l, tc.req, tc.want)
			assert.ErrorContains(t, e, tc.msg)
			// A failed login stays failed.
			stepFail(t, l, op(normal()), text.StatusInitiatorError)
		})
	}
}

func TestAuthorizeErrors(t *testing.T) {
	l := New(Config{Authorize: func(string, string, bool) (Decision, error) { return Decision{}, errors.New("acl store down") }})
	e := stepFail(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, Data: textData(openISCSIIdentity...)}, text.StatusTargetError)
	assert.ErrorContains(t, e, "acl store down")

	l = New(Config{})
	stepFail(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, Data: textData(openISCSIIdentity...)}, text.StatusTargetError)
}

func TestSequenceViolations(t *testing.T) {
	first := Request{CSG: 1, NSG: 1, ISID: isid, Data: textData(openISCSIIdentity...)}
	tests := []struct {
		name string
		next Request
		msg  string
	}{
		{"ISID changed", Request{CSG: 1, ISID: [6]byte{1}}, "ISID changed"},
		{"CID changed", Request{CSG: 1, ISID: isid, CID: 2}, "CID changed"},
		{"TSIH changed", Request{CSG: 1, ISID: isid, TSIH: 9}, "TSIH changed"},
		{"version changed", Request{CSG: 1, ISID: isid, VersionMax: 1}, "version"},
		{"CSG jumps without transit", Request{CSG: 0, ISID: isid}, "stage 1"},
		{"key offered again", Request{CSG: 1, ISID: isid, Data: textData("MaxBurstLength=512")}, "twice"},
		{"InitiatorName changed", Request{CSG: 1, ISID: isid, Data: textData("InitiatorName=iqn.1991-05.com.microsoft:other")}, "InitiatorName changed"},
		{"TargetName changed", Request{CSG: 1, ISID: isid, Data: textData("TargetName=iqn.2026-11.org.mhcodi:prod.node-b.web1.data")}, "TargetName changed"},
		{"SessionType changed", Request{CSG: 1, ISID: isid, Data: textData("SessionType=Discovery")}, "SessionType changed"},
		{"InitiatorAlias changed", Request{CSG: 1, ISID: isid, Data: textData("InitiatorAlias=other")}, "InitiatorAlias changed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := newLogin(allow, Limits{})
			f := first
			f.Data = append(append([]byte{}, f.Data...), textData("MaxBurstLength=512")...)
			step(t, l, f)
			e := stepFail(t, l, tc.next, text.StatusInitiatorError)
			assert.ErrorContains(t, e, tc.msg)
		})
	}
}

func TestIdentityRepeatedUnchanged(t *testing.T) {
	// Names compare case-insensitively, and are reported lower-cased.
	l, calls := newLogin(allow, Limits{})
	step(t, l, Request{CSG: 1, ISID: isid, Data: textData("InitiatorName=IQN.2004-10.com.Ubuntu:01:ABC", "TargetName="+strings.ToUpper(targetIQN))})
	assert.Equal(t, []authCall{{"iqn.2004-10.com.ubuntu:01:abc", targetIQN, false}}, *calls)
	step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, Data: textData("InitiatorName=iqn.2004-10.com.ubuntu:01:abc", "SessionType=Normal", "InitiatorAlias=late")})
	assert.True(t, l.Done())
	assert.Equal(t, "late", l.Result().InitiatorAlias)
	assert.Len(t, *calls, 1, "Authorize is asked once")
}

func TestRequestLimit(t *testing.T) {
	l, _ := newLogin(allow, Limits{})
	step(t, l, Request{CSG: 1, ISID: isid, Data: textData(openISCSIIdentity...)})
	for range maxLoginRequests - 1 {
		step(t, l, Request{CSG: 1, ISID: isid})
	}
	stepFail(t, l, Request{CSG: 1, ISID: isid}, text.StatusInitiatorError)
}

func TestContinuedTextLimit(t *testing.T) {
	l, _ := newLogin(allow, Limits{})
	chunk := make([]byte, 8192)
	for i := range chunk {
		chunk[i] = 'a'
	}
	for range maxLoginText / len(chunk) {
		step(t, l, Request{Continue: true, CSG: 1, ISID: isid, Data: chunk})
	}
	stepFail(t, l, Request{Continue: true, CSG: 1, ISID: isid, Data: []byte("a")}, text.StatusInitiatorError)
}

func TestTargetAliasDeclared(t *testing.T) {
	d := allow
	d.TargetAlias = "web1-root"
	l, _ := newLogin(d, Limits{TargetPortalGroupTag: 5, MaxRecvDataSegmentLength: 65536})
	_, kvs := step(t, l, Request{Transit: true, CSG: 1, NSG: 3, ISID: isid, Data: textData(openISCSIIdentity...)})
	assert.Equal(t, kvList("TargetAlias=web1-root", "TargetPortalGroupTag=5", "MaxRecvDataSegmentLength=65536"), kvs)
	openISCSIAccepts(t, text.StageOperational, kvs)
	assert.EqualValues(t, 65536, l.Result().Params.TargetMaxRecvDataSegmentLength)
}

func TestStatus(t *testing.T) {
	assert.EqualValues(t, 2, text.StatusAuthFailed.Class())
	assert.EqualValues(t, 1, text.StatusAuthFailed.Detail())
	assert.Equal(t, "0x0203 (target not found)", text.StatusNotFound.String())
	assert.Equal(t, "0x02ff", text.Status(0x02ff).String())
	r := RejectResponse(text.StatusSessionDoesNotExist)
	assert.Equal(t, Response{StatusClass: 2, StatusDetail: 0x0a}, r)
	e := &Error{Status: text.StatusAuthFailed, Err: errors.New("bad")}
	assert.Equal(t, "iscsi login rejected with status 0x0201 (authentication failure): bad", e.Error())
}
