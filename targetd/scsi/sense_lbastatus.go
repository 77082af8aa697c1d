package scsi

// Sense codes only GET LBA STATUS reports; sense.go holds the rest.
const (
	// SenseHardwareError is the sense key of a failure in the device
	// server itself rather than in the medium or the request.
	SenseHardwareError = 0x04
	// ascInternalTargetFailure: the backing device could not say which
	// blocks it holds (SPC-4 44h/00h).
	ascInternalTargetFailure asc = 0x4400
)
