package login

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/iscsi/text"
)

func TestNegotiatorKeyRules(t *testing.T) {
	type check func(t *testing.T, p Params)
	tests := []struct {
		name      string
		lim       Limits
		discovery bool
		nonLead   bool
		key, val  string
		answer    string // "" with noAnswer for declarative keys
		noAnswer  bool
		check     check
	}{
		// Lists: the first of the initiator's values we support.
		{name: "digest None first", key: text.KeyHeaderDigest, val: "None,CRC32C", answer: "None",
			check: func(t *testing.T, p Params) { assert.False(t, p.HeaderDigest) }},
		{name: "digest CRC32C first", key: text.KeyHeaderDigest, val: "CRC32C,None", answer: "CRC32C",
			check: func(t *testing.T, p Params) { assert.True(t, p.HeaderDigest) }},
		{name: "data digest CRC32C only", key: text.KeyDataDigest, val: "CRC32C", answer: "CRC32C",
			check: func(t *testing.T, p Params) { assert.True(t, p.DataDigest) }},
		{name: "digest CRC32C refused by config", lim: Limits{DigestsAllowed: DigestNone}, key: text.KeyHeaderDigest, val: "CRC32C,None", answer: "None"},
		{name: "digest only CRC32C refused", lim: Limits{DigestsAllowed: DigestNone}, key: text.KeyHeaderDigest, val: "CRC32C", answer: "Reject",
			check: func(t *testing.T, p Params) { assert.False(t, p.HeaderDigest) }},
		{name: "digest unknown values skipped", key: text.KeyDataDigest, val: "MD5,CRC32C", answer: "CRC32C"},
		{name: "digest nothing known", key: text.KeyDataDigest, val: "MD5", answer: "Reject"},
		{name: "TaskReporting", key: text.KeyTaskReporting, val: "ResponseFence,RFC3720", answer: "RFC3720"},
		{name: "TaskReporting FastAbort only", key: text.KeyTaskReporting, val: "FastAbort", answer: "Reject"},

		// Booleans.
		{name: "InitialR2T No OR No", key: text.KeyInitialR2T, val: "No", answer: "No",
			check: func(t *testing.T, p Params) { assert.False(t, p.InitialR2T) }},
		{name: "InitialR2T No OR required Yes", lim: Limits{RequireInitialR2T: true}, key: text.KeyInitialR2T, val: "No", answer: "Yes",
			check: func(t *testing.T, p Params) { assert.True(t, p.InitialR2T) }},
		{name: "InitialR2T Yes", key: text.KeyInitialR2T, val: "Yes", answer: "Yes"},
		{name: "ImmediateData Yes AND Yes", key: text.KeyImmediateData, val: "Yes", answer: "Yes",
			check: func(t *testing.T, p Params) { assert.True(t, p.ImmediateData) }},
		{name: "ImmediateData Yes AND disabled", lim: Limits{DisableImmediateData: true}, key: text.KeyImmediateData, val: "Yes", answer: "No",
			check: func(t *testing.T, p Params) { assert.False(t, p.ImmediateData) }},
		{name: "ImmediateData No", key: text.KeyImmediateData, val: "No", answer: "No",
			check: func(t *testing.T, p Params) { assert.False(t, p.ImmediateData) }},
		{name: "boolean spelled wrong", key: text.KeyImmediateData, val: "yes", answer: "Reject",
			check: func(t *testing.T, p Params) { assert.True(t, p.ImmediateData, "default kept") }},
		{name: "DataPDUInOrder No OR our Yes", key: text.KeyDataPDUInOrder, val: "No", answer: "Yes",
			check: func(t *testing.T, p Params) { assert.True(t, p.DataPDUInOrder) }},
		{name: "DataSequenceInOrder No OR our Yes", key: text.KeyDataSequenceInOrder, val: "No", answer: "Yes"},
		{name: "RDMAExtensions always No", key: text.KeyRDMAExtensions, val: "Yes", answer: "No"},

		// Numbers, Minimum.
		{name: "MaxBurstLength above ours", key: text.KeyMaxBurstLength, val: "16776192", answer: "1048576",
			check: func(t *testing.T, p Params) { assert.EqualValues(t, 1048576, p.MaxBurstLength) }},
		{name: "MaxBurstLength below ours", key: text.KeyMaxBurstLength, val: "65536", answer: "65536"},
		{name: "MaxBurstLength hex", key: text.KeyMaxBurstLength, val: "0x10000", answer: "65536"},
		{name: "MaxBurstLength below range", key: text.KeyMaxBurstLength, val: "511", answer: "Reject",
			check: func(t *testing.T, p Params) { assert.EqualValues(t, 262144, p.MaxBurstLength, "default kept") }},
		{name: "MaxBurstLength above range", key: text.KeyMaxBurstLength, val: "16777216", answer: "Reject"},
		{name: "MaxBurstLength not a number", key: text.KeyMaxBurstLength, val: "lots", answer: "Reject"},
		{name: "FirstBurstLength", key: text.KeyFirstBurstLength, val: "262144", answer: "262144",
			check: func(t *testing.T, p Params) { assert.EqualValues(t, 262144, p.FirstBurstLength) }},
		{name: "MaxOutstandingR2T", key: text.KeyMaxOutstandingR2T, val: "8", answer: "1"},
		{name: "MaxOutstandingR2T configured", lim: Limits{MaxOutstandingR2T: 4}, key: text.KeyMaxOutstandingR2T, val: "8", answer: "4",
			check: func(t *testing.T, p Params) { assert.EqualValues(t, 4, p.MaxOutstandingR2T) }},
		{name: "MaxOutstandingR2T zero", key: text.KeyMaxOutstandingR2T, val: "0", answer: "Reject"},
		{name: "MaxConnections", key: text.KeyMaxConnections, val: "8", answer: "1"},
		{name: "ErrorRecoveryLevel 2 negotiated down", key: text.KeyErrorRecoveryLevel, val: "2", answer: "0",
			check: func(t *testing.T, p Params) { assert.EqualValues(t, 0, p.ErrorRecoveryLevel) }},
		{name: "ErrorRecoveryLevel 3 invalid", key: text.KeyErrorRecoveryLevel, val: "3", answer: "Reject"},
		{name: "DefaultTime2Retain", key: text.KeyDefaultTime2Retain, val: "20", answer: "0",
			check: func(t *testing.T, p Params) { assert.EqualValues(t, 0, p.DefaultTime2Retain) }},
		{name: "DefaultTime2Retain above 3600", key: text.KeyDefaultTime2Retain, val: "3601", answer: "Reject"},
		{name: "iSCSIProtocolLevel", key: text.KeyProtocolLevel, val: "2", answer: "1"},

		// Numbers, Maximum.
		{name: "DefaultTime2Wait 0 raised", key: text.KeyDefaultTime2Wait, val: "0", answer: "2",
			check: func(t *testing.T, p Params) { assert.EqualValues(t, 2, p.DefaultTime2Wait) }},
		{name: "DefaultTime2Wait 10 kept", key: text.KeyDefaultTime2Wait, val: "10", answer: "10"},

		// Declarative.
		{name: "MaxRecvDataSegmentLength declared", key: text.KeyMaxRecvDataSegmentLength, val: "262144", noAnswer: true,
			check: func(t *testing.T, p Params) { assert.EqualValues(t, 262144, p.InitiatorMaxRecvDataSegmentLength) }},
		{name: "MaxRecvDataSegmentLength too small", key: text.KeyMaxRecvDataSegmentLength, val: "100", answer: "Reject",
			check: func(t *testing.T, p Params) { assert.EqualValues(t, 8192, p.InitiatorMaxRecvDataSegmentLength) }},

		// Obsolete and foreign keys.
		{name: "IFMarker", key: text.KeyIFMarker, val: "No", answer: "Reject"},
		{name: "OFMarker", key: text.KeyOFMarker, val: "Yes", answer: "Reject"},
		{name: "OFMarkInt", key: text.KeyOFMarkInt, val: "2048~8192", answer: "Reject"},
		{name: "iSER InitiatorRecvDataSegmentLength", key: text.KeyInitiatorRecvDataSegmentLength, val: "262144", answer: "Irrelevant"},
		{name: "X- extension", key: "X-com.cisco.PingTimeout", val: "5", answer: "NotUnderstood"},
		{name: "X# extension", key: "X#org.example.k", val: "5", answer: "NotUnderstood"},
		{name: "unknown standard-looking key", key: "FooBar", val: "1", answer: "NotUnderstood"},
		{name: "target key from initiator", key: text.KeyTargetAddress, val: "10.0.0.1:3260,1", answer: "Reject"},
		{name: "SendTargets in login", key: text.KeySendTargets, val: "All", answer: "Reject"},
		{name: "reserved constant ignored", key: text.KeyMaxBurstLength, val: "NotUnderstood", noAnswer: true},

		// Irrelevant keys.
		{name: "discovery InitialR2T", discovery: true, key: text.KeyInitialR2T, val: "No", answer: "Irrelevant",
			check: func(t *testing.T, p Params) { assert.True(t, p.InitialR2T, "default kept") }},
		{name: "discovery MaxBurstLength", discovery: true, key: text.KeyMaxBurstLength, val: "65536", answer: "Irrelevant"},
		{name: "discovery digest still negotiated", discovery: true, key: text.KeyHeaderDigest, val: "None", answer: "None"},
		{name: "discovery ErrorRecoveryLevel still negotiated", discovery: true, key: text.KeyErrorRecoveryLevel, val: "0", answer: "0"},
		{name: "discovery MaxRecvDataSegmentLength declared", discovery: true, key: text.KeyMaxRecvDataSegmentLength, val: "32768", noAnswer: true},
		{name: "non-leading LO key", nonLead: true, key: text.KeyMaxBurstLength, val: "65536", answer: "Irrelevant"},
		{name: "non-leading IO key", nonLead: true, key: text.KeyHeaderDigest, val: "CRC32C", answer: "CRC32C"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultParams()
			n := negotiator{lim: tc.lim.withDefaults(), p: &p, discovery: tc.discovery, leading: !tc.nonLead}
			got, ok := n.reply(tc.key, tc.val)
			if tc.noAnswer {
				assert.False(t, ok, "declarative keys get no answer, got %q", got)
			} else {
				assert.True(t, ok)
				assert.Equal(t, tc.answer, got)
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}

func TestSettleFirstBurst(t *testing.T) {
	p := DefaultParams()
	n := negotiator{lim: Limits{}.withDefaults(), p: &p, leading: true}
	var replies []text.KV
	for _, kv := range []text.KV{{Key: text.KeyFirstBurstLength, Value: "262144"}, {Key: text.KeyMaxBurstLength, Value: "8192"}} {
		a, ok := n.reply(kv.Key, kv.Value)
		require.True(t, ok)
		replies = append(replies, text.KV{Key: kv.Key, Value: a})
	}
	n.settle(replies)
	assert.Equal(t, []text.KV{{Key: text.KeyFirstBurstLength, Value: "8192"}, {Key: text.KeyMaxBurstLength, Value: "8192"}}, replies)
	assert.EqualValues(t, 8192, p.FirstBurstLength)
}

func TestLimitsDefaultsAndClamping(t *testing.T) {
	assert.Equal(t, DefaultLimits(), Limits{}.withDefaults())
	l := Limits{MaxRecvDataSegmentLength: 100, MaxBurstLength: 1 << 30, FirstBurstLength: 1 << 30}.withDefaults()
	assert.EqualValues(t, 512, l.MaxRecvDataSegmentLength)
	assert.EqualValues(t, 1<<24-1, l.MaxBurstLength)
	assert.EqualValues(t, 1<<24-1, l.FirstBurstLength)
	l = Limits{MaxBurstLength: 4096, FirstBurstLength: 65536}.withDefaults()
	assert.EqualValues(t, 4096, l.FirstBurstLength, "FirstBurstLength never exceeds MaxBurstLength")
}

func TestNegotiateText(t *testing.T) {
	p := DefaultParams()
	out, err := NegotiateText(&p, []text.KV{
		{Key: text.KeyMaxRecvDataSegmentLength, Value: "65536"},
		{Key: text.KeySendTargets, Value: "All"},
		{Key: text.KeyInitiatorAlias, Value: "node-a"},
		{Key: text.KeyMaxBurstLength, Value: "65536"},
		{Key: text.KeyHeaderDigest, Value: "CRC32C"},
		{Key: text.KeyAuthMethod, Value: "None"},
		{Key: "X-com.example.Thing", Value: "1"},
		{Key: text.KeyTargetAlias, Value: "x"},
		{Key: text.KeyMaxConnections, Value: "Irrelevant"},
	})
	require.NoError(t, err)
	assert.Equal(t, []text.KV{
		{Key: text.KeyMaxBurstLength, Value: "Reject"},
		{Key: text.KeyHeaderDigest, Value: "Reject"},
		{Key: text.KeyAuthMethod, Value: "Reject"},
		{Key: "X-com.example.Thing", Value: "NotUnderstood"},
		{Key: text.KeyTargetAlias, Value: "Reject"},
	}, out)
	assert.EqualValues(t, 65536, p.InitiatorMaxRecvDataSegmentLength)
	assert.EqualValues(t, 262144, p.MaxBurstLength, "leading-only keys do not change in full feature phase")

	out, err = NegotiateText(&p, []text.KV{{Key: text.KeyMaxRecvDataSegmentLength, Value: "1"}})
	require.NoError(t, err)
	assert.Equal(t, []text.KV{{Key: text.KeyMaxRecvDataSegmentLength, Value: "Reject"}}, out)
	assert.EqualValues(t, 65536, p.InitiatorMaxRecvDataSegmentLength)

	_, err = NegotiateText(&p, []text.KV{{Key: "A", Value: "1"}, {Key: "A", Value: "2"}})
	assert.ErrorContains(t, err, "twice")
	_, err = NegotiateText(nil, nil)
	assert.Error(t, err)
}
