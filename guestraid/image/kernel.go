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
// directory, from its modules.dep (which lists every module's
// dependencies transitively, as modprobe reads it) and modules.builtin
// (built-in modules resolve to nothing). The guest loads them with u-root's
// kmodule; here it is not used because its probe walks dependencies in
// goroutines that append to one shared slice (u-root v0.16.0,
// pkg/kmodule/kmodule_linux.go:145), which the race detector of make test
// reports now and then.
func (k Kernel) Modules(names []string) ([]string, error) {
	mdir := k.ModulesDir()
	deps, byName, err := readModulesDep(filepath.Join(mdir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.Version, err)
	}
	builtin, err := readModulesBuiltin(filepath.Join(mdir, "modules.builtin"))
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.Version, err)
	}
	files := map[string]bool{}
	for _, n := range names {
		name := moduleName(n)
		if builtin[name] {
			continue
		}
		file, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("kernel module %s (kernel %s): neither in modules.dep nor built in", n, k.Version)
		}
		files[file] = true
		for _, d := range deps[file] {
			files[d] = true
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

// moduleName is the name a module file or a module name stands for, as
// the kernel compares them: without directory and .ko[.xz|.zst|.gz], with
// '-' and '_' alike.
func moduleName(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(s, ".ko"), "-", "_")
}

// readModulesDep reads modules.dep: each module file's dependencies, and
// the file of each module name.
func readModulesDep(path string) (deps map[string][]string, byName map[string]string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	deps, byName = map[string][]string{}, map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		file, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			return nil, nil, fmt.Errorf("%s:%d: no colon: %q", path, line, sc.Text())
		}
		file = strings.TrimSpace(file)
		deps[file] = strings.Fields(rest)
		byName[moduleName(file)] = file
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return deps, byName, nil
}

// readModulesBuiltin reads the names of the built-in modules; a kernel
// without the file has none.
func readModulesBuiltin(path string) (map[string]bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, l := range strings.Fields(string(b)) {
		out[moduleName(l)] = true
	}
	return out, nil
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
