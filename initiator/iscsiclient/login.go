package iscsiclient

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
	"github.com/mhcodi/mhcodi/iscsi/text"
)

// Params are what the login settled, as the initiator applies them.
type Params struct {
	HeaderDigest bool
	// TargetMaxRecvDataSegmentLength is the most data we may put in one
	// PDU (what the target declared, 8192 if it did not).
	TargetMaxRecvDataSegmentLength uint32
	// MaxRecvDataSegmentLength is what we declared: the most the target
	// puts in one PDU to us.
	MaxRecvDataSegmentLength uint32
	MaxBurstLength           uint32
	FirstBurstLength         uint32
	ImmediateData            bool
	InitialR2T               bool
	TSIH                     uint16
}

// What we offer. The burst sizes match targetd's defaults, so a 1 MiB
// write goes out as 256 KiB of immediate data and one R2T'd burst.
const (
	ourMaxRecvDataSegmentLength = 262144
	ourMaxBurstLength           = 1048576
	ourFirstBurstLength         = 262144
)

// LoginError is a login the target refused with a Login Response status
// (RFC 7143 §11.13.5). Class 2 (initiator error: authentication,
// authorization, not found) will not succeed by retrying; class 3 might.
type LoginError struct {
	Status text.Status
	Target string
}

func (e *LoginError) Error() string {
	return fmt.Sprintf("login to %s refused with status %v", e.Target, e.Status)
}

// Refused reports whether the target refused this initiator (status class
// 2): wrong CHAP, not allowed by the ACL, unknown target.
func (e *LoginError) Refused() bool { return e.Status.Class() == 2 }

// TargetAuthError is a login we broke off because the target failed
// mutual CHAP: it did not answer our challenge, answered under another
// name, or with a wrong response. Retrying will not help until the
// secrets agree, or the impostor is gone.
type TargetAuthError struct {
	Target, Reason string
}

func (e *TargetAuthError) Error() string {
	return fmt.Sprintf("login to %s: the target failed mutual CHAP: %s", e.Target, e.Reason)
}

// Refused is true: like a refusal by the target, only a change of
// configuration (or of who answers on the portal) makes it pass.
func (e *TargetAuthError) Refused() bool { return true }

// Refuser is a login error that retrying soon will not cure.
type Refuser interface {
	error
	Refused() bool
}

// loginRequest is one Login Request the machine wants sent.
type loginRequest struct {
	Transit, Continue bool
	CSG, NSG          uint8
	KVs               []text.KV
}

// loginResponse is the part of a Login Response the machine reads.
type loginResponse struct {
	Transit, Continue bool
	CSG, NSG          uint8
	Status            text.Status
	TSIH              uint16
	Data              []byte
}

// chapStep is how far CHAP got.
type chapStep uint8

const (
	chapNone     chapStep = iota
	chapSentA             // CHAP_A sent, waiting for the challenge
	chapAnswered          // CHAP_N/CHAP_R sent (with CHAP_I/CHAP_C when mutual)
	chapVerified          // the target answered our challenge correctly
)

// mutualChallengeLen is the length of our challenges to the target, as
// targetd's own: RFC 7143 §12.1.3 wants them unpredictable and at least
// as long as the hash.
const mutualChallengeLen = 32

// loginMachine runs the initiator side of a login: security stage (with
// CHAP when the target asks for it and we have credentials), operational
// stage, full feature phase. It does no I/O: start gives the first
// request, step takes each response and gives the next request, until done.
type loginMachine struct {
	cfg   Config
	stage uint8
	chap  chapStep
	// mutualID and mutualChall are the challenge we sent the target.
	mutualID    byte
	mutualChall []byte
	// targetChall is the target's challenge, which ours must not repeat.
	targetChall []byte
	text        []byte // response text accumulated over C=1 responses
	rounds      int
	params      Params
	done        bool
}

// maxLoginRounds stops a target that never lets the login finish.
const maxLoginRounds = 16

func newLoginMachine(cfg Config) *loginMachine {
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	return &loginMachine{cfg: cfg, params: Params{
		TargetMaxRecvDataSegmentLength: 8192,
		MaxRecvDataSegmentLength:       ourMaxRecvDataSegmentLength,
		MaxBurstLength:                 262144,
		FirstBurstLength:               65536,
		ImmediateData:                  true,
		InitialR2T:                     true,
	}}
}

