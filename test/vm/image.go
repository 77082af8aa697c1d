package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/guestraid/image"
	"github.com/mhcodi/mhcodi/test/vm/internal/guest"
)

// Image describes an initramfs: u-root's init, test/vm's uinit, and what the
// job needs. Paths in the image are absolute ("/bin/x") or relative to its
// root ("bin/x"); both mean the same.
type Image struct {
	// Name names the cached archive and the console log: lower-case
	// letters, digits, '.', '_' and '-'.
	Name string
	// Go are Go commands or test binaries built for the guest.
	Go []GoBinary
	// Files are files of this machine, copied with the shared libraries
	// they need (ldd), e.g. /sbin/lvm. Symlinks are followed.
	Files []HostFile
	// Static are files given by their content (configuration).
	Static []StaticFile
	// Symlinks maps a path in the image to the link's target, e.g.
	// "/sbin/lvs": "lvm".
	Symlinks map[string]string
	// Modules are kernel modules by name (dm-mod, loop, virtio_blk…),
	// included with their dependencies (the kernel's modules.dep) and
	// loaded, in this order, before the job runs.
	Modules []string
	// Dirs are created in the guest before the job runs, once /run and
	// /tmp (tmpfs) are mounted, e.g. /run/lock/lvm.
	Dirs []string
	// Job is what the guest runs; its exit status is the run's result.
	Job Job
}

// GoBinary is a Go package built for the guest (CGO_ENABLED=0, GOAMD64=v1,
// -trimpath), from the module root.
type GoBinary struct {
	// Package is an import path or a ./ path relative to the module root.
	Package string
	// Test builds the package's test binary (go test -c) instead.
	Test bool
	// Tags are build tags.
	Tags []string
	// Dst is the path in the image; default /bin/<last element of
	// Package>, with ".test" appended for a test binary.
	Dst string
}

// HostFile is a file of this machine to copy into the image.
type HostFile struct {
	Src string // absolute path on this machine
	Dst string // path in the image; default Src
}

// StaticFile is a file in the image given by its content.
type StaticFile struct {
	Path string
	Data []byte
	Mode fs.FileMode // default 0644
}

// Job is the guest's command. Its standard output and error are the
// console.
type Job struct {
	Argv []string // Argv[0] is a path in the image
	Env  []string // KEY=VALUE, added to the guest's environment
	Dir  string   // working directory; default /
}

// Built is an initramfs on disk.
type Built struct {
	Path    string        // the cpio archive, under <CacheDir>/vm/images
	Key     string        // hash of everything in it
	Cached  bool          // it was already there: nothing but Go builds ran
	Elapsed time.Duration // Go builds, hashing and (unless Cached) archiving
}

const imageFormat = "mhcodi test/vm image v1"

// keepImages is how many archives of one image name stay in the cache.
const keepImages = 3

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Build makes img's initramfs, or finds it in the cache. The Go packages
// are always built (the go command's cache makes that quick) since their
// output is part of the key; the archive is written only when no archive
// with the same content exists.
func Build(ctx context.Context, img Image, o Options) (Built, error) {
	start := time.Now()
	if !nameRE.MatchString(img.Name) {
		return Built{}, fmt.Errorf("vm image name %q: want %s", img.Name, nameRE)
	}
	if len(img.Job.Argv) == 0 {
		return Built{}, fmt.Errorf("vm image %s: no job", img.Name)
	}
	cache, err := o.cacheDir()
	if err != nil {
		return Built{}, err
	}
	k, err := FindKernel(o.KernelDir)
	if err != nil {
		return Built{}, err
	}
	tmp, err := os.MkdirTemp("", "mhcodi-vm-"+img.Name+"-")
	if err != nil {
		return Built{}, err
	}
	release := guardSignals(func() { os.RemoveAll(tmp) })
	defer release()
	defer os.RemoveAll(tmp)

	entries, err := buildGo(ctx, img, filepath.Join(tmp, "go"))
	if err != nil {
		return Built{}, fmt.Errorf("vm image %s: %w", img.Name, err)
	}
	more, err := imageEntries(img, k)
	if err != nil {
		return Built{}, fmt.Errorf("vm image %s: %w", img.Name, err)
	}
	entries = append(entries, more...)
	key, err := imageKey(entries, img.Symlinks)
	if err != nil {
		return Built{}, fmt.Errorf("vm image %s: %w", img.Name, err)
	}
	dir := filepath.Join(cache, "vm", "images")
	out := filepath.Join(dir, img.Name+"-"+key+".cpio")
	if _, err := os.Stat(out); err == nil {
		now := time.Now()
		_ = os.Chtimes(out, now, now) // most recently used: kept by pruning
		return Built{Path: out, Key: key, Cached: true, Elapsed: time.Since(start)}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Built{}, err
	}
	if err := writeArchive(img, entries, tmp, out, o.logf); err != nil {
		return Built{}, fmt.Errorf("vm image %s: %w", img.Name, err)
	}
	pruneImages(dir, img.Name, out)
	return Built{Path: out, Key: key, Elapsed: time.Since(start)}, nil
}

