package login

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mhcodi/mhcodi/iscsi/text"
)

// Limits on what one login may cost the target.
const (
	// maxLoginText bounds the key=value text accumulated over C=1 PDUs
	// (§6.1 requires accepting at least 8192 bytes).
	maxLoginText = 64 << 10
	// maxLoginRequests bounds the PDUs of one login, so an initiator
	// cannot keep a half-open login alive forever by sending empty
	// requests (the engine's login timeout is the other guard).
	maxLoginRequests = 1024
)

// Request is the part of one Login Request PDU the negotiation needs.
type Request struct {
	Transit, Continue      bool
	CSG, NSG               uint8 // 0 security, 1 operational, 3 full feature
	VersionMax, VersionMin uint8
	ISID                   [6]byte
	TSIH                   uint16
	CID                    uint16
	Data                   []byte // this PDU's data segment, without padding
}

// Leading reports whether the request starts a new session (TSIH 0).
func (r Request) Leading() bool { return r.TSIH == 0 }

// Response is the part of the Login Response PDU the negotiation decides.
// The engine fills in the rest (ITT, TSIH, StatSN, ExpCmdSN, MaxCmdSN).
type Response struct {
	Transit, Continue         bool
	CSG, NSG                  uint8
	VersionMax, VersionActive uint8 // always 0x00
	StatusClass, StatusDetail uint8 // RFC 7143 §11.13.5
	Data                      []byte
}

// Status returns the response's status as one value.
func (r Response) Status() text.Status {
	return text.Status(r.StatusClass)<<8 | text.Status(r.StatusDetail)
}

// Decision is the caller's verdict on an initiator reaching a target.
type Decision struct {
	// Allowed lets the login proceed; otherwise it fails with 0x0202.
	Allowed bool
	// NotFound: the target does not exist; the login fails with 0x0203.
	NotFound bool
	// CHAP, when set, requires the initiator to answer our challenge as
	// this user with this secret.
	CHAP *text.Credentials
	// MutualCHAP, when set (with CHAP), is how the target answers an
	// initiator that challenges it back; nil refuses mutual CHAP.
	MutualCHAP *text.Credentials
	// TargetAlias, when set, is declared to the initiator.
	TargetAlias string
}

// Config configures a Login.
type Config struct {
	// Limits are the target's side of the negotiation (zero: defaults).
	Limits Limits
	// Authorize is called once per login, when the initiator and target
	// names are known (targetName is "" for discovery sessions). A nil
	// Authorize refuses every login: access is never granted by omission.
	// An error fails the login with 0x0300 (target error).
	Authorize func(initiatorName, targetName string, discovery bool) (Decision, error)
	// Rand provides CHAP identifiers and challenges; nil means
	// crypto/rand. Tests pass a fixed reader.
	Rand io.Reader
}

// SessionType is the session type declared by the initiator.
type SessionType uint8

// Session types (§13.21).
const (
	SessionNormal SessionType = iota
	SessionDiscovery
)

func (s SessionType) String() string {
	if s == SessionDiscovery {
		return "Discovery"
	}
	return "Normal"
}

// Result is the outcome of a login, complete once Done reports true.
type Result struct {
	Params Params
	// InitiatorName and TargetName are lower-cased (iSCSI names compare
	// case-insensitively, RFC 3722); TargetName is "" for discovery.
	InitiatorName  string
	InitiatorAlias string
	TargetName     string
	SessionType    SessionType
	ISID           [6]byte
	// TSIH is the TSIH of the requests: 0 for a leading login, for which
	// the engine allocates one.
	TSIH    uint16
	CID     uint16
	Leading bool
	// CHAP reports that the initiator authenticated with CHAP as CHAPUser;
	// MutualCHAP that the target authenticated itself back.
	CHAP       bool
	MutualCHAP bool
	CHAPUser   string
}

