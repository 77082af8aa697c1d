package volume

import (
	"fmt"

	"github.com/mhcodi/mhcodi/naming"
)

// ValidName reports why name is not a volume name mhcodi makes, or nil.
//
// A valid name is naming.VolumeName(guest, disk) for some valid guest and
// disk: "mhc-" then DNS labels joined by '-'. That leaves no '/', "." or
// "..", so a name joined to a directory or a volume group can never reach
// outside it, and no name can be mistaken for an lvm2 option.
func ValidName(name string) error {
	if len(naming.VolumeNameSplits(name)) == 0 {
		return fmt.Errorf("volume %q: %w: volume names are %s<guest>-<disk>, both lower-case DNS labels", name, ErrInvalidName, naming.LVPrefix)
	}
	return nil
}
