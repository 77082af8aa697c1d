package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/u-root/pkg/ldd"
	"github.com/u-root/uio/llog"
)

// Entry is one file of an initramfs: a host file (Src) or data.
type Entry struct {
	Dst  string // path in the image; leading "/" optional
	Src  string // host file; "" for Data
	Data []byte
	Mode fs.FileMode // for Data; default 0644
	// LDD adds the shared libraries Src needs (a host binary such as
	// /sbin/mdadm).
	LDD bool
}

// Rel turns an image path into one relative to the image root.
func Rel(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// Key hashes every file of an image (with the shared libraries of host
// binaries) and every symlink, under a format string that changes when
// the layout does: two images with the same key have the same content.
func Key(format string, entries []Entry, symlinks map[string]string) (string, error) {
	var lines []string
	hashFile := func(dst, src string) error {
		st, err := os.Lstat(src)
		if err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err != nil {
				return err
			}
			lines = append(lines, fmt.Sprintf("link %s %s", dst, target))
			return nil
		}
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
		lines = append(lines, fmt.Sprintf("file %s %o %x", dst, st.Mode().Perm(), h.Sum(nil)))
		return nil
	}
	for _, e := range entries {
		if e.Src == "" {
			lines = append(lines, fmt.Sprintf("file %s %o %x", Rel(e.Dst), e.mode().Perm(), sha256.Sum256(e.Data)))
			continue
		}
		if err := hashFile(Rel(e.Dst), e.Src); err != nil {
			return "", err
		}
		if e.LDD {
			libs, err := ldd.FList(e.Src)
			if err != nil {
				return "", fmt.Errorf("shared libraries of %s: %w", e.Src, err)
			}
			for _, lib := range libs {
				if err := hashFile(Rel(lib), lib); err != nil {
					return "", err
				}
			}
		}
	}
	for p, target := range symlinks {
		lines = append(lines, fmt.Sprintf("link %s %s", Rel(p), target))
	}
	sort.Strings(lines)
	h := sha256.New()
	fmt.Fprintln(h, format)
	for _, l := range lines {
		fmt.Fprintln(h, l)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func (e Entry) mode() fs.FileMode {
	if e.Mode == 0 {
		return 0o644
	}
	return e.Mode
}

// CheckUnique refuses an image that names one path twice.
func CheckUnique(entries []Entry, symlinks map[string]string) error {
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[Rel(e.Dst)] {
			return fmt.Errorf("%s is in the image twice", Rel(e.Dst))
		}
		seen[Rel(e.Dst)] = true
	}
	for p := range symlinks {
		if seen[Rel(p)] {
			return fmt.Errorf("%s is both a file and a symlink", Rel(p))
		}
	}
	return nil
}

// WriteArchive writes the cpio archive out with mkuimage: host files (with
// their libraries) as mkuimage files, data and symlinks as records of u-root's
// default ramfs. tmp is a scratch directory; out is replaced atomically.
func WriteArchive(entries []Entry, symlinks map[string]string, tmp, out string, logf func(string, ...any)) error {
	base := uimage.DefaultRamfs()
	records := []cpio.Record{
		cpio.Directory("run", 0o755),
		cpio.Directory("root", 0o700),
	}
	var files []string
	for _, e := range entries {
		if e.Src != "" {
			files = append(files, e.Src+":"+Rel(e.Dst))
			continue
		}
		records = append(records, cpio.StaticFile(Rel(e.Dst), string(e.Data), uint64(e.mode().Perm())))
	}
	for p, target := range symlinks {
		records = append(records, cpio.Symlink(Rel(p), target))
	}
	// Parent directories of the records (mkuimage adds those of files).
	dirs := map[string]bool{}
	for _, r := range records {
		for d := path.Dir(r.Name); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		records = append(records, cpio.Directory(d, 0o755))
	}
	sort.Slice(records, func(i, j int) bool { return records[i].Name < records[j].Name })
	for _, r := range records {
		if old, dup := base.Get(r.Name); dup {
			if r.Mode&cpio.S_IFMT == cpio.S_IFDIR && old.Mode&cpio.S_IFMT == cpio.S_IFDIR {
				continue
			}
			return fmt.Errorf("%s is already in u-root's default ramfs", r.Name)
		}
		if err := base.WriteRecord(r); err != nil {
			return fmt.Errorf("%s: %w", r.Name, err)
		}
	}

	part := out + ".tmp" + fmt.Sprint(os.Getpid())
	defer os.Remove(part)
	l := llog.New(slog.LevelWarn, func(format string, v ...any) {
		if logf != nil {
			logf("mkuimage: "+format, v...)
		}
	})
	mkdir := filepath.Join(tmp, "mkuimage")
	if err := os.MkdirAll(mkdir, 0o755); err != nil {
		return err
	}
	if err := uimage.Create(l,
		uimage.WithTempDir(mkdir),
		uimage.WithBaseArchive(base),
		uimage.WithFiles(files...),
		uimage.WithCPIOOutput(part),
	); err != nil {
		return fmt.Errorf("mkuimage: %w", err)
	}
	return os.Rename(part, out)
}