// Login negotiates one connection's login. It is not safe for concurrent
// use; a connection's PDUs are processed in order anyway.
type Login struct {
	lim       Limits
	authorize func(string, string, bool) (Decision, error)
	rand      io.Reader

	started  bool
	first    Request // header fields of the first request
	stage    uint8
	requests int
	failed   bool
	done     bool

	identified bool
	res        Result
	decision   Decision
	chap       *chapServer // nil when the decision requires no CHAP
	authMethod string      // "None" or "CHAP" once agreed
	seen       map[string]bool

	neg           negotiator
	declaredTPGT  bool
	declaredMRDSL bool

	inbuf          []byte   // request text accumulated over C=1 PDUs
	pending        [][]byte // response pieces still to send (C=1)
	pendingTransit bool
	pendingNSG     uint8
}

// New returns a Login waiting for the first Login Request of a connection.
func New(cfg Config) *Login {
	l := &Login{
		lim:       cfg.Limits.withDefaults(),
		authorize: cfg.Authorize,
		rand:      cfg.Rand,
		seen:      map[string]bool{},
	}
	if l.rand == nil {
		l.rand = rand.Reader
	}
	l.res.Params = DefaultParams()
	l.neg = negotiator{lim: l.lim, p: &l.res.Params, leading: true}
	return l
}

// Done reports whether the login reached full feature phase.
func (l *Login) Done() bool { return l.done }

// Stage is the current login stage.
func (l *Login) Stage() uint8 { return l.stage }

// Result returns what was negotiated; complete once Done is true.
func (l *Login) Result() Result { return l.res }

// Step processes one Login Request and returns the Login Response to send.
// A non-nil error (an *Error) comes with a reject response (non-zero
// Status-Class): the engine sends it and closes the connection.
func (l *Login) Step(req Request) (Response, error) {
	if l.done || l.failed {
		return l.fail(loginError(text.StatusInitiatorError, "login request after the login ended"))
	}
	l.requests++
	if l.requests > maxLoginRequests {
		return l.fail(loginError(text.StatusInitiatorError, "more than %d login requests", maxLoginRequests))
	}
	if e := l.checkHeader(req); e != nil {
		return l.fail(e)
	}
	if len(l.pending) > 0 {
		return l.nextPiece(req)
	}
	if len(l.inbuf)+len(req.Data) > maxLoginText {
		return l.fail(loginError(text.StatusInitiatorError, "login text longer than %d bytes", maxLoginText))
	}
	if req.Continue {
		// §6.1, §11.12.2: the text goes on in the next PDU; acknowledge
		// with an empty response and keep the bytes (a pair may straddle).
		l.inbuf = append(l.inbuf, req.Data...)
		return Response{CSG: l.stage}, nil
	}
	data := req.Data
	if len(l.inbuf) > 0 {
		data = append(l.inbuf, req.Data...)
		l.inbuf = nil
	}
	kvs, err := text.ParseText(data)
	if err != nil {
		return l.fail(loginError(text.StatusInitiatorError, "malformed login text: %w", err))
	}
	replies, transit, e := l.negotiate(req, kvs)
	if e != nil {
		return l.fail(e)
	}
	return l.respond(req, replies, transit)
}

// fail ends the login with a reject response carrying e's status.
func (l *Login) fail(e *Error) (Response, error) {
	l.failed = true
	l.inbuf, l.pending = nil, nil
	return Response{CSG: l.stage, StatusClass: e.Status.Class(), StatusDetail: e.Status.Detail()}, e
}

