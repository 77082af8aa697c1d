package text

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

// valueLimits is the longest value ParseText accepts for each key we know;
// read-only after package initialisation.
var valueLimits = map[string]int{
	KeyAuthMethod: maxListValue,
	KeyCHAPA:      maxListValue,
	KeyCHAPI:      MaxSimpleValue,
	KeyCHAPC:      maxBinaryText,
	KeyCHAPN:      MaxSimpleValue,
	KeyCHAPR:      maxBinaryText,

	KeyInitiatorName:        MaxNameLen,
	KeyInitiatorAlias:       MaxSimpleValue,
	KeyTargetName:           MaxNameLen,
	KeySessionType:          MaxSimpleValue,
	KeyTargetAlias:          MaxSimpleValue,
	KeyTargetAddress:        MaxSimpleValue,
	KeyTargetPortalGroupTag: MaxSimpleValue,
	KeySendTargets:          MaxNameLen,

	KeyHeaderDigest:             maxListValue,
	KeyDataDigest:               maxListValue,
	KeyMaxConnections:           MaxSimpleValue,
	KeyInitialR2T:               MaxSimpleValue,
	KeyImmediateData:            MaxSimpleValue,
	KeyMaxRecvDataSegmentLength: MaxSimpleValue,
	KeyMaxBurstLength:           MaxSimpleValue,
	KeyFirstBurstLength:         MaxSimpleValue,
	KeyDefaultTime2Wait:         MaxSimpleValue,
	KeyDefaultTime2Retain:       MaxSimpleValue,
	KeyMaxOutstandingR2T:        MaxSimpleValue,
	KeyDataPDUInOrder:           MaxSimpleValue,
	KeyDataSequenceInOrder:      MaxSimpleValue,
	KeyErrorRecoveryLevel:       MaxSimpleValue,
	KeyTaskReporting:            maxListValue,
	KeyProtocolLevel:            MaxSimpleValue,

	KeyIFMarker:  MaxSimpleValue,
	KeyOFMarker:  MaxSimpleValue,
	KeyIFMarkInt: MaxSimpleValue,
	KeyOFMarkInt: MaxSimpleValue,

	KeyRDMAExtensions:                 MaxSimpleValue,
	KeyInitiatorRecvDataSegmentLength: MaxSimpleValue,
	KeyTargetRecvDataSegmentLength:    MaxSimpleValue,
}

// valueLimit returns the longest value ParseText accepts for key, and
// whether the key is one we know.
func valueLimit(key string) (int, bool) {
	if n, ok := valueLimits[key]; ok {
		return n, true
	}
	return maxUnknownValue, false
}

// IsReserved reports whether v is one of the answer-only constants; an
// initiator "offering" one is answering something we never asked, and it
// is ignored.
func IsReserved(v string) bool {
	return v == ValueReject || v == ValueIrrelevant || v == ValueNotUnderstood
}

// SplitList splits a list-of-values.
func SplitList(v string) []string { return strings.Split(v, ",") }

// ListHas reports whether the list-of-values v contains want.
func ListHas(v, want string) bool {
	for _, e := range SplitList(v) {
		if e == want {
			return true
		}
	}
	return false
}
