package volume

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/mhcodi/mhcodi/configs"
)

// LVMBackend keeps volumes as logical volumes of one volume group, driving
// lvm2's commands (lvs, vgs, lvcreate, lvextend, lvremove) with JSON reports.
// Every command goes through the injected Runner; only Open touches the
// kernel, to open the LV's block device.
type LVMBackend struct {
	vg      string
	stripes int
	r       Runner
	log     *slog.Logger
	open    openSet

	mu     sync.Mutex
	extent int64 // the VG's extent size, read once (see extentSize)
}

// NewLVM returns the backend for volume group vg; new LVs are striped over
// stripes PVs when stripes > 1.
func NewLVM(vg string, stripes int, r Runner, log *slog.Logger) (*LVMBackend, error) {
	// Same rule as lvm2 for VG names, minus what could be read as an option
	// or a path: the name goes into argv and /dev paths.
	if vg == "" || strings.HasPrefix(vg, "-") || strings.ContainsAny(vg, "/ \t\n") || vg == "." || vg == ".." {
		return nil, fmt.Errorf("lvm backend: %q is not a volume group name", vg)
	}
	if stripes < 1 {
		stripes = 1
	}
	if r == nil {
		r = ExecRunner{}
	}
	if log == nil {
		log = slog.Default()
	}
	return &LVMBackend{vg: vg, stripes: stripes, r: r, log: log}, nil
}

// Kind implements Backend.
func (b *LVMBackend) Kind() string { return configs.BackendLVM }

// Where implements Backend: the volume group.
func (b *LVMBackend) Where() string { return "volume group " + b.vg }

func (b *LVMBackend) lvsArgv() []string {
	return []string{"lvs", "-o", "lv_name,vg_name,lv_size,lv_tags,lv_path",
		"--units", "b", "--nosuffix", "--reportformat", "json", b.vg}
}

// List implements Backend.
func (b *LVMBackend) List(ctx context.Context) ([]Info, error) {
	out, err := run(ctx, b.r, b.lvsArgv()...)
	if err != nil {
		return nil, fmt.Errorf("listing the LVs of volume group %s: %w", b.vg, err)
	}
	rows, err := parseLVs(out)
	if err != nil {
		return nil, fmt.Errorf("listing the LVs of volume group %s: %w", b.vg, err)
	}
	var list []Info
	for _, row := range rows {
		if row.VG != b.vg || ValidName(row.Name) != nil {
			continue // not ours: another VG's, or an LV mhcodi did not name
		}
		path := row.Path
		if path == "" {
			// lvm2 leaves lv_path empty for LVs it does not show in
			// /dev (hidden or internal ones); ours are never those, but
			// the place is well known.
			path = "/dev/" + b.vg + "/" + row.Name
		}
		list = append(list, Info{Name: row.Name, Path: path, Size: int64(row.Size), Tags: row.Tags})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list, nil
}

// Stat implements Backend.
func (b *LVMBackend) Stat(ctx context.Context, name string) (Info, error) {
	if err := ValidName(name); err != nil {
		return Info{}, err
	}
	// One lvs of the whole VG rather than of VG/NAME: lvs fails for a
	// missing LV with an exit status shared by other failures, while an
	// absent row is unambiguous.
	list, err := b.List(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("volume %s: %w", name, err)
	}
	for _, in := range list {
		if in.Name == name {
			return in, nil
		}
	}
	return Info{}, fmt.Errorf("volume %s: %w in volume group %s", name, ErrNotFound, b.vg)
}

// extentSize is the VG's physical extent size; lvm2 rounds every LV size up
// to a multiple of it. It is read once per backend: changing it (vgchange
// -s) is rare and only allowed when every LV still fits.
func (b *LVMBackend) extentSize(ctx context.Context) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.extent > 0 {
		return b.extent, nil
	}
	out, err := run(ctx, b.r, "vgs", "-o", "vg_name,vg_extent_size", "--units", "b", "--nosuffix", "--reportformat", "json", b.vg)
	if err != nil {
		return 0, fmt.Errorf("reading the extent size of volume group %s: %w", b.vg, err)
	}
	rows, err := parseVGs(out)
	if err != nil {
		return 0, fmt.Errorf("reading the extent size of volume group %s: %w", b.vg, err)
	}
	for _, row := range rows {
		if row.Name == b.vg {
			if row.ExtentSize <= 0 {
				return 0, fmt.Errorf("volume group %s reports extent size %d", b.vg, row.ExtentSize)
			}
			b.extent = int64(row.ExtentSize)
			return b.extent, nil
		}
	}
	return 0, fmt.Errorf("vgs did not report volume group %s", b.vg)
}

// SizeOK implements Backend: lvm2 rounds a size up to whole extents, and
// a striped LV up to whole stripes of extents.
func (b *LVMBackend) SizeOK(ctx context.Context, want, actual int64) (bool, error) {
	if want == actual {
		return true, nil
	}
	ext, err := b.extentSize(ctx)
	if err != nil {
		return false, err
	}
	return sizeFits(want, actual, ext, b.stripes), nil
}

// sizeFits reports whether actual is want rounded up to extents, or to
// stripes*extents (what lvcreate -i does).
func sizeFits(want, actual, extent int64, stripes int) bool {
	return actual == want || actual == roundUp(want, extent) || actual == roundUp(want, extent*int64(stripes))
}

func roundUp(n, unit int64) int64 {
	if unit <= 0 {
		return n
	}
	return (n + unit - 1) / unit * unit
}

func bytesArg(n int64) string { return strconv.FormatInt(n, 10) + "b" }