// checkHeader validates the stage fields and the fields that must not
// change during a login (§11.12).
func (l *Login) checkHeader(req Request) *Error {
	if !l.started {
		// Only version 0x00 exists; the range must include it.
		if req.VersionMin > 0 {
			return loginError(text.StatusUnsupportedVersion, "initiator supports versions 0x%02x-0x%02x, target only 0x00", req.VersionMin, req.VersionMax)
		}
		if req.CSG != text.StageSecurity && req.CSG != text.StageOperational {
			return loginError(text.StatusInitiatorError, "first login request has CSG %d; it must start in the security (0) or operational (1) stage", req.CSG)
		}
		l.started = true
		l.first = req
		l.first.Data = nil // only the header fields are kept, not the engine's buffer
		l.stage = req.CSG
		l.res.ISID, l.res.TSIH, l.res.CID, l.res.Leading = req.ISID, req.TSIH, req.CID, req.Leading()
		l.neg.leading = req.Leading()
	} else {
		switch {
		case req.ISID != l.first.ISID:
			return loginError(text.StatusInitiatorError, "ISID changed during login from %x to %x", l.first.ISID, req.ISID)
		case req.TSIH != l.first.TSIH:
			return loginError(text.StatusInitiatorError, "TSIH changed during login from %d to %d", l.first.TSIH, req.TSIH)
		case req.CID != l.first.CID:
			return loginError(text.StatusInitiatorError, "CID changed during login from %d to %d", l.first.CID, req.CID)
		case req.VersionMax != l.first.VersionMax || req.VersionMin != l.first.VersionMin:
			return loginError(text.StatusInitiatorError, "version range changed during login")
		case req.CSG != l.stage:
			return loginError(text.StatusInitiatorError, "request has CSG %d but the login is in stage %d", req.CSG, l.stage)
		}
	}
	if req.Transit && req.Continue {
		return loginError(text.StatusInitiatorError, "login request has both the T and C bits set")
	}
	if req.Transit && !(req.NSG > req.CSG && (req.NSG == text.StageOperational || req.NSG == text.StageFullFeature)) {
		return loginError(text.StatusInitiatorError, "invalid stage transition from %d to %d", req.CSG, req.NSG)
	}
	return nil
}

// negotiate processes one complete request text: identity, then the keys
// of the current stage. It returns the answers and whether to transit.
func (l *Login) negotiate(req Request, kvs []text.KV) ([]text.KV, bool, *Error) {
	// §6.2: a key may be offered only once per login. The identity keys
	// are the exception: libiscsi repeats InitiatorName, InitiatorAlias,
	// TargetName and SessionType in its operational stage after CHAP, so
	// an unchanged repetition is accepted (and a changed one refused by
	// identify).
	for _, kv := range kvs {
		if lookupKey(kv.Key).class == classIdentity {
			continue
		}
		if l.seen[kv.Key] {
			return nil, false, loginError(text.StatusInitiatorError, "key %s offered twice during login", kv.Key)
		}
		l.seen[kv.Key] = true
	}
	if e := l.identify(kvs); e != nil {
		return nil, false, e
	}

	var sec, ops []text.KV
	for _, kv := range kvs {
		switch lookupKey(kv.Key).class {
		case classIdentity:
		case classSecurity:
			sec = append(sec, kv)
		default:
			ops = append(ops, kv)
		}
	}

	var replies []text.KV
	switch l.stage {
	case text.StageSecurity:
		r, e := l.security(req, sec)
		if e != nil {
			return nil, false, e
		}
		replies = r
		if !l.authenticated() {
			// Answering operational keys before the initiator is
			// authenticated would negotiate with an unknown peer.
			for _, kv := range ops {
				if lookupKey(kv.Key).class == classOperational {
					return nil, false, loginError(text.StatusInitiatorError, "operational key %s sent in the security stage before authentication completed", kv.Key)
				}
			}
		}
	case text.StageOperational:
		if !l.authenticated() {
			// Skipping the security stage of a target that requires CHAP.
			return nil, false, loginError(text.StatusAuthFailed, "initiator entered the operational stage without authenticating; CHAP is required")
		}
		if len(sec) > 0 {
			return nil, false, loginError(text.StatusInitiatorError, "security key %s sent in the operational stage", sec[0].Key)
		}
	}
	for _, kv := range ops {
		if lookupKey(kv.Key).class == classTargetOnly && !text.IsReserved(kv.Value) {
			// Only targets declare these (§13); an answer would also
			// collide with our own declaration of the same key.
			return nil, false, loginError(text.StatusInitiatorError, "initiator sent the target key %s", kv.Key)
		}
		a, ok := l.neg.reply(kv.Key, kv.Value)
		if !ok {
			continue
		}
		if kv.Key == text.KeyMaxRecvDataSegmentLength {
			// Declarative: there is no answer to give but our own
			// declaration, so an unusable value cannot be refused with
			// Reject; sending it PDUs of the default size could overrun it.
			return nil, false, loginError(text.StatusInitiatorError, "invalid MaxRecvDataSegmentLength=%s (512 to 16777215)", text.Truncate(kv.Value))
		}
		replies = append(replies, text.KV{Key: kv.Key, Value: a})
	}
	l.neg.settle(replies)
	replies = append(replies, l.declarations()...)

	transit := req.Transit && l.authenticated()
	return replies, transit, nil
}

