package guesttest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/guestraid/image"
	"github.com/mhcodi/mhcodi/test/cluster"
)

// Repo finds the repository root: the directory with go.mod at or above
// the working directory.
func Repo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod at or above the working directory")
		}
		dir = parent
	}
}

// BuildImage builds the guest image from the repository's bin/ and
// .cache/kernel into .cache/guest-image (or finds it up to date).
func BuildImage(ctx context.Context, logf func(string, ...any)) (image.Result, error) {
	root, err := Repo()
	if err != nil {
		return image.Result{}, err
	}
	res, err := image.Build(ctx, image.Options{
		KernelDir: filepath.Join(root, ".cache", "kernel"),
		BinDir:    filepath.Join(root, "bin"),
		OutDir:    filepath.Join(root, ".cache", "guest-image"),
		Logf:      logf,
	})
	if err != nil {
		return res, fmt.Errorf("%w (make deps fetches the kernel, make build the binaries)", err)
	}
	return res, nil
}

// MirrorOptions is a two-node cluster with one guest "demo" whose disk
// root (size bytes) is mirrored on node-a and node-b, booting the guest
// image with cmdline.
func MirrorOptions(img image.Result, size configs.Size, cmdline string, logger *slog.Logger) cluster.Options {
	return cluster.Options{
		Nodes:    2,
		ImageDir: img.Dir,
		Logger:   logger,
		Guests: []configs.Guest{{
			Name: "demo", VCPUs: 1, Memory: 256 * configs.MiB, PreferredNode: "node-a",
			Disks: []configs.Disk{{Name: "root", Size: size, Legs: []string{"node-a", "node-b"}}},
			Boot:  configs.Boot{Cmdline: cmdline},
		}},
		Hypervisor: []string{"io_timeout: 3s", "stop_timeout: 60s"},
	}
}