func (m *loginMachine) start() loginRequest {
	auth := "None"
	if m.cfg.CHAP != nil {
		// Offer both: the target decides whether it wants CHAP.
		auth = "CHAP,None"
	}
	return loginRequest{Transit: true, CSG: text.StageSecurity, NSG: text.StageOperational, KVs: []text.KV{
		{Key: text.KeyInitiatorName, Value: m.cfg.InitiatorIQN},
		{Key: text.KeyTargetName, Value: m.cfg.TargetIQN},
		{Key: text.KeySessionType, Value: "Normal"},
		{Key: text.KeyAuthMethod, Value: auth},
	}}
}

func (m *loginMachine) operationalKeys() []text.KV {
	hd := "None"
	if m.cfg.HeaderDigest {
		hd = "CRC32C,None"
	}
	u := func(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
	return []text.KV{
		{Key: text.KeyHeaderDigest, Value: hd},
		{Key: text.KeyDataDigest, Value: "None"},
		{Key: text.KeyMaxConnections, Value: "1"},
		{Key: text.KeyInitialR2T, Value: "No"},
		{Key: text.KeyImmediateData, Value: "Yes"},
		{Key: text.KeyMaxRecvDataSegmentLength, Value: u(ourMaxRecvDataSegmentLength)},
		{Key: text.KeyMaxBurstLength, Value: u(ourMaxBurstLength)},
		{Key: text.KeyFirstBurstLength, Value: u(ourFirstBurstLength)},
		{Key: text.KeyDefaultTime2Wait, Value: "0"},
		{Key: text.KeyDefaultTime2Retain, Value: "0"},
		{Key: text.KeyMaxOutstandingR2T, Value: "1"},
		{Key: text.KeyDataPDUInOrder, Value: "Yes"},
		{Key: text.KeyDataSequenceInOrder, Value: "Yes"},
		{Key: text.KeyErrorRecoveryLevel, Value: "0"},
	}
}

// step consumes one Login Response. It returns the next request, or done
// once full feature phase is reached.
func (m *loginMachine) step(r loginResponse) (next loginRequest, done bool, err error) {
	m.rounds++
	if m.rounds > maxLoginRounds {
		return next, false, fmt.Errorf("login did not finish after %d exchanges", maxLoginRounds)
	}
	if r.Status != text.StatusSuccess {
		return next, false, &LoginError{Status: r.Status, Target: m.cfg.TargetIQN}
	}
	if r.CSG != m.stage {
		return next, false, fmt.Errorf("login response for stage %d while in stage %d", r.CSG, m.stage)
	}
	m.text = append(m.text, r.Data...)
	if r.Continue {
		// More response text: fetch it with an empty request.
		return loginRequest{CSG: m.stage}, false, nil
	}
	kvs, err := parseResponseText(m.text)
	m.text = nil
	if err != nil {
		return next, false, fmt.Errorf("login response text: %w", err)
	}
	m.params.TSIH = r.TSIH
	switch m.stage {
	case text.StageSecurity:
		return m.security(r, kvs)
	case text.StageOperational:
		if err := m.apply(kvs); err != nil {
			return next, false, err
		}
		if r.Transit && r.NSG == text.StageFullFeature {
			m.done = true
			return next, true, nil
		}
		// The target is not done: ask again to move on.
		return loginRequest{Transit: true, CSG: text.StageOperational, NSG: text.StageFullFeature}, false, nil
	}
	return next, false, fmt.Errorf("login in unexpected stage %d", m.stage)
}

func (m *loginMachine) security(r loginResponse, kvs []text.KV) (loginRequest, bool, error) {
	if am, ok := text.Lookup(kvs, text.KeyAuthMethod); ok {
		switch am {
		case "None":
		case "CHAP":
			if m.cfg.CHAP == nil {
				return loginRequest{}, false, fmt.Errorf("target %s requires CHAP; no CHAP credentials configured", m.cfg.TargetIQN)
			}
			if m.chap == chapNone {
				m.chap = chapSentA
				return loginRequest{CSG: text.StageSecurity, NSG: text.StageOperational,
					KVs: []text.KV{{Key: text.KeyCHAPA, Value: "5"}}}, false, nil
			}
		default:
			return loginRequest{}, false, fmt.Errorf("target chose AuthMethod=%s, which was not offered", am)
		}
	}
	if m.chap == chapAnswered && m.cfg.MutualCHAP != nil {
		if err := m.verifyTarget(kvs); err != nil {
			return loginRequest{}, false, err
		}
		m.chap = chapVerified
	}
	if m.chap == chapSentA {
		if _, ok := text.Lookup(kvs, text.KeyCHAPC); ok {
			resp, err := m.chapAnswer(kvs)
			if err != nil {
				return loginRequest{}, false, err
			}
			m.chap = chapAnswered
			return loginRequest{Transit: true, CSG: text.StageSecurity, NSG: text.StageOperational, KVs: resp}, false, nil
		}
	}
	if r.Transit && m.cfg.MutualCHAP != nil && m.chap != chapVerified {
		// Leaving the security stage before the target proved itself
		// (AuthMethod=None, or CHAP without an answer to ours) is what
		// an impostor would do.
		return loginRequest{}, false, &TargetAuthError{Target: m.cfg.TargetIQN,
			Reason: "it ended the security stage without answering our challenge (mutual CHAP is configured: is the target's secret set on its node?)"}
	}
	if r.Transit {
		if r.NSG == text.StageFullFeature {
			// A target may skip the operational stage; the defaults hold.
			if err := m.apply(kvs); err != nil {
				return loginRequest{}, false, err
			}
			m.done = true
			return loginRequest{}, true, nil
		}
		m.stage = text.StageOperational
		return loginRequest{Transit: true, CSG: text.StageOperational, NSG: text.StageFullFeature, KVs: m.operationalKeys()}, false, nil
	}
	// Security stage continues with nothing new from us: say we want to move on.
	return loginRequest{Transit: true, CSG: text.StageSecurity, NSG: text.StageOperational}, false, nil
}

// chapAnswer computes CHAP_N/CHAP_R for the target's CHAP_I/CHAP_C (RFC
// 1994: MD5 over identifier, secret and challenge).
func (m *loginMachine) chapAnswer(kvs []text.KV) ([]text.KV, error) {
	if a, _ := text.Lookup(kvs, text.KeyCHAPA); a != "5" {
		return nil, fmt.Errorf("target chose CHAP_A=%q; only 5 (MD5) was offered", a)
	}
	is, _ := text.Lookup(kvs, text.KeyCHAPI)
	id, err := strconv.ParseUint(is, 0, 8)
	if err != nil {
		return nil, fmt.Errorf("CHAP_I %q: %w", is, err)
	}
	cs, _ := text.Lookup(kvs, text.KeyCHAPC)
	chall, err := text.DecodeBinary(cs)
	if err != nil {
		return nil, fmt.Errorf("CHAP_C: %w", err)
	}
	out := []text.KV{
		{Key: text.KeyCHAPN, Value: m.cfg.CHAP.User},
		{Key: text.KeyCHAPR, Value: text.EncodeHex(text.CHAPResponse(byte(id), m.cfg.CHAP.Secret, chall))},
	}
	if m.cfg.MutualCHAP == nil {
		return out, nil
	}
	m.targetChall = chall
	buf := make([]byte, 1+mutualChallengeLen)
	if _, err := io.ReadFull(m.cfg.Rand, buf); err != nil {
		return nil, fmt.Errorf("mutual CHAP challenge: %w", err)
	}
	m.mutualID, m.mutualChall = buf[0], buf[1:]
	if bytes.Equal(m.mutualChall, chall) {
		// Only a broken random source gets here; a target that could
		// make us ask its own challenge could reflect our answer.
		return nil, errors.New("mutual CHAP: our challenge equals the target's; the random source is broken")
	}
	return append(out,
		text.KV{Key: text.KeyCHAPI, Value: strconv.Itoa(int(m.mutualID))},
		text.KV{Key: text.KeyCHAPC, Value: text.EncodeHex(m.mutualChall)},
	), nil
}

// verifyTarget checks the target's CHAP_N/CHAP_R against our challenge.
func (m *loginMachine) verifyTarget(kvs []text.KV) error {
	fail := func(format string, a ...any) error {
		return &TargetAuthError{Target: m.cfg.TargetIQN, Reason: fmt.Sprintf(format, a...)}
	}
	n, hasN := text.Lookup(kvs, text.KeyCHAPN)
	r, hasR := text.Lookup(kvs, text.KeyCHAPR)
	if !hasN || !hasR {
		return fail("it did not answer our challenge (no CHAP_N/CHAP_R)")
	}
	if n != m.cfg.MutualCHAP.User {
		return fail("it answered as %q, not %q", n, m.cfg.MutualCHAP.User)
	}
	got, err := text.DecodeBinary(r)
	if err != nil {
		return fail("CHAP_R: %v", err)
	}
	want := text.CHAPResponse(m.mutualID, m.cfg.MutualCHAP.Secret, m.mutualChall)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return fail("wrong CHAP_R (the target's secret differs from ours for it)")
	}
	return nil
}