// identify handles the identity keys. On the first complete text it
// requires the names, asks Authorize, and sets up CHAP; later it only
// checks that repetitions are unchanged.
func (l *Login) identify(kvs []text.KV) *Error {
	get := func(k string) (string, bool) { return text.Lookup(kvs, k) }
	if l.identified {
		for _, kv := range kvs {
			switch kv.Key {
			case text.KeyInitiatorName:
				if n, err := normalizeName(kv.Value); err != nil || n != l.res.InitiatorName {
					return loginError(text.StatusInitiatorError, "InitiatorName changed during login to %q", text.Truncate(kv.Value))
				}
			case text.KeyTargetName:
				if l.res.SessionType == SessionDiscovery {
					continue // meaningless in discovery, as on the first request
				}
				if n, err := normalizeName(kv.Value); err != nil || n != l.res.TargetName {
					return loginError(text.StatusInitiatorError, "TargetName changed during login to %q", text.Truncate(kv.Value))
				}
			case text.KeySessionType:
				if kv.Value != l.res.SessionType.String() {
					return loginError(text.StatusInitiatorError, "SessionType changed during login to %q", text.Truncate(kv.Value))
				}
			case text.KeyInitiatorAlias:
				if l.seen[text.KeyInitiatorAlias] && kv.Value != l.res.InitiatorAlias {
					return loginError(text.StatusInitiatorError, "InitiatorAlias changed during login")
				}
				l.seen[text.KeyInitiatorAlias] = true
				l.res.InitiatorAlias = kv.Value
			}
		}
		return nil
	}

	iname, ok := get(text.KeyInitiatorName)
	if !ok {
		return loginError(text.StatusMissingParameter, "first login request has no InitiatorName")
	}
	in, err := normalizeName(iname)
	if err != nil {
		return loginError(text.StatusInitiatorError, "InitiatorName: %w", err)
	}
	l.res.InitiatorName = in
	if alias, ok := get(text.KeyInitiatorAlias); ok {
		l.res.InitiatorAlias = alias
		l.seen[text.KeyInitiatorAlias] = true
	}
	if st, ok := get(text.KeySessionType); ok {
		switch st {
		case "Normal":
			l.res.SessionType = SessionNormal
		case "Discovery":
			l.res.SessionType = SessionDiscovery
		default:
			return loginError(text.StatusSessionTypeNotSupported, "SessionType %q is neither Normal nor Discovery", text.Truncate(st))
		}
	}
	discovery := l.res.SessionType == SessionDiscovery
	if !discovery {
		tname, ok := get(text.KeyTargetName)
		if !ok {
			return loginError(text.StatusMissingParameter, "normal session login has no TargetName")
		}
		tn, err := normalizeName(tname)
		if err != nil {
			return loginError(text.StatusInitiatorError, "TargetName: %w", err)
		}
		l.res.TargetName = tn
	}
	l.neg.discovery = discovery

	if l.authorize == nil {
		return loginError(text.StatusTargetError, "no Authorize function configured; refusing every login")
	}
	d, err := l.authorize(l.res.InitiatorName, l.res.TargetName, discovery)
	if err != nil {
		return loginError(text.StatusTargetError, "authorizing %s for %q: %w", l.res.InitiatorName, l.res.TargetName, err)
	}
	switch {
	case d.NotFound:
		return loginError(text.StatusNotFound, "target %q not found for %s", l.res.TargetName, l.res.InitiatorName)
	case !d.Allowed:
		return loginError(text.StatusAuthorizationFailed, "%s may not reach target %q", l.res.InitiatorName, l.res.TargetName)
	}
	if d.CHAP != nil {
		if err := checkCredentials(d.CHAP, d.MutualCHAP); err != nil {
			return loginError(text.StatusTargetError, "CHAP configuration for %s: %w", l.res.InitiatorName, err)
		}
		l.chap = &chapServer{creds: *d.CHAP, mutual: d.MutualCHAP}
	}
	l.decision = d
	l.identified = true
	return nil
}

