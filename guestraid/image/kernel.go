package image

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/u-root/u-root/pkg/kmodule"
)

// ErrNoKernel is wrapped by errors about a missing or incomplete kernel
// directory.
var ErrNoKernel = errors.New("no guest kernel (scripts/deps.sh unpacks Debian's into .cache/kernel)")

// Kernel is an unpacked Debian kernel: vmlinuz, a VERSION file and its
// modules, as scripts/deps.sh leaves it.
type Kernel struct {
	Dir     string // holds vmlinuz, VERSION and lib/modules/<Version>
	Version string // uname -r of the kernel, e.g. 6.1.0-28-amd64
}

// Vmlinuz is the kernel image.
func (k Kernel) Vmlinuz() string { return filepath.Join(k.Dir, "vmlinuz") }

// ModulesDir is lib/modules/<version> on the host.
func (k Kernel) ModulesDir() string { return filepath.Join(k.Dir, "lib", "modules", k.Version) }

// ReadKernel reads the kernel unpacked in dir.
func ReadKernel(dir string) (Kernel, error) {
	v, err := os.ReadFile(filepath.Join(dir, "VERSION"))
	if err != nil {
		return Kernel{}, fmt.Errorf("guest kernel: %w: %w", err, ErrNoKernel)
	}
	k := Kernel{Dir: dir, Version: string(bytes.TrimSpace(v))}
	for _, p := range []string{k.Vmlinuz(), filepath.Join(k.ModulesDir(), "modules.dep")} {
		if _, err := os.Stat(p); err != nil {
			return Kernel{}, fmt.Errorf("guest kernel %s: %w: %w", k.Version, err, ErrNoKernel)
		}
	}
	return k, nil
}

// Modules resolves module names (dm-mod, dm_mod and loop alike) to their
// files and their dependencies' files, relative to the kernel's modules
// directory, with the same code the guest loads them with (kmodule, dry
// run against the host copy of modules.dep). Built-in modules resolve to
// nothing.
func (k Kernel) Modules(names []string) ([]string, error) {
	var (
		mu    sync.Mutex
		files = map[string]bool{}
	)
	mdir := k.ModulesDir()
	opts := kmodule.ProbeOpts{
		RootDir:        k.Dir,
		KVer:           k.Version,
		IgnoreProcMods: true, // the host's loaded modules say nothing about the guest
		DryRunCB: func(path string) {
			rel, err := filepath.Rel(mdir, path)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				files[rel] = true
			} else {
				files[path] = true // reported below as outside the tree
			}
		},
	}
	for _, n := range names {
		if err := kmodule.ProbeOptions(n, "", opts); err != nil {
			return nil, fmt.Errorf("kernel module %s (kernel %s): %w", n, k.Version, err)
		}
	}
	var list []string
	for f := range files {
		if filepath.IsAbs(f) || strings.HasPrefix(f, "..") {
			return nil, fmt.Errorf("kernel module file %s is outside %s", f, mdir)
		}
		list = append(list, f)
	}
	sort.Strings(list)
	return list, nil
}

// ModulesDep returns the lines of the kernel's modules.dep that describe
// files, so the guest's modules.dep names only what the image holds.
func (k Kernel) ModulesDep(files []string) ([]byte, error) {
	want := map[string]bool{}
	for _, f := range files {
		want[f] = true
	}
	f, err := os.Open(filepath.Join(k.ModulesDir(), "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, _, _ := strings.Cut(sc.Text(), ":")
		if want[name] {
			b.WriteString(sc.Text())
			b.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return []byte(b.String()), nil
}

// ModuleEntries lists the files of the named modules (with their
// dependencies), a trimmed modules.dep and modules.builtin, at
// lib/modules/<version>/ of an image.
func (k Kernel) ModuleEntries(names []string) ([]Entry, error) {
	mods, err := k.Modules(names)
	if err != nil {
		return nil, err
	}
	mdir := "lib/modules/" + k.Version
	var entries []Entry
	for _, m := range mods {
		entries = append(entries, Entry{Dst: mdir + "/" + m, Src: filepath.Join(k.ModulesDir(), m)})
	}
	dep, err := k.ModulesDep(mods)
	if err != nil {
		return nil, err
	}
	entries = append(entries, Entry{Dst: mdir + "/modules.dep", Data: dep, Mode: 0o644})
	if builtin, err := os.ReadFile(filepath.Join(k.ModulesDir(), "modules.builtin")); err == nil {
		entries = append(entries, Entry{Dst: mdir + "/modules.builtin", Data: builtin, Mode: 0o644})
	}
	return entries, nil
}
