package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/mhcodi/mhcodi/configs"
)

// Backend keeps the volumes of one node: the logical volumes of one volume
// group, or the files of one directory. Every method takes a volume name
// (mhc-<guest>-<disk>) and refuses any other.
type Backend interface {
	// Kind is configs.BackendLVM or configs.BackendFile.
	Kind() string
	// Where is the volume group or directory, for messages.
	Where() string
	// Create makes volume name of size bytes (a positive multiple of
	// SectorSize). It reports created=false, and changes nothing, when the
	// volume already exists with the right size (see SizeOK); an existing
	// volume of another size is an ErrWrongSize error naming both sizes.
	Create(ctx context.Context, name string, size int64) (created bool, err error)
	// Open opens an existing volume for I/O. Close the Volume when done:
	// Remove refuses an open volume.
	Open(ctx context.Context, name string) (*Volume, error)
	// Stat describes one volume; ErrNotFound if it does not exist.
	Stat(ctx context.Context, name string) (Info, error)
	// List describes every volume whose name package naming could have
	// made (mhc-*), sorted by name. Other volumes are not mhcodi's and are
	// left out.
	List(ctx context.Context) ([]Info, error)
	// Extend grows volume name to size bytes. A size at or below the
	// current one that SizeOK accepts is a no-op; a smaller one is an
	// ErrShrink error. Open Volumes see the new size after Refresh.
	Extend(ctx context.Context, name string, size int64) error
	// Remove destroys volume name and its data. It refuses (ErrInUse) a
	// volume that is open.
	Remove(ctx context.Context, name string) error
	// SizeOK reports whether a volume of actual bytes is what Create(want)
	// makes: the same size, or (LVM) want rounded up to whole extents.
	SizeOK(ctx context.Context, want, actual int64) (bool, error)
}

// Info describes one volume as the backend sees it.
type Info struct {
	Name string `json:"name"`
	// Path is the file, or the LV's block device (/dev/VG/NAME).
	Path string `json:"path"`
	Size int64  `json:"size"`
	// Tags are the LV's tags (LVM only); mhcodi puts Tag on what it makes.
	Tags []string `json:"tags,omitempty"`
}

// SectorSize is the unit every volume size is a multiple of: the smallest
// logical block size the SCSI layer may report.
const SectorSize = 512

// Tag marks the logical volumes mhcodi created; Remove refuses an LV without
// it, so a volume an operator made by hand under an mhc- name is never
// destroyed by mhcodi.
const Tag = "mhcodi"

// Errors a caller may test for with errors.Is. Returned errors wrap them
// with the volume name and the reason.
var (
	ErrInvalidName = errors.New("not a volume name mhcodi makes")
	ErrNotFound    = errors.New("no such volume")
	ErrWrongSize   = errors.New("exists with another size")
	ErrShrink      = errors.New("volumes never shrink")
	ErrInUse       = errors.New("volume is in use")
	ErrOutOfRange  = errors.New("beyond the end of the volume")
	ErrClosed      = errors.New("volume is closed")
	// ErrSyncFailed: an earlier fdatasync of the volume failed, so writes
	// it acknowledged may be lost; see Volume.Sync.
	ErrSyncFailed = errors.New("an earlier fdatasync failed and writes it covered may be lost")
)

// Option configures New.
type Option func(*options)

type options struct {
	runner Runner
	log    *slog.Logger
}

// WithRunner makes the LVM backend run lvm2's commands through r (tests
// inject a fake; the default runs them with os/exec).
func WithRunner(r Runner) Option { return func(o *options) { o.runner = r } }

// WithLogger sets where backends log what they change (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// New returns the backend that storage names.
func New(storage configs.Storage, opts ...Option) (Backend, error) {
	o := options{runner: ExecRunner{}, log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	switch storage.Backend {
	case configs.BackendFile:
		return NewFile(storage.File.Dir, o.log)
	case configs.BackendLVM:
		return NewLVM(storage.LVM.VG, storage.LVM.Stripes, o.runner, o.log)
	}
	return nil, fmt.Errorf("storage backend %q is not one of %q, %q", storage.Backend, configs.BackendLVM, configs.BackendFile)
}

// checkSize refuses sizes no volume may have.
func checkSize(name string, size int64) error {
	if size <= 0 || size%SectorSize != 0 {
		return fmt.Errorf("volume %s: size %d bytes is not a positive multiple of %d", name, size, SectorSize)
	}
	return nil
}

// FormatSize writes a byte count the way the cluster file does ("256M"),
// or as bytes when no binary unit divides it.
func FormatSize(n int64) string {
	if n < 0 {
		return fmt.Sprintf("%d", n)
	}
	return configs.Size(n).String()
}