// authenticated reports whether the security requirements are met.
func (l *Login) authenticated() bool {
	return l.chap == nil || l.chap.state == chapDone
}

// security handles the security stage keys (§12): AuthMethod and CHAP.
func (l *Login) security(req Request, sec []text.KV) ([]text.KV, *Error) {
	keys := make(map[string]string, len(sec))
	for _, kv := range sec {
		keys[kv.Key] = kv.Value
	}
	am, hasAM := keys[text.KeyAuthMethod]
	delete(keys, text.KeyAuthMethod)

	if l.chap == nil {
		var out []text.KV
		if hasAM {
			if !text.ListHas(am, "None") {
				// The initiator insists on authenticating and we have no
				// credentials for it: it could never trust this login.
				return nil, loginError(text.StatusAuthFailed, "initiator offers AuthMethod=%s; no CHAP is configured for it", text.Truncate(am))
			}
			l.authMethod = "None"
			out = append(out, text.KV{Key: text.KeyAuthMethod, Value: "None"})
		}
		if k, ok := firstOther(sec, text.KeyAuthMethod); ok {
			return nil, loginError(text.StatusInitiatorError, "%s sent without CHAP being negotiated", k)
		}
		return out, nil
	}

	c := l.chap
	var out []text.KV
	if c.state == chapStart {
		if !hasAM {
			if req.Transit {
				return nil, loginError(text.StatusAuthFailed, "initiator tried to leave the security stage without offering an AuthMethod; CHAP is required")
			}
			if len(keys) > 0 {
				return nil, loginError(text.StatusInitiatorError, "CHAP keys sent before AuthMethod=CHAP was agreed")
			}
			return nil, nil
		}
		if !text.ListHas(am, "CHAP") {
			return nil, loginError(text.StatusAuthFailed, "initiator offers AuthMethod=%s; the target requires CHAP", text.Truncate(am))
		}
		l.authMethod = "CHAP"
		c.state = chapWantAlgorithm
		out = append(out, text.KV{Key: text.KeyAuthMethod, Value: "CHAP"})
	} else if hasAM {
		return nil, loginError(text.StatusInitiatorError, "AuthMethod offered again during CHAP")
	}

	switch c.state {
	case chapWantAlgorithm:
		alg, ok := keys[text.KeyCHAPA]
		if len(keys) > 1 || (len(keys) == 1 && !ok) {
			return nil, loginError(text.StatusInitiatorError, "CHAP keys out of sequence: expected CHAP_A")
		}
		if !ok {
			if req.Transit && !hasAM {
				return nil, loginError(text.StatusAuthFailed, "initiator tried to leave the security stage before CHAP")
			}
			return out, nil
		}
		r, e := c.algorithm(alg, l.rand)
		if e != nil {
			return nil, e
		}
		return append(out, r...), nil
	case chapWantResponse:
		if len(keys) == 0 {
			if req.Transit {
				return nil, loginError(text.StatusAuthFailed, "initiator tried to leave the security stage without answering the CHAP challenge")
			}
			return out, nil
		}
		if _, ok := keys[text.KeyCHAPA]; ok {
			return nil, loginError(text.StatusInitiatorError, "CHAP_A sent again")
		}
		r, e := c.verify(keys)
		if e != nil {
			return nil, e
		}
		l.res.CHAP, l.res.CHAPUser, l.res.MutualCHAP = true, c.creds.User, c.mutualDone
		return append(out, r...), nil
	default: // chapDone
		if k, ok := firstOther(sec, text.KeyAuthMethod); ok {
			return nil, loginError(text.StatusInitiatorError, "%s sent after CHAP completed", k)
		}
		return out, nil
	}
}

// firstOther returns the first key of kvs other than skip, so error
// messages name keys in the initiator's order.
func firstOther(kvs []text.KV, skip string) (string, bool) {
	for _, kv := range kvs {
		if kv.Key != skip {
			return kv.Key, true
		}
	}
	return "", false
}

