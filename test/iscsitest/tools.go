package iscsitest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ErrMissingTool is wrapped by every error about a system tool that is not
// installed; the message names the step that installs it.
var ErrMissingTool = errors.New("missing tool: run `make deps` (scripts/deps.sh installs it)")

// Tool finds a system tool in PATH or the sbin directories (tgtd and
// tgtadm live in /usr/sbin, which a non-login root shell may lack).
func Tool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: %w", name, ErrMissingTool)
}

// QemuISCSIDriver is where Debian's qemu-block-extra puts QEMU's iSCSI
// block driver; without it qemu-img and qemu-io reject iscsi:// names.
const QemuISCSIDriver = "/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so"

// CheckQemuISCSI reports whether QEMU's iSCSI block driver is installed.
func CheckQemuISCSI() error {
	if _, err := os.Stat(QemuISCSIDriver); err != nil {
		return fmt.Errorf("QEMU's iSCSI driver %s (package qemu-block-extra): %w", QemuISCSIDriver, ErrMissingTool)
	}
	return nil
}
