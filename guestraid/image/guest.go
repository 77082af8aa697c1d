// Package image builds the guest image: Debian's kernel and a u-root
// initramfs whose init assembles the guest's mirrored disks with
// guestraid. It also holds the initramfs plumbing (kernel modules with
// their modules.dep, content keys, mkuimage archives) that test/vm shares.
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/u-root/u-root/pkg/uflag"
)

// Format names the layout of the guest image; it is part of the key, so
// changing the recipe rebuilds every image.
const Format = "mhcodi guest image v1"

// Files of a built image in its output directory.
const (
	KernelFile    = "vmlinuz"
	InitramfsFile = "initramfs.cpio"
	ManifestFile  = "image.json"
)

// Modules are the kernel modules the guest loads at boot: md RAID1, virtio
// disks, the guestraid channel (virtio console), the host info (fw_cfg),
// the ACPI power button (button + evdev), so a stop is clean, and the
// NICs (virtio_net; guestraid boot gives them their addresses).
var Modules = []string{
	"md_mod", "raid1", "virtio_pci", "virtio_blk", "virtio_console",
	"qemu_fw_cfg", "button", "evdev", "virtio_net",
}

// Binaries are the static programs the image is made of, found in
// Options.BinDir (make build puts them in bin/).
var Binaries = []struct{ Name, Dst string }{
	{"uroot-init", "/init"},         // u-root's cmds/core/init
	{"guestraid", "/bin/guestraid"}, // assemble, watch, boot
	{"mhcodi-workload", "/bin/mhcodi-workload"},
}

// Options say what to build from and where to put it.
type Options struct {
	// KernelDir is an unpacked Debian kernel (vmlinuz, VERSION,
	// lib/modules).
	KernelDir string
	// BinDir holds the static binaries listed in Binaries.
	BinDir string
	// Mdadm is Debian's mdadm, copied with its shared libraries;
	// default /sbin/mdadm.
	Mdadm string
	// OutDir receives vmlinuz, initramfs.cpio and image.json.
	OutDir string
	// Force rebuilds even when the key matches.
	Force bool
	Logf  func(format string, args ...any)
}

// Manifest describes a built image; it is written as image.json.
type Manifest struct {
	Format        string    `json:"format"`
	Key           string    `json:"key"`
	KernelVersion string    `json:"kernel_version"`
	Modules       []string  `json:"modules"`
	Built         time.Time `json:"built"`
}

// Result is a build.
type Result struct {
	Dir       string
	Kernel    string
	Initramfs string
	Manifest  Manifest
	// Rebuilt is false when the image in OutDir already had this key.
	Rebuilt bool
}

// uinitFlags is what u-root's init passes to /bin/uinit (guestraid): boot
// the arrays, then start the workload, which does nothing unless the
// kernel command line asks for it (mhcodi.workload=…).
var uinitFlags = []string{"boot", "--run", "/bin/mhcodi-workload auto"}

// Build makes the guest image in o.OutDir, or leaves it alone when an
// image with the same content key is already there.
func Build(ctx context.Context, o Options) (Result, error) {
	if o.Mdadm == "" {
		o.Mdadm = "/sbin/mdadm"
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	res := Result{
		Dir:       o.OutDir,
		Kernel:    filepath.Join(o.OutDir, KernelFile),
		Initramfs: filepath.Join(o.OutDir, InitramfsFile),
	}
	k, err := ReadKernel(o.KernelDir)
	if err != nil {
		return res, err
	}
	entries, err := o.entries(k)
	if err != nil {
		return res, err
	}
	symlinks := map[string]string{"/bin/uinit": "guestraid"}
	if err := CheckUnique(entries, symlinks); err != nil {
		return res, err
	}
	key, err := Key(Format, append(entries, Entry{Dst: "/boot/" + KernelFile, Src: k.Vmlinuz()}), symlinks)
	if err != nil {
		return res, fmt.Errorf("guest image: %w", err)
	}
	res.Manifest = Manifest{Format: Format, Key: key, KernelVersion: k.Version, Modules: Modules}
	if old, err := ReadManifest(o.OutDir); err == nil && old.Key == key && !o.Force && exists(res.Kernel) && exists(res.Initramfs) {
		res.Manifest = old
		logf("guest image %s is up to date (key %s)", o.OutDir, key)
		return res, nil
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return res, fmt.Errorf("guest image: %w", err)
	}
	tmp, err := os.MkdirTemp(o.OutDir, ".build-")
	if err != nil {
		return res, fmt.Errorf("guest image: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := WriteArchive(entries, symlinks, tmp, res.Initramfs, logf); err != nil {
		return res, fmt.Errorf("guest image: %w", err)
	}
	if err := copyFile(k.Vmlinuz(), res.Kernel); err != nil {
		return res, fmt.Errorf("guest image: %w", err)
	}
	res.Manifest.Built = time.Now().UTC()
	b, _ := json.MarshalIndent(res.Manifest, "", "  ")
	if err := writeAtomic(filepath.Join(o.OutDir, ManifestFile), append(b, '\n')); err != nil {
		return res, fmt.Errorf("guest image: %w", err)
	}
	res.Rebuilt = true
	logf("guest image %s built (key %s, kernel %s)", o.OutDir, key, k.Version)
	return res, nil
}

// entries lists the image's files.
func (o Options) entries(k Kernel) ([]Entry, error) {
	var entries []Entry
	for _, b := range Binaries {
		src := filepath.Join(o.BinDir, b.Name)
		if _, err := os.Stat(src); err != nil {
			return nil, fmt.Errorf("guest image: %w (make build puts it there)", err)
		}
		entries = append(entries, Entry{Dst: b.Dst, Src: src})
	}
	mdadm, err := filepath.EvalSymlinks(o.Mdadm)
	if err != nil {
		return nil, fmt.Errorf("guest image: mdadm: %w (package mdadm)", err)
	}
	entries = append(entries, Entry{Dst: "/sbin/mdadm", Src: mdadm, LDD: true})
	mods, err := k.ModuleEntries(Modules)
	if err != nil {
		return nil, fmt.Errorf("guest image: %w", err)
	}
	entries = append(entries, mods...)
	modList := ""
	for _, m := range Modules {
		modList += m + "\n"
	}
	entries = append(entries,
		// u-root's init loads these through kmodule before uinit runs.
		Entry{Dst: "/lib/modules-load.d/mhcodi.conf", Data: []byte(modList)},
		Entry{Dst: "/etc/uinit.flags", Data: []byte(uflag.ArgvToFile(uinitFlags))},
		// mdadm wants a config file and says so on every call otherwise.
		Entry{Dst: "/etc/mdadm/mdadm.conf", Data: []byte("# guestraid finds legs by serial; nothing to configure\nDEVICE /dev/vd*\n")},
	)
	return entries, nil
}

// ReadManifest reads image.json of a built image.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestFile), err)
	}
	if m.Format != Format {
		return m, errors.New("image of another format")
	}
	return m, nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
