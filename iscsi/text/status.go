package text

import "fmt"

// Status is a Login Response status: Status-Class in the high byte,
// Status-Detail in the low byte (RFC 7143 §11.13.5).
type Status uint16

// Login Response statuses (RFC 7143 §11.13.5).
const (
	StatusSuccess                 Status = 0x0000
	StatusTargetMovedTemporarily  Status = 0x0101
	StatusTargetMovedPermanently  Status = 0x0102
	StatusInitiatorError          Status = 0x0200
	StatusAuthFailed              Status = 0x0201
	StatusAuthorizationFailed     Status = 0x0202
	StatusNotFound                Status = 0x0203
	StatusTargetRemoved           Status = 0x0204
	StatusUnsupportedVersion      Status = 0x0205
	StatusTooManyConnections      Status = 0x0206
	StatusMissingParameter        Status = 0x0207
	StatusCannotIncludeInSession  Status = 0x0208
	StatusSessionTypeNotSupported Status = 0x0209
	StatusSessionDoesNotExist     Status = 0x020a
	StatusInvalidDuringLogin      Status = 0x020b
	StatusTargetError             Status = 0x0300
	StatusServiceUnavailable      Status = 0x0301
	StatusOutOfResources          Status = 0x0302
)

// Class is the Status-Class byte: 0 success, 1 redirection, 2 initiator
// error, 3 target error.
func (s Status) Class() uint8 { return uint8(s >> 8) }

// Detail is the Status-Detail byte.
func (s Status) Detail() uint8 { return uint8(s) }

var statusText = map[Status]string{
	StatusSuccess:                 "success",
	StatusTargetMovedTemporarily:  "target moved temporarily",
	StatusTargetMovedPermanently:  "target moved permanently",
	StatusInitiatorError:          "initiator error",
	StatusAuthFailed:              "authentication failure",
	StatusAuthorizationFailed:     "authorization failure",
	StatusNotFound:                "target not found",
	StatusTargetRemoved:           "target removed",
	StatusUnsupportedVersion:      "unsupported version",
	StatusTooManyConnections:      "too many connections",
	StatusMissingParameter:        "missing parameter",
	StatusCannotIncludeInSession:  "can't include in session",
	StatusSessionTypeNotSupported: "session type not supported",
	StatusSessionDoesNotExist:     "session does not exist",
	StatusInvalidDuringLogin:      "invalid request during login",
	StatusTargetError:             "target error",
	StatusServiceUnavailable:      "service unavailable",
	StatusOutOfResources:          "out of resources",
}

func (s Status) String() string {
	if t, ok := statusText[s]; ok {
		return fmt.Sprintf("0x%04x (%s)", uint16(s), t)
	}
	return fmt.Sprintf("0x%04x", uint16(s))
}

// Login stages (CSG/NSG, RFC 7143 §11.12.3).
const (
	StageSecurity    uint8 = 0
	StageOperational uint8 = 1
	StageFullFeature uint8 = 3
)
