package vm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/mhcodi/mhcodi/guestraid/image"
)

// ErrMissing is wrapped by every error about something scripts/deps.sh
// provides (the kernel, qemu, the go command).
var ErrMissing = errors.New("run `make deps` (scripts/deps.sh installs it)")

var moduleRoot = sync.OnceValues(func() (string, error) {
	gobin, err := goCommand()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(gobin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module: test/vm builds images from the mhcodi module")
	}
	return filepath.Dir(mod), nil
})

// ModuleRoot is the root of the Go module the current directory is in
// (the repository, for tests).
func ModuleRoot() (string, error) { return moduleRoot() }

// goCommand finds the go command: in PATH, else Go's default install.
func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go", nil
	}
	return "", fmt.Errorf("the go command is not in PATH nor /usr/local/go/bin: %w", ErrMissing)
}

// CacheDir is where scripts/deps.sh keeps the kernel and tools and where
// built images go: $MHCODI_CACHE, else <module root>/.cache.
func CacheDir() (string, error) {
	if d := os.Getenv("MHCODI_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache"), nil
}

// Kernel is the guest kernel scripts/deps.sh unpacked: Debian's vmlinuz and
// its modules.
type Kernel = image.Kernel

// FindKernel reads the kernel in dir, or in <CacheDir>/kernel if dir is "".
func FindKernel(dir string) (Kernel, error) {
	if dir == "" {
		cache, err := CacheDir()
		if err != nil {
			return Kernel{}, err
		}
		dir = filepath.Join(cache, "kernel")
	}
	k, err := image.ReadKernel(dir)
	if err != nil {
		return Kernel{}, fmt.Errorf("%w: %w", err, ErrMissing)
	}
	return k, nil
}

// QEMU finds qemu-system-x86_64.
func QEMU() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", fmt.Errorf("qemu-system-x86_64 (package qemu-system-x86): %w", ErrMissing)
	}
	return p, nil
}