// rel turns an image path into one relative to the image root.
func rel(p string) string { return image.Rel(p) }

// buildGo builds the image's Go packages, u-root's init and test/vm's uinit.
func buildGo(ctx context.Context, img Image, dir string) ([]image.Entry, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	gobin, err := goCommand()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	bins := append([]GoBinary{
		{Package: "github.com/u-root/u-root/cmds/core/init", Dst: "/init"},
		{Package: "github.com/mhcodi/mhcodi/test/vm/internal/uinit", Dst: "/bin/uinit"},
	}, img.Go...)
	var entries []image.Entry
	for i, b := range bins {
		dst := b.Dst
		if dst == "" {
			dst = "/bin/" + path.Base(b.Package)
			if b.Test {
				dst += ".test"
			}
		}
		outFile := filepath.Join(dir, fmt.Sprintf("%d-%s", i, path.Base(dst)))
		args := []string{"build"}
		if b.Test {
			args = []string{"test", "-c"}
		}
		args = append(args, "-trimpath", "-buildvcs=false", "-o", outFile)
		if len(b.Tags) > 0 {
			args = append(args, "-tags", strings.Join(b.Tags, ","))
		}
		args = append(args, b.Package)
		cmd := exec.CommandContext(ctx, gobin, args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Start()
		if err == nil {
			background(cmd.Process.Pid)
			err = cmd.Wait()
		}
		if err != nil {
			return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out.Bytes())
		}
		if _, err := os.Stat(outFile); err != nil {
			return nil, fmt.Errorf("go %s wrote no binary (no test files?): %w", strings.Join(args, " "), err)
		}
		entries = append(entries, image.Entry{Dst: rel(dst), Src: outFile, Mode: 0o755})
	}
	return entries, nil
}

// imageEntries lists everything but the Go binaries.
func imageEntries(img Image, k Kernel) ([]image.Entry, error) {
	var entries []image.Entry
	for _, f := range img.Files {
		if !filepath.IsAbs(f.Src) {
			return nil, fmt.Errorf("host file %q: not an absolute path", f.Src)
		}
		src, err := filepath.EvalSymlinks(f.Src)
		if err != nil {
			return nil, fmt.Errorf("host file: %w", err)
		}
		dst := f.Dst
		if dst == "" {
			dst = f.Src
		}
		entries = append(entries, image.Entry{Dst: rel(dst), Src: src, LDD: true})
	}
	mods, err := k.ModuleEntries(img.Modules)
	if err != nil {
		return nil, err
	}
	entries = append(entries, mods...)
	job, err := json.MarshalIndent(guest.Config{
		Modules: img.Modules, Dirs: img.Dirs, Argv: img.Job.Argv, Env: img.Job.Env, Dir: img.Job.Dir,
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	entries = append(entries, image.Entry{Dst: rel(guest.ConfigPath), Data: job, Mode: 0o644})
	for _, s := range img.Static {
		mode := s.Mode
		if mode == 0 {
			mode = 0o644
		}
		entries = append(entries, image.Entry{Dst: rel(s.Path), Data: s.Data, Mode: mode})
	}
	if err := image.CheckUnique(entries, img.Symlinks); err != nil {
		return nil, err
	}
	return entries, nil
}

// imageKey hashes every file of the image (with the shared libraries of
// host files) and every symlink.
func imageKey(entries []image.Entry, symlinks map[string]string) (string, error) {
	return image.Key(imageFormat, entries, symlinks)
}

// writeArchive builds the cpio with mkuimage.
func writeArchive(img Image, entries []image.Entry, tmp, out string, logf func(string, ...any)) error {
	return image.WriteArchive(entries, img.Symlinks, tmp, out, logf)
}

// pruneImages keeps the keepImages most recently used archives of name.
func pruneImages(dir, name, keep string) {
	matches, _ := filepath.Glob(filepath.Join(dir, name+"-*.cpio"))
	type aged struct {
		path string
		mod  time.Time
	}
	var list []aged
	for _, m := range matches {
		// name-<16 hex>.cpio only: another image's name may start with name-.
		if len(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), name+"-"), ".cpio")) != 16 {
			continue
		}
		if st, err := os.Stat(m); err == nil {
			list = append(list, aged{m, st.ModTime()})
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].mod.After(list[j].mod) })
	for i, a := range list {
		if i >= keepImages && a.path != keep {
			_ = os.Remove(a.path)
		}
	}
}

var errNoMarker = errors.New("the guest printed no exit marker")