// Create implements Backend.
func (b *LVMBackend) Create(ctx context.Context, name string, size int64) (bool, error) {
	if err := ValidName(name); err != nil {
		return false, err
	}
	if err := checkSize(name, size); err != nil {
		return false, err
	}
	in, err := b.Stat(ctx, name)
	switch {
	case err == nil:
		ok, err := b.SizeOK(ctx, size, in.Size)
		if err != nil {
			return false, fmt.Errorf("volume %s: %w", name, err)
		}
		if !ok {
			return false, fmt.Errorf("volume %s: %w: it has %s (%d bytes), the request is %s (%d bytes, %s rounded up to whole extents of volume group %s)",
				name, ErrWrongSize, FormatSize(in.Size), in.Size, FormatSize(size), size, b.roundedText(ctx, size), b.vg)
		}
		return false, nil
	case !errors.Is(err, ErrNotFound):
		return false, err
	}
	argv := []string{"lvcreate", "-n", name, "-L", bytesArg(size)}
	if b.stripes > 1 {
		argv = append(argv, "-i", strconv.Itoa(b.stripes))
	}
	// --wipesignatures y: a new leg must not show an old filesystem or md
	// superblock that happened to sit on the reused extents.
	argv = append(argv, "--addtag", Tag, "-y", "--wipesignatures", "y", b.vg)
	if _, err := run(ctx, b.r, argv...); err != nil {
		return false, fmt.Errorf("volume %s: creating it in volume group %s: %w", name, b.vg, err)
	}
	b.log.Info("volume created", "volume", name, "vg", b.vg, "size", size)
	return true, nil
}

// roundedText says what size lvm2 makes for size, for error messages.
func (b *LVMBackend) roundedText(ctx context.Context, size int64) string {
	ext, err := b.extentSize(ctx)
	if err != nil {
		return "extent size unknown"
	}
	r := roundUp(size, ext)
	if b.stripes > 1 {
		r = roundUp(size, ext*int64(b.stripes))
	}
	return FormatSize(r)
}

// Extend implements Backend.
func (b *LVMBackend) Extend(ctx context.Context, name string, size int64) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := checkSize(name, size); err != nil {
		return err
	}
	in, err := b.Stat(ctx, name)
	if err != nil {
		return err
	}
	if size <= in.Size {
		ok, err := b.SizeOK(ctx, size, in.Size)
		if err != nil {
			return fmt.Errorf("volume %s: %w", name, err)
		}
		if ok {
			return nil
		}
		return fmt.Errorf("volume %s: %w: it has %s (%d bytes) and %s (%d bytes) would cut off the end of the guest's disk",
			name, ErrShrink, FormatSize(in.Size), in.Size, FormatSize(size), size)
	}
	if _, err := run(ctx, b.r, "lvextend", "-L", bytesArg(size), b.vg+"/"+name); err != nil {
		return fmt.Errorf("volume %s: extending it to %s: %w", name, FormatSize(size), err)
	}
	b.log.Info("volume extended", "volume", name, "vg", b.vg, "from", in.Size, "to", size)
	return nil
}

// Remove implements Backend. Besides the open check here, lvremove itself
// refuses an LV that any process has open.
func (b *LVMBackend) Remove(ctx context.Context, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if n := b.open.count(name); n > 0 {
		return fmt.Errorf("volume %s: %w: it is open in this process (%d times); close it first", name, ErrInUse, n)
	}
	in, err := b.Stat(ctx, name)
	if err != nil {
		return err
	}
	if !slices.Contains(in.Tags, Tag) {
		return fmt.Errorf("volume %s: LV %s/%s has no %q tag, so mhcodi did not create it and will not remove it (lvremove it by hand if it must go)",
			name, b.vg, name, Tag)
	}
	if _, err := run(ctx, b.r, "lvremove", "-y", b.vg+"/"+name); err != nil {
		return fmt.Errorf("volume %s: removing it from volume group %s: %w", name, b.vg, err)
	}
	b.log.Info("volume removed", "volume", name, "vg", b.vg)
	return nil
}

// Open implements Backend: it opens the LV's block device.
func (b *LVMBackend) Open(ctx context.Context, name string) (*Volume, error) {
	in, err := b.Stat(ctx, name)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(in.Path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("volume %s: %s does not exist; is the LV active? (lvchange -ay %s/%s): %w", name, in.Path, b.vg, name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("volume %s: %w", name, err)
	}
	if st.Mode()&fs.ModeDevice == 0 || st.Mode()&fs.ModeCharDevice != 0 {
		f.Close()
		return nil, fmt.Errorf("volume %s: %s is not a block device (%s)", name, in.Path, st.Mode().Type())
	}
	b.open.add(name)
	v, err := newVolume(name, in.Path, f, blockDevice{}, func() { b.open.done(name) })
	if err != nil {
		f.Close()
		b.open.done(name)
		return nil, err
	}
	return v, nil
}

// blockDevice is a Volume backed by a block device (an LV).
type blockDevice struct{}

func (blockDevice) size(f *os.File) (int64, error)         { return blockDevSize(f) }
func (blockDevice) discard(f *os.File, off, n int64) error { return blockDevDiscard(f, off, n) }

// discardZeroes is false: whether a discarded LV range reads back as zeroes
// depends on the disks under it, and the kernel no longer says
// (queue/discard_zeroes_data always reads 0 since Linux 4.12). The SCSI
// layer then reports LBPRZ=0 and initiators do not rely on it.
func (blockDevice) discardZeroes() bool { return false }
