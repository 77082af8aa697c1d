package login

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/mhcodi/mhcodi/iscsi/text"
)

// Params are the negotiated operational parameters of a connection and its
// session (RFC 7143 §13). Keys the initiator did not offer keep their RFC
// defaults (DefaultParams).
type Params struct {
	// HeaderDigest and DataDigest are true when CRC32C was agreed.
	HeaderDigest, DataDigest bool
	// InitiatorMaxRecvDataSegmentLength is what the initiator declared: the
	// most data the target may put in one PDU it sends.
	InitiatorMaxRecvDataSegmentLength uint32
	// TargetMaxRecvDataSegmentLength is what the target declared (or the
	// default 8192 when the operational stage was skipped): the most data
	// the initiator may put in one PDU.
	TargetMaxRecvDataSegmentLength uint32
	MaxBurstLength                 uint32
	FirstBurstLength               uint32
	ImmediateData                  bool
	InitialR2T                     bool
	MaxOutstandingR2T              uint16
	DataPDUInOrder                 bool
	DataSequenceInOrder            bool
	DefaultTime2Wait               uint16
	DefaultTime2Retain             uint16
	ErrorRecoveryLevel             uint8
	MaxConnections                 uint16
}

// DefaultParams are the values of §13 that hold for keys nobody offered.
func DefaultParams() Params {
	return Params{
		InitiatorMaxRecvDataSegmentLength: 8192,
		TargetMaxRecvDataSegmentLength:    8192,
		MaxBurstLength:                    262144,
		FirstBurstLength:                  65536,
		ImmediateData:                     true,
		InitialR2T:                        true,
		MaxOutstandingR2T:                 1,
		DataPDUInOrder:                    true,
		DataSequenceInOrder:               true,
		DefaultTime2Wait:                  2,
		DefaultTime2Retain:                20,
		ErrorRecoveryLevel:                0,
		MaxConnections:                    1,
	}
}

// Digest is a set of digest algorithms.
type Digest uint8

// Digest algorithms (§13.1).
const (
	DigestNone   Digest = 1 << 0
	DigestCRC32C Digest = 1 << 1
)

// Limits are the target's side of the negotiation: the most it accepts and
// what it prefers. Zero fields take the defaults of DefaultLimits; values
// outside the RFC ranges are clamped into them.
type Limits struct {
	// MaxRecvDataSegmentLength is declared to the initiator: the most data
	// it may send in one PDU (512..16777215).
	MaxRecvDataSegmentLength uint32
	// MaxBurstLength, FirstBurstLength and MaxOutstandingR2T are the
	// largest values the target agrees to; the result is the smaller of
	// the offer and this.
	MaxBurstLength    uint32
	FirstBurstLength  uint32
	MaxOutstandingR2T uint16
	// DigestsAllowed are the digests the target agrees to; the first of
	// the initiator's list found here wins. Zero means None and CRC32C,
	// both mandatory to implement (§13.1).
	DigestsAllowed Digest
	// DisableImmediateData makes the target answer ImmediateData=No (the
	// result is a Boolean AND).
	DisableImmediateData bool
	// RequireInitialR2T makes the target answer InitialR2T=Yes (the result
	// is a Boolean OR).
	RequireInitialR2T bool
	// TargetPortalGroupTag is declared in the first response of a Normal
	// session; zero means 1.
	TargetPortalGroupTag uint16
}

// Ranges of §13.
const (
	minDataSegment   = 512
	maxDataSegment   = 1<<24 - 1
	maxTime2         = 3600
	loginSegmentSize = 8192 // the most a login response PDU carries (§13.12 default)
)

// The target's own answers for keys it does not let callers tune.
const (
	// ourTime2Wait is the default: initiators may reconnect after 2 s.
	ourTime2Wait = 2
	// ourTime2Retain is 0: at ErrorRecoveryLevel 0 nothing is kept for
	// task reassignment after a connection drops.
	ourTime2Retain = 0
	// ourProtocolLevel: RFC 7143 is level 1 (RFC 7144 §2.1).
	ourProtocolLevel = 1
)

// DefaultLimits are the Limits used for zero fields.
func DefaultLimits() Limits {
	return Limits{
		MaxRecvDataSegmentLength: 262144,
		MaxBurstLength:           1048576,
		FirstBurstLength:         262144,
		MaxOutstandingR2T:        1,
		DigestsAllowed:           DigestNone | DigestCRC32C,
		TargetPortalGroupTag:     1,
	}
}

