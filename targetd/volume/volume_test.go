package volume

import "github.com/mhcodi/mhcodi/targetd/scsi"

// Volume is what the SCSI layer serves.
var _ scsi.BlockDev = (*Volume)(nil)