// declarations are the keys the target declares on its own: the portal
// group tag and alias in the first response of a Normal session (§13.9;
// open-iscsi accepts them in either stage), and its MaxRecvDataSegmentLength
// in the first operational stage response.
func (l *Login) declarations() []text.KV {
	var out []text.KV
	if !l.declaredTPGT && l.res.SessionType == SessionNormal {
		l.declaredTPGT = true
		if l.decision.TargetAlias != "" {
			out = append(out, text.KV{Key: text.KeyTargetAlias, Value: l.decision.TargetAlias})
		}
		out = append(out, text.KV{Key: text.KeyTargetPortalGroupTag, Value: fmt.Sprint(l.lim.TargetPortalGroupTag)})
	}
	if !l.declaredMRDSL && l.stage == text.StageOperational {
		l.declaredMRDSL = true
		l.res.Params.TargetMaxRecvDataSegmentLength = l.lim.MaxRecvDataSegmentLength
		out = append(out, text.KV{Key: text.KeyMaxRecvDataSegmentLength, Value: fmt.Sprint(l.lim.MaxRecvDataSegmentLength)})
	}
	return out
}

// respond encodes the answers, splitting them over several PDUs when they
// exceed what the initiator accepts in one login response.
func (l *Login) respond(req Request, replies []text.KV, transit bool) (Response, error) {
	limit := min(loginSegmentSize, int(l.res.Params.InitiatorMaxRecvDataSegmentLength))
	pieces := text.SplitData(text.EncodeText(replies), limit)
	if len(pieces) > 1 {
		// §11.13: a response with C=1 must have T=0; the stage change, if
		// any, happens with the last piece.
		l.pending = pieces[1:]
		l.pendingTransit, l.pendingNSG = transit, req.NSG
		return Response{CSG: l.stage, Continue: true, Data: pieces[0]}, nil
	}
	return l.finish(pieces[0], transit, req.NSG), nil
}

// nextPiece sends the next part of a response split over several PDUs.
func (l *Login) nextPiece(req Request) (Response, error) {
	if req.Continue || len(req.Data) > 0 {
		return l.fail(loginError(text.StatusInitiatorError, "initiator sent login text while the target's response was continuing"))
	}
	piece := l.pending[0]
	l.pending = l.pending[1:]
	if len(l.pending) > 0 {
		return Response{CSG: l.stage, Continue: true, Data: piece}, nil
	}
	// The target may only set T when the current request has T (§11.13.3).
	transit := l.pendingTransit && req.Transit && req.NSG == l.pendingNSG
	return l.finish(piece, transit, l.pendingNSG), nil
}

// finish builds the last (or only) response to a request and applies the
// stage transition.
func (l *Login) finish(data []byte, transit bool, nsg uint8) Response {
	resp := Response{CSG: l.stage, Data: data}
	if !transit {
		return resp
	}
	resp.Transit, resp.NSG = true, nsg
	l.stage = nsg
	if nsg == text.StageFullFeature {
		l.done = true
	}
	return resp
}

// normalizeName checks an iSCSI name (§4.2.7) and lower-cases it: names
// are case-insensitive (RFC 3722). Full stringprep is not applied; names
// are only required to have a known type prefix, fit in 223 bytes and hold
// no spaces or control characters.
func normalizeName(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty iSCSI name")
	}
	if len(s) > text.MaxNameLen {
		return "", fmt.Errorf("iSCSI name %q is longer than %d bytes", text.Truncate(s), text.MaxNameLen)
	}
	if !utf8.ValidString(s) {
		return "", errors.New("iSCSI name is not UTF-8")
	}
	n := strings.ToLower(s)
	if !strings.HasPrefix(n, "iqn.") && !strings.HasPrefix(n, "eui.") && !strings.HasPrefix(n, "naa.") {
		return "", fmt.Errorf("%q is not an iqn., eui. or naa. name", text.Truncate(s))
	}
	for _, r := range n {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return "", fmt.Errorf("iSCSI name %q has a space or control character", text.Truncate(s))
		}
	}
	return n, nil
}
