package volume

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/naming"
)

// FileBackend keeps volumes as sparse files in one directory: created with
// ftruncate (no blocks allocated until written), discarded by punching
// holes. It serves the loopback demo and the tests, and hosts without LVM.
//
// Every open Volume holds a shared flock on its file, and Remove takes the
// exclusive one, so a volume open in any process (targetd serving it while
// an operator runs mhcodi volume remove) is never unlinked.
type FileBackend struct {
	dir  string
	log  *slog.Logger
	open openSet
}

// NewFile returns the backend for the files in dir (created, 0700, by the
// first Create).
func NewFile(dir string, log *slog.Logger) (*FileBackend, error) {
	if dir == "" {
		return nil, errors.New("file backend: no directory given")
	}
	if log == nil {
		log = slog.Default()
	}
	return &FileBackend{dir: filepath.Clean(dir), log: log}, nil
}

// Kind implements Backend.
func (b *FileBackend) Kind() string { return configs.BackendFile }

// Where implements Backend: the directory.
func (b *FileBackend) Where() string { return b.dir }

// path is where volume name lives; callers have validated name.
func (b *FileBackend) path(name string) string { return filepath.Join(b.dir, name) }

// Create implements Backend.
func (b *FileBackend) Create(ctx context.Context, name string, size int64) (bool, error) {
	if err := ValidName(name); err != nil {
		return false, err
	}
	if err := checkSize(name, size); err != nil {
		return false, err
	}
	if err := os.MkdirAll(b.dir, 0o700); err != nil {
		return false, fmt.Errorf("volume %s: creating directory: %w", name, err)
	}
	p := b.path(name)
	// O_EXCL: never take over a file that is already there; O_NOFOLLOW: a
	// symlink planted under a volume name is not followed.
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, b.createExisting(name, size)
	}
	if err != nil {
		return false, fmt.Errorf("volume %s: creating %s: %w", name, p, err)
	}
	defer f.Close()
	if err := b.finishCreate(f, name, size); err != nil {
		// Leave nothing half made: the next Create starts afresh.
		if rerr := os.Remove(p); rerr != nil {
			b.log.Warn("could not remove a volume file whose create failed", "volume", name, "path", p, "err", rerr)
		}
		return false, err
	}
	if err := fsyncDir(b.dir); err != nil {
		return false, fmt.Errorf("volume %s: syncing directory %s: %w", name, b.dir, err)
	}
	b.log.Info("volume created", "volume", name, "path", p, "size", size)
	return true, nil
}

// finishCreate sizes a new (empty) file and makes the size durable.
func (b *FileBackend) finishCreate(f *os.File, name string, size int64) error {
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("volume %s: sizing %s to %d bytes: %w", name, f.Name(), size, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("volume %s: syncing %s: %w", name, f.Name(), err)
	}
	return nil
}

// createExisting is Create for a name that already has a file.
func (b *FileBackend) createExisting(name string, size int64) error {
	f, err := b.openFile(name)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("volume %s: %w", name, err)
	}
	switch {
	case st.Size() == size:
		return nil
	case st.Size() == 0:
		// An empty file is a create that stopped between open and
		// ftruncate (a crash, or a concurrent Create): it holds no data,
		// so finishing it loses nothing.
		b.log.Warn("volume file is empty, finishing an interrupted create", "volume", name, "path", f.Name(), "size", size)
		return b.finishCreate(f, name, size)
	}
	return fmt.Errorf("volume %s: %w: it has %s (%d bytes), the request is %s (%d bytes)",
		name, ErrWrongSize, FormatSize(st.Size()), st.Size(), FormatSize(size), size)
}

// openFile opens an existing volume file read-write, refusing anything but
// a regular file.
func (b *FileBackend) openFile(name string) (*os.File, error) {
	p := b.path(name)
	f, err := os.OpenFile(p, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("volume %s: %w in %s", name, ErrNotFound, b.dir)
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("volume %s: %s is a symbolic link; volume files must be regular files", name, p)
	case err != nil:
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("volume %s: %s is not a regular file (%s)", name, p, st.Mode().Type())
	}
	return f, nil
}

