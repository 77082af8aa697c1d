package login

import "github.com/mhcodi/mhcodi/iscsi/text"

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

// keySpec is what the login state machine knows of one key (the value
// limits are package text's).
type keySpec struct {
	class keyClass
	use   keyUse
	// discoveryIrrelevant keys are answered Irrelevant in discovery
	// sessions (§13: "Irrelevant when: SessionType=Discovery").
	discoveryIrrelevant bool
}

// keySpecs is read-only after package initialisation.
var keySpecs = map[string]keySpec{
	text.KeyAuthMethod: {class: classSecurity, use: useIO},
	text.KeyCHAPA:      {class: classSecurity, use: useIO},
	text.KeyCHAPI:      {class: classSecurity, use: useIO},
	text.KeyCHAPC:      {class: classSecurity, use: useIO},
	text.KeyCHAPN:      {class: classSecurity, use: useIO},
	text.KeyCHAPR:      {class: classSecurity, use: useIO},

	text.KeyInitiatorName:        {class: classIdentity, use: useIO},
	text.KeyInitiatorAlias:       {class: classIdentity, use: useALL},
	text.KeyTargetName:           {class: classIdentity, use: useIO},
	text.KeySessionType:          {class: classIdentity, use: useLO},
	text.KeyTargetAlias:          {class: classTargetOnly, use: useALL},
	text.KeyTargetAddress:        {class: classTargetOnly, use: useALL},
	text.KeyTargetPortalGroupTag: {class: classTargetOnly, use: useIO},
	text.KeySendTargets:          {class: classFFP, use: useFFP},

	text.KeyHeaderDigest:             {class: classOperational, use: useIO},
	text.KeyDataDigest:               {class: classOperational, use: useIO},
	text.KeyMaxConnections:           {class: classOperational, use: useLO, discoveryIrrelevant: true},
	text.KeyInitialR2T:               {class: classOperational, use: useLO, discoveryIrrelevant: true},
	text.KeyImmediateData:            {class: classOperational, use: useLO, discoveryIrrelevant: true},
	text.KeyMaxRecvDataSegmentLength: {class: classOperational, use: useALL},
	text.KeyMaxBurstLength:           {class: classOperational, use: useLO, discoveryIrrelevant: true},
	text.KeyFirstBurstLength:         {class: classOperational, use: useLO, discoveryIrrelevant: true},
	text.KeyDefaultTime2Wait:         {class: classOperational, use: useLO},
	text.KeyDefaultTime2Retain:       {class: classOperational, use: useLO},
	text.KeyMaxOutstandingR2T:        {class: classOperational, use: useLO, discoveryIrrelevant: true},
	text.KeyDataPDUInOrder:           {class: classOperational, use: useLO, discoveryIrrelevant: true},
	text.KeyDataSequenceInOrder:      {class: classOperational, use: useLO, discoveryIrrelevant: true},
	text.KeyErrorRecoveryLevel:       {class: classOperational, use: useLO},
	text.KeyTaskReporting:            {class: classOperational, use: useLO, discoveryIrrelevant: true},
	text.KeyProtocolLevel:            {class: classOperational, use: useLO},

	text.KeyIFMarker:  {class: classOperational, use: useIO},
	text.KeyOFMarker:  {class: classOperational, use: useIO},
	text.KeyIFMarkInt: {class: classOperational, use: useIO},
	text.KeyOFMarkInt: {class: classOperational, use: useIO},

	text.KeyRDMAExtensions:                 {class: classOperational, use: useLO},
	text.KeyInitiatorRecvDataSegmentLength: {class: classOperational, use: useALL},
	text.KeyTargetRecvDataSegmentLength:    {class: classOperational, use: useALL},
}

// lookupKey returns the spec of key; unknown keys get classUnknown.
func lookupKey(key string) keySpec {
	if s, ok := keySpecs[key]; ok {
		return s
	}
	return keySpec{class: classUnknown, use: useALL}
}