// withDefaults fills zero fields and clamps the others into range.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxRecvDataSegmentLength == 0 {
		l.MaxRecvDataSegmentLength = d.MaxRecvDataSegmentLength
	}
	if l.MaxBurstLength == 0 {
		l.MaxBurstLength = d.MaxBurstLength
	}
	if l.FirstBurstLength == 0 {
		l.FirstBurstLength = d.FirstBurstLength
	}
	if l.MaxOutstandingR2T == 0 {
		l.MaxOutstandingR2T = d.MaxOutstandingR2T
	}
	if l.DigestsAllowed&(DigestNone|DigestCRC32C) == 0 {
		l.DigestsAllowed = d.DigestsAllowed
	}
	if l.TargetPortalGroupTag == 0 {
		l.TargetPortalGroupTag = d.TargetPortalGroupTag
	}
	l.MaxRecvDataSegmentLength = clamp32(l.MaxRecvDataSegmentLength, minDataSegment, maxDataSegment)
	l.MaxBurstLength = clamp32(l.MaxBurstLength, minDataSegment, maxDataSegment)
	l.FirstBurstLength = clamp32(l.FirstBurstLength, minDataSegment, l.MaxBurstLength)
	return l
}

func clamp32(v, lo, hi uint32) uint32 {
	return min(max(v, lo), hi)
}

// negotiator answers the operational keys of one login (or of a full
// feature phase Text Request) and records the results in p.
type negotiator struct {
	lim       Limits
	p         *Params
	discovery bool
	leading   bool
}

// reply computes the answer to one offered operational or unknown key. ok
// is false when nothing is to be sent (declarative keys, or an initiator
// echoing a reserved answer constant).
func (n *negotiator) reply(key, value string) (answer string, ok bool) {
	if text.IsReserved(value) {
		return "", false
	}
	spec := lookupKey(key)
	switch spec.class {
	case classUnknown:
		return text.ValueNotUnderstood, true
	case classTargetOnly, classFFP:
		// An initiator may not declare target keys, and SendTargets
		// belongs to full feature phase.
		return text.ValueReject, true
	case classOperational:
	default:
		// Identity and security keys are handled by the login itself.
		return text.ValueReject, true
	}
	if spec.use == useLO && !n.leading {
		// Session-wide keys are settled by the leading connection.
		return text.ValueIrrelevant, true
	}
	if spec.discoveryIrrelevant && n.discovery {
		return text.ValueIrrelevant, true
	}
	p := n.p
	switch key {
	case text.KeyHeaderDigest:
		return n.digest(value, &p.HeaderDigest), true
	case text.KeyDataDigest:
		return n.digest(value, &p.DataDigest), true
	case text.KeyMaxRecvDataSegmentLength:
		// Declarative: the initiator tells how much it can receive.
		v, err := text.ParseNumber(value)
		if err != nil || v < minDataSegment || v > maxDataSegment {
			return text.ValueReject, true
		}
		p.InitiatorMaxRecvDataSegmentLength = uint32(v)
		return "", false
	case text.KeyMaxConnections:
		return numMin(value, 1, 65535, 1, func(v uint64) { p.MaxConnections = uint16(v) }), true
	case text.KeyMaxBurstLength:
		return numMin(value, minDataSegment, maxDataSegment, uint64(n.lim.MaxBurstLength),
			func(v uint64) { p.MaxBurstLength = uint32(v) }), true
	case text.KeyFirstBurstLength:
		return numMin(value, minDataSegment, maxDataSegment, uint64(n.lim.FirstBurstLength),
			func(v uint64) { p.FirstBurstLength = uint32(v) }), true
	case text.KeyMaxOutstandingR2T:
		return numMin(value, 1, 65535, uint64(n.lim.MaxOutstandingR2T),
			func(v uint64) { p.MaxOutstandingR2T = uint16(v) }), true
	case text.KeyDefaultTime2Wait:
		return numMax(value, 0, maxTime2, ourTime2Wait, func(v uint64) { p.DefaultTime2Wait = uint16(v) }), true
	case text.KeyDefaultTime2Retain:
		return numMin(value, 0, maxTime2, ourTime2Retain, func(v uint64) { p.DefaultTime2Retain = uint16(v) }), true
	case text.KeyErrorRecoveryLevel:
		// Only level 0 is implemented: any offer comes down to 0.
		return numMin(value, 0, 2, 0, func(v uint64) { p.ErrorRecoveryLevel = uint8(v) }), true
	case text.KeyInitialR2T:
		return boolOr(value, n.lim.RequireInitialR2T, &p.InitialR2T), true
	case text.KeyImmediateData:
		return boolAnd(value, !n.lim.DisableImmediateData, &p.ImmediateData), true
	case text.KeyDataPDUInOrder:
		// Out-of-order data is not implemented: OR with our Yes.
		return boolOr(value, true, &p.DataPDUInOrder), true
	case text.KeyDataSequenceInOrder:
		return boolOr(value, true, &p.DataSequenceInOrder), true
	case text.KeyTaskReporting:
		// Only the RFC 3720 semantics (no ResponseFence, no FastAbort).
		if text.ListHas(value, "RFC3720") {
			return "RFC3720", true
		}
		return text.ValueReject, true
	case text.KeyProtocolLevel:
		return numMin(value, 0, 31, ourProtocolLevel, func(uint64) {}), true
	case text.KeyIFMarker, text.KeyOFMarker, text.KeyIFMarkInt, text.KeyOFMarkInt:
		// RFC 7143 obsoletes markers: Reject (a SHOULD for IFMarker and
		// OFMarker, a MUST for the *MarkInt keys). open-iscsi and libiscsi
		// ignore the answer; LIO answers the same.
		return text.ValueReject, true
	case text.KeyRDMAExtensions:
		// iSER is not supported: Boolean AND with our No.
		if _, err := text.ParseBool(value); err != nil {
			return text.ValueReject, true
		}
		return "No", true
	case text.KeyInitiatorRecvDataSegmentLength, text.KeyTargetRecvDataSegmentLength:
		// Only meaningful with RDMAExtensions=Yes, which we never agree to.
		return text.ValueIrrelevant, true
	}
	return text.ValueNotUnderstood, true
}