// Open implements Backend.
func (b *FileBackend) Open(ctx context.Context, name string) (*Volume, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	f, err := b.openFile(name)
	if err != nil {
		return nil, err
	}
	if err := lockShared(f); err != nil {
		f.Close()
		if isWouldBlock(err) {
			return nil, fmt.Errorf("volume %s: %w: it is being removed", name, ErrInUse)
		}
		return nil, fmt.Errorf("volume %s: locking %s: %w", name, f.Name(), err)
	}
	// The file may have been unlinked between our open and our lock (a
	// Remove that finished in between): then the path names another file
	// or none, and serving the orphaned inode would lose every write.
	if err := samePath(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	b.open.add(name)
	v, err := newVolume(name, f.Name(), f, fileDevice{}, func() { b.open.done(name) })
	if err != nil {
		f.Close()
		b.open.done(name)
		return nil, err
	}
	return v, nil
}

// samePath checks that f is still the file its name points to.
func samePath(f *os.File) error {
	fst, err := f.Stat()
	if err != nil {
		return err
	}
	pst, err := os.Lstat(f.Name())
	if err != nil {
		return fmt.Errorf("%s was removed while it was being opened: %w", f.Name(), err)
	}
	if !os.SameFile(fst, pst) {
		return fmt.Errorf("%s was replaced while it was being opened", f.Name())
	}
	return nil
}

// Stat implements Backend.
func (b *FileBackend) Stat(ctx context.Context, name string) (Info, error) {
	if err := ValidName(name); err != nil {
		return Info{}, err
	}
	p := b.path(name)
	st, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("volume %s: %w in %s", name, ErrNotFound, b.dir)
	}
	if err != nil {
		return Info{}, fmt.Errorf("volume %s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return Info{}, fmt.Errorf("volume %s: %s is not a regular file (%s)", name, p, st.Mode().Type())
	}
	return Info{Name: name, Path: p, Size: st.Size()}, nil
}

// List implements Backend. A directory that does not exist yet holds no
// volumes. Entries under the mhc- prefix that are not valid volume names
// (or not regular files) are logged and left out: mhcodi never made them.
func (b *FileBackend) List(ctx context.Context) ([]Info, error) {
	ents, err := os.ReadDir(b.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing volumes in %s: %w", b.dir, err)
	}
	var out []Info
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, naming.LVPrefix) {
			continue
		}
		if ValidName(name) != nil || !e.Type().IsRegular() {
			b.log.Warn("ignoring a file that is not a volume", "dir", b.dir, "name", name, "type", e.Type().String())
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed while we listed
		}
		if err != nil {
			return nil, fmt.Errorf("listing volumes in %s: %w", b.dir, err)
		}
		out = append(out, Info{Name: name, Path: b.path(name), Size: info.Size()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Extend implements Backend.
func (b *FileBackend) Extend(ctx context.Context, name string, size int64) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := checkSize(name, size); err != nil {
		return err
	}
	f, err := b.openFile(name)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("volume %s: %w", name, err)
	}
	switch cur := st.Size(); {
	case size == cur:
		return nil
	case size < cur:
		return fmt.Errorf("volume %s: %w: it has %s (%d bytes) and %s (%d bytes) would cut off the end of the guest's disk",
			name, ErrShrink, FormatSize(cur), cur, FormatSize(size), size)
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("volume %s: growing %s to %d bytes: %w", name, f.Name(), size, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("volume %s: syncing %s: %w", name, f.Name(), err)
	}
	b.log.Info("volume extended", "volume", name, "path", f.Name(), "from", st.Size(), "to", size)
	return nil
}

// Remove implements Backend.
func (b *FileBackend) Remove(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if n := b.open.count(name); n > 0 {
		return fmt.Errorf("volume %s: %w: it is open in this process (%d times); close it first", name, ErrInUse, n)
	}
	f, err := b.openFile(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lockExclusive(f); err != nil {
		if isWouldBlock(err) {
			return fmt.Errorf("volume %s: %w: another process has it open (is mhcodi-targetd serving it?)", name, ErrInUse)
		}
		return fmt.Errorf("volume %s: locking %s: %w", name, f.Name(), err)
	}
	if err := samePath(f); err != nil {
		return fmt.Errorf("volume %s: %w", name, err)
	}
	if err := os.Remove(f.Name()); err != nil {
		return fmt.Errorf("volume %s: removing %s: %w", name, f.Name(), err)
	}
	if err := fsyncDir(b.dir); err != nil {
		return fmt.Errorf("volume %s: syncing directory %s: %w", name, b.dir, err)
	}
	b.log.Info("volume removed", "volume", name, "path", f.Name())
	return nil
}

// SizeOK implements Backend: files are exactly the size asked for.
func (b *FileBackend) SizeOK(ctx context.Context, want, actual int64) (bool, error) {
	return want == actual, nil
}

// fileDevice is a Volume backed by a sparse file.
type fileDevice struct{}

func (fileDevice) size(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// discard punches a hole; on a filesystem that cannot (EOPNOTSUPP) it
// writes zeroes instead, because DiscardZeroes has promised the initiator
// that the range reads back as zeroes.
func (fileDevice) discard(f *os.File, off, n int64) error {
	err := punchHole(f, off, n)
	if !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	return writeZeroes(f, off, n)
}

// writeZeroes writes n zero bytes at off, a chunk at a time.
func writeZeroes(f *os.File, off, n int64) error {
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(zero)))
		if _, err := f.WriteAt(zero[:c], off); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

// discardZeroes: a punched hole reads back as zeroes.
func (fileDevice) discardZeroes() bool { return true }
