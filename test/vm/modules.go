package vm

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/u-root/u-root/pkg/kmodule"
)

// kernelModules resolves module names (dm-mod, dm_mod and loop alike) to
// their files and their dependencies' files, relative to the kernel's
// modules directory, with the same code the guest loads them with
// (kmodule, dry run against the host copy of modules.dep). Built-in
// modules resolve to nothing.
func kernelModules(k Kernel, names []string) ([]string, error) {
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

// trimmedModulesDep returns the lines of the kernel's modules.dep that
// describe files, so the guest's modules.dep names only what the image
// holds.
func trimmedModulesDep(k Kernel, files []string) ([]byte, error) {
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