// apply records the target's answers to our operational keys.
func (m *loginMachine) apply(kvs []text.KV) error {
	p := &m.params
	for _, kv := range kvs {
		num := func() (uint32, error) {
			n, err := strconv.ParseUint(kv.Value, 10, 32)
			if err != nil {
				return 0, fmt.Errorf("login key %s=%q: %w", kv.Key, kv.Value, err)
			}
			return uint32(n), nil
		}
		var err error
		switch kv.Key {
		case text.KeyHeaderDigest:
			switch kv.Value {
			case "CRC32C":
				p.HeaderDigest = m.cfg.HeaderDigest
				if !m.cfg.HeaderDigest {
					err = errors.New("target chose HeaderDigest=CRC32C, which was not offered")
				}
			case "None":
				p.HeaderDigest = false
			default:
				err = fmt.Errorf("target answered HeaderDigest=%s", kv.Value)
			}
		case text.KeyDataDigest:
			if kv.Value != "None" {
				err = fmt.Errorf("target answered DataDigest=%s; only None was offered", kv.Value)
			}
		case text.KeyMaxRecvDataSegmentLength:
			p.TargetMaxRecvDataSegmentLength, err = num()
			if err == nil && p.TargetMaxRecvDataSegmentLength < 512 {
				err = fmt.Errorf("target declared MaxRecvDataSegmentLength=%d, below 512", p.TargetMaxRecvDataSegmentLength)
			}
		case text.KeyMaxBurstLength:
			p.MaxBurstLength, err = num()
		case text.KeyFirstBurstLength:
			p.FirstBurstLength, err = num()
		case text.KeyImmediateData:
			p.ImmediateData = kv.Value == "Yes"
		case text.KeyInitialR2T:
			p.InitialR2T = kv.Value == "Yes"
		case text.KeyErrorRecoveryLevel:
			if kv.Value != "0" {
				err = fmt.Errorf("target answered ErrorRecoveryLevel=%s; only 0 is supported", kv.Value)
			}
		case text.KeyMaxOutstandingR2T:
			if kv.Value != "1" {
				err = fmt.Errorf("target answered MaxOutstandingR2T=%s; 1 was offered", kv.Value)
			}
		case text.KeyDataPDUInOrder, text.KeyDataSequenceInOrder:
			if kv.Value != "Yes" {
				err = fmt.Errorf("target answered %s=%s; in-order data is required", kv.Key, kv.Value)
			}
		}
		if err != nil {
			return err
		}
	}
	if p.MaxBurstLength < 512 || p.FirstBurstLength > p.MaxBurstLength {
		return fmt.Errorf("target settled MaxBurstLength=%d FirstBurstLength=%d", p.MaxBurstLength, p.FirstBurstLength)
	}
	return nil
}

