package login

import "strings"

// Key names (RFC 7143 §12, §13; RFC 7144 for iSCSIProtocolLevel; RFC 7145
// for the iSER keys).
const (
	KeyAuthMethod = "AuthMethod"
	KeyCHAPA      = "CHAP_A"
	KeyCHAPI      = "CHAP_I"
	KeyCHAPC      = "CHAP_C"
	KeyCHAPN      = "CHAP_N"
	KeyCHAPR      = "CHAP_R"

	KeyInitiatorName        = "InitiatorName"
	KeyInitiatorAlias       = "InitiatorAlias"
	KeyTargetName           = "TargetName"
	KeyTargetAlias          = "TargetAlias"
	KeyTargetAddress        = "TargetAddress"
	KeyTargetPortalGroupTag = "TargetPortalGroupTag"
	KeySessionType          = "SessionType"
	KeySendTargets          = "SendTargets"

	KeyHeaderDigest             = "HeaderDigest"
	KeyDataDigest               = "DataDigest"
	KeyMaxConnections           = "MaxConnections"
	KeyInitialR2T               = "InitialR2T"
	KeyImmediateData            = "ImmediateData"
	KeyMaxRecvDataSegmentLength = "MaxRecvDataSegmentLength"
	KeyMaxBurstLength           = "MaxBurstLength"
	KeyFirstBurstLength         = "FirstBurstLength"
	KeyDefaultTime2Wait         = "DefaultTime2Wait"
	KeyDefaultTime2Retain       = "DefaultTime2Retain"
	KeyMaxOutstandingR2T        = "MaxOutstandingR2T"
	KeyDataPDUInOrder           = "DataPDUInOrder"
	KeyDataSequenceInOrder      = "DataSequenceInOrder"
	KeyErrorRecoveryLevel       = "ErrorRecoveryLevel"
	KeyTaskReporting            = "TaskReporting"
	KeyProtocolLevel            = "iSCSIProtocolLevel"

	// Markers, obsoleted by RFC 7143 but still sent by RFC 3720
	// initiators (open-iscsi and libiscsi send IFMarker=No, OFMarker=No).
	KeyIFMarker  = "IFMarker"
	KeyOFMarker  = "OFMarker"
	KeyIFMarkInt = "IFMarkInt"
	KeyOFMarkInt = "OFMarkInt"

	// iSER (RFC 7145); we never agree to RDMA.
	KeyRDMAExtensions                 = "RDMAExtensions"
	KeyInitiatorRecvDataSegmentLength = "InitiatorRecvDataSegmentLength"
	KeyTargetRecvDataSegmentLength    = "TargetRecvDataSegmentLength"
)

// keyClass says how a key is handled during login.
type keyClass uint8

const (
	// classUnknown keys (including X- and X# extensions) are answered
	// NotUnderstood wherever they appear.
	classUnknown keyClass = iota
	// classIdentity keys name the two ends and the session type; they are
	// declared on the first request and may be repeated unchanged.
	classIdentity
	// classSecurity keys belong to the security stage only.
	classSecurity
	// classOperational keys are negotiated in the operational stage (and
	// in the security stage once authentication is complete).
	classOperational
	// classTargetOnly keys are sent by targets; an initiator offering one
	// gets Reject.
	classTargetOnly
	// classFFP keys are used in full feature phase only (SendTargets).
	classFFP
)

// keyUse is the "Use" of §13: when a key may be negotiated.
type keyUse uint8

const (
	useIO  keyUse = iota // login only, on every connection ("initialize only")
	useLO                // leading login only
	useALL               // login and full feature phase
	useFFP               // full feature phase only
)

// keySpec is what the package knows of one key.
type keySpec struct {
	class keyClass
	use   keyUse
	// maxLen is the longest value accepted by ParseText.
	maxLen int
	// discoveryIrrelevant keys are answered Irrelevant in discovery
	// sessions (§13: "Irrelevant when: SessionType=Discovery").
	discoveryIrrelevant bool
}