// digest answers a HeaderDigest/DataDigest list: the first value of the
// initiator's list the target allows (§6.2.1), or Reject.
func (n *negotiator) digest(value string, crc *bool) string {
	for _, v := range text.SplitList(value) {
		switch {
		case v == "None" && n.lim.DigestsAllowed&DigestNone != 0:
			*crc = false
			return v
		case v == "CRC32C" && n.lim.DigestsAllowed&DigestCRC32C != 0:
			*crc = true
			return v
		}
	}
	return text.ValueReject
}

// numMin answers a numerical key whose result function is Minimum: the
// smaller of the offer and ours. An offer outside [lo, hi] is inadmissible
// and answered Reject, leaving the default in place (§6.2.2).
func numMin(value string, lo, hi, ours uint64, set func(uint64)) string {
	v, err := text.ParseNumber(value)
	if err != nil || v < lo || v > hi {
		return text.ValueReject
	}
	r := min(v, ours)
	set(r)
	return strconv.FormatUint(r, 10)
}

// numMax answers a numerical key whose result function is Maximum.
func numMax(value string, lo, hi, ours uint64, set func(uint64)) string {
	v, err := text.ParseNumber(value)
	if err != nil || v < lo || v > hi {
		return text.ValueReject
	}
	r := max(v, ours)
	set(r)
	return strconv.FormatUint(r, 10)
}

// boolOr answers a Boolean key whose result is the OR of both sides.
func boolOr(value string, ours bool, res *bool) string {
	v, err := text.ParseBool(value)
	if err != nil {
		return text.ValueReject
	}
	*res = v || ours
	return text.FormatBool(*res)
}

// boolAnd answers a Boolean key whose result is the AND of both sides.
func boolAnd(value string, ours bool, res *bool) string {
	v, err := text.ParseBool(value)
	if err != nil {
		return text.ValueReject
	}
	*res = v && ours
	return text.FormatBool(*res)
}

// settle enforces the cross-key rule FirstBurstLength <= MaxBurstLength
// (RFC 7143 §13, FirstBurstLength) once all keys are known, correcting the answer already built.
func (n *negotiator) settle(replies []text.KV) {
	if n.p.FirstBurstLength <= n.p.MaxBurstLength {
		return
	}
	n.p.FirstBurstLength = n.p.MaxBurstLength
	for i := range replies {
		if replies[i].Key == text.KeyFirstBurstLength {
			replies[i].Value = strconv.FormatUint(uint64(n.p.FirstBurstLength), 10)
		}
	}
}

// NegotiateText answers the keys of a full feature phase Text Request and
// updates p. Only keys of use ALL may change in full feature phase: the
// initiator's MaxRecvDataSegmentLength (declarative, no answer) and
// InitiatorAlias; other known keys are answered Reject, unknown ones
// NotUnderstood. SendTargets is left to the caller (see SendTargets) and
// gets no answer here. A key offered twice is a protocol error: the caller
// rejects the PDU.
func NegotiateText(p *Params, kvs []text.KV) ([]text.KV, error) {
	if p == nil {
		return nil, errors.New("login: NegotiateText needs the session's Params")
	}
	seen := make(map[string]bool, len(kvs))
	var out []text.KV
	for _, kv := range kvs {
		if seen[kv.Key] {
			return nil, fmt.Errorf("login: text request offers %s twice", kv.Key)
		}
		seen[kv.Key] = true
		if text.IsReserved(kv.Value) {
			continue
		}
		spec := lookupKey(kv.Key)
		switch {
		case kv.Key == text.KeySendTargets, kv.Key == text.KeyInitiatorAlias:
			continue
		case kv.Key == text.KeyMaxRecvDataSegmentLength:
			v, err := text.ParseNumber(kv.Value)
			if err != nil || v < minDataSegment || v > maxDataSegment {
				out = append(out, text.KV{Key: kv.Key, Value: text.ValueReject})
				continue
			}
			p.InitiatorMaxRecvDataSegmentLength = uint32(v)
		case spec.class == classUnknown:
			out = append(out, text.KV{Key: kv.Key, Value: text.ValueNotUnderstood})
		default:
			// Login-only, leading-only, security and target keys cannot
			// change in full feature phase.
			out = append(out, text.KV{Key: kv.Key, Value: text.ValueReject})
		}
	}
	return out, nil
}