// parseResponseText parses key=value text; unlike text.ParseText it lets
// keys repeat, as a target answering several rounds may.
func parseResponseText(b []byte) ([]text.KV, error) {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return nil, nil
	}
	var kvs []text.KV
	for _, pair := range strings.Split(string(b), "\x00") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, fmt.Errorf("%q has no '='", pair)
		}
		kvs = append(kvs, text.KV{Key: k, Value: v})
	}
	return kvs, nil
}

// encodeLoginRequest fills a Login Request header (RFC 7143 §11.12).
func encodeLoginRequest(h *pdu.Header, r loginRequest, isid [6]byte, itt, cmdSN, expStatSN uint32) []byte {
	*h = pdu.Header{}
	h[0] = 0x40 | byte(pdu.OpLoginReq) // login requests are immediate
	h[1] = r.CSG<<2 | r.NSG
	if r.Transit {
		h[1] |= 0x80
	} else {
		h[1] &^= 3 // NSG is reserved without T
	}
	if r.Continue {
		h[1] |= 0x40
	}
	h.SetISIDTSIH(isid, 0)
	h.SetITT(itt)
	// CID 0 (bytes 20-21).
	h.PutU32(pdu.OffCmdSN, cmdSN)
	h.PutU32(pdu.OffExpSN, expStatSN)
	return text.EncodeText(r.KVs)
}

// decodeLoginResponse reads a Login Response header.
func decodeLoginResponse(h *pdu.Header, data []byte) loginResponse {
	return loginResponse{
		Transit:  h[1]&0x80 != 0,
		Continue: h[1]&0x40 != 0,
		CSG:      h[1] >> 2 & 3,
		NSG:      h[1] & 3,
		Status:   text.Status(uint16(h[36])<<8 | uint16(h[37])),
		TSIH:     h.TSIH(),
		Data:     data,
	}
}