// keySpecs is read-only after package initialisation.
var keySpecs = map[string]keySpec{
	KeyAuthMethod: {class: classSecurity, use: useIO, maxLen: maxListValue},
	KeyCHAPA:      {class: classSecurity, use: useIO, maxLen: maxListValue},
	KeyCHAPI:      {class: classSecurity, use: useIO, maxLen: maxSimpleValue},
	KeyCHAPC:      {class: classSecurity, use: useIO, maxLen: maxBinaryText},
	KeyCHAPN:      {class: classSecurity, use: useIO, maxLen: maxSimpleValue},
	KeyCHAPR:      {class: classSecurity, use: useIO, maxLen: maxBinaryText},

	KeyInitiatorName:        {class: classIdentity, use: useIO, maxLen: maxNameLen},
	KeyInitiatorAlias:       {class: classIdentity, use: useALL, maxLen: maxSimpleValue},
	KeyTargetName:           {class: classIdentity, use: useIO, maxLen: maxNameLen},
	KeySessionType:          {class: classIdentity, use: useLO, maxLen: maxSimpleValue},
	KeyTargetAlias:          {class: classTargetOnly, use: useALL, maxLen: maxSimpleValue},
	KeyTargetAddress:        {class: classTargetOnly, use: useALL, maxLen: maxSimpleValue},
	KeyTargetPortalGroupTag: {class: classTargetOnly, use: useIO, maxLen: maxSimpleValue},
	KeySendTargets:          {class: classFFP, use: useFFP, maxLen: maxNameLen},

	KeyHeaderDigest:             {class: classOperational, use: useIO, maxLen: maxListValue},
	KeyDataDigest:               {class: classOperational, use: useIO, maxLen: maxListValue},
	KeyMaxConnections:           {class: classOperational, use: useLO, maxLen: maxSimpleValue, discoveryIrrelevant: true},
	KeyInitialR2T:               {class: classOperational, use: useLO, maxLen: maxSimpleValue, discoveryIrrelevant: true},
	KeyImmediateData:            {class: classOperational, use: useLO, maxLen: maxSimpleValue, discoveryIrrelevant: true},
	KeyMaxRecvDataSegmentLength: {class: classOperational, use: useALL, maxLen: maxSimpleValue},
	KeyMaxBurstLength:           {class: classOperational, use: useLO, maxLen: maxSimpleValue, discoveryIrrelevant: true},
	KeyFirstBurstLength:         {class: classOperational, use: useLO, maxLen: maxSimpleValue, discoveryIrrelevant: true},
	KeyDefaultTime2Wait:         {class: classOperational, use: useLO, maxLen: maxSimpleValue},
	KeyDefaultTime2Retain:       {class: classOperational, use: useLO, maxLen: maxSimpleValue},
	KeyMaxOutstandingR2T:        {class: classOperational, use: useLO, maxLen: maxSimpleValue, discoveryIrrelevant: true},
	KeyDataPDUInOrder:           {class: classOperational, use: useLO, maxLen: maxSimpleValue, discoveryIrrelevant: true},
	KeyDataSequenceInOrder:      {class: classOperational, use: useLO, maxLen: maxSimpleValue, discoveryIrrelevant: true},
	KeyErrorRecoveryLevel:       {class: classOperational, use: useLO, maxLen: maxSimpleValue},
	KeyTaskReporting:            {class: classOperational, use: useLO, maxLen: maxListValue, discoveryIrrelevant: true},
	KeyProtocolLevel:            {class: classOperational, use: useLO, maxLen: maxSimpleValue},

	KeyIFMarker:  {class: classOperational, use: useIO, maxLen: maxSimpleValue},
	KeyOFMarker:  {class: classOperational, use: useIO, maxLen: maxSimpleValue},
	KeyIFMarkInt: {class: classOperational, use: useIO, maxLen: maxSimpleValue},
	KeyOFMarkInt: {class: classOperational, use: useIO, maxLen: maxSimpleValue},

	KeyRDMAExtensions:                 {class: classOperational, use: useLO, maxLen: maxSimpleValue},
	KeyInitiatorRecvDataSegmentLength: {class: classOperational, use: useALL, maxLen: maxSimpleValue},
	KeyTargetRecvDataSegmentLength:    {class: classOperational, use: useALL, maxLen: maxSimpleValue},
}

// lookupKey returns the spec of key; unknown keys get classUnknown.
func lookupKey(key string) keySpec {
	if s, ok := keySpecs[key]; ok {
		return s
	}
	return keySpec{class: classUnknown, use: useALL, maxLen: maxUnknownValue}
}

// valueLimit returns the longest value ParseText accepts for key, and
// whether the key is one we know.
func valueLimit(key string) (int, bool) {
	if s, ok := keySpecs[key]; ok {
		return s.maxLen, true
	}
	return maxUnknownValue, false
}

// isReserved reports whether v is one of the answer-only constants; an
// initiator "offering" one is answering something we never asked, and it
// is ignored.
func isReserved(v string) bool {
	return v == valueReject || v == valueIrrelevant || v == valueNotUnderstood
}

// splitList splits a list-of-values.
func splitList(v string) []string { return strings.Split(v, ",") }

// listHas reports whether the list-of-values v contains want.
func listHas(v, want string) bool {
	for _, e := range splitList(v) {
		if e == want {
			return true
		}
	}
	return false
}
