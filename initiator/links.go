package initiator

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mhcodi/mhcodi/naming"
)

// Links manages the leg links under one directory:
// <Dir>/<guest>/<disk>/<node>. It touches nothing else there: only
// symlinks at that depth whose three names are valid labels are legs'.
type Links struct {
	Dir string
}

// tmpPrefix starts the temporary names links are made under before the
// rename; Scan removes leftovers of a crash.
const tmpPrefix = ".mhcodi-tmp-"

// Set points path at dest atomically: a symlink under a temporary name in
// the same directory, renamed over path. A reader (qemu opening the leg,
// md re-adding it) sees the old link or the new one, never none.
func (l Links) Set(path, dest string) error {
	if err := l.inside(path); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("link %s: %w", path, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	tmp := filepath.Join(dir, tmpPrefix+hex.EncodeToString(b[:]))
	if err := os.Symlink(dest, tmp); err != nil {
		return fmt.Errorf("link %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link %s: %w", path, err)
	}
	return nil
}

// Remove deletes the link at path and the guest and disk directories it
// leaves empty.
func (l Links) Remove(path string) error {
	if err := l.inside(path); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unlink %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return fmt.Errorf("unlink %s: not a symlink, left alone", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("unlink %s: %w", path, err)
	}
	for d := filepath.Dir(path); d != filepath.Clean(l.Dir) && strings.HasPrefix(d, filepath.Clean(l.Dir)); d = filepath.Dir(d) {
		if os.Remove(d) != nil { // not empty: another leg is there
			break
		}
	}
	return nil
}

// Scan returns every leg link under Dir and its target, and removes
// temporary links a crash left between Set's two steps. A missing Dir has
// no links.
func (l Links) Scan() (map[string]string, error) {
	out := map[string]string{}
	root := filepath.Clean(l.Dir)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		depth := 0
		if rel != "." {
			depth = strings.Count(rel, string(filepath.Separator)) + 1
		}
		if d.IsDir() {
			if depth >= 3 {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			os.Remove(p)
			return nil
		}
		if depth != 3 || !legPath(rel) {
			return nil
		}
		dest, err := os.Readlink(p)
		if err != nil {
			return err
		}
		out[p] = dest
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scanning links under %s: %w", root, err)
	}
	return out, nil
}

func (l Links) inside(path string) error {
	rel, err := filepath.Rel(filepath.Clean(l.Dir), path)
	if err != nil || !legPath(rel) {
		return fmt.Errorf("%s is not a leg link under %s", path, l.Dir)
	}
	return nil
}

// legPath reports whether rel is <guest>/<disk>/<node>.
func legPath(rel string) bool {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if naming.ValidLabel(p) != nil {
			return false
		}
	}
	return true
}
