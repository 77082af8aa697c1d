package volume

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Mapped reports whether the byte at off has storage behind it and how
// many bytes from off on (1 to limit, and not past the volume's end) share
// that state: targetd's GET LBA STATUS (it implements scsi.BlockMapper).
//
// It asks the kernel with SEEK_DATA and SEEK_HOLE, which sees what the
// filesystem sees, dirty page-cache data included: a sparse file's holes
// (never written, or punched by Discard) are deallocated and read back as
// zeroes. A filesystem without hole tracking, and a block device such as
// an LV, reports every byte as data, so such a volume is reported mapped
// everywhere, which is true of a thick LV and "unknown" for the rest.
//
// lseek moves the descriptor's file offset, which no other method uses
// (they all pread and pwrite), so calls may run concurrently with I/O.
func (v *Volume) Mapped(off, limit int64) (bool, int64, error) {
	size := v.Size()
	if off < 0 || off >= size || limit < 1 {
		return false, 0, v.wrap(fmt.Sprintf("block status at %d (size %d)", off, size), ErrOutOfRange)
	}
	end := off + min(limit, size-off)
	data, err := seek(v.f, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		// No data from off to the end of the file (the file may even be
		// shorter than the size we serve, if someone cut it).
		return false, end - off, nil
	case err != nil:
		return false, 0, v.wrap(fmt.Sprintf("SEEK_DATA at %d", off), err)
	case data > off:
		return false, min(data, end) - off, nil
	}
	hole, err := seek(v.f, off, unix.SEEK_HOLE)
	if err != nil {
		return false, 0, v.wrap(fmt.Sprintf("SEEK_HOLE at %d", off), err)
	}
	if hole <= off {
		// Cannot happen for a byte SEEK_DATA just called data; say so
		// rather than report an empty extent.
		return false, 0, v.wrap(fmt.Sprintf("SEEK_HOLE at %d", off), fmt.Errorf("returned %d, not past the data at %d", hole, off))
	}
	return true, min(hole, end) - off, nil
}

// seek is lseek(2) on f's descriptor, for the whence values os.File.Seek
// does not know.
func seek(f *os.File, off int64, whence int) (int64, error) {
	var pos int64
	err := control(f, func(fd int) error {
		var err error
		pos, err = unix.Seek(fd, off, whence)
		return err
	})
	return pos, err
}
