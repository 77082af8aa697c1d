// Package guest is what the host side of test/vm and the guest's uinit
// agree on: where the job description lives in the image, its format, the
// kernel parameter that carries a run's nonce and the marker lines the
// guest prints on the console.
package guest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ConfigPath is the job description in the image (JSON, a Config).
const ConfigPath = "/etc/mhcodi-vm/job.json"

// NonceParam is the kernel parameter that carries the run's nonce: every
// marker line names it, so neither an earlier boot's output nor a job
// printing marker-like text can be taken for this run's result.
const NonceParam = "mhcodi.vm.nonce"

// Config is the guest's job.
type Config struct {
	// Modules are loaded, with their dependencies, before the job runs
	// (u-root's kmodule and the image's modules.dep).
	Modules []string `json:"modules,omitempty"`
	// Dirs are created once /run and /tmp are mounted.
	Dirs []string `json:"dirs,omitempty"`
	// Argv is the job; Argv[0] is a path in the image.
	Argv []string `json:"argv"`
	// Env is added to the environment u-root's init sets up.
	Env []string `json:"env,omitempty"`
	// Dir is the job's working directory; "/" if empty.
	Dir string `json:"dir,omitempty"`
}

// Marker kinds. Every marker is one line:
//
//	MHCODI-VM-START <nonce>
//	MHCODI-VM-SETUP-FAILED <nonce> <message>
//	MHCODI-VM-EXIT <nonce> <status>
const (
	Start       = "START"
	SetupFailed = "SETUP-FAILED"
	Exit        = "EXIT"
)

// Marker renders a marker line (without the newline).
func Marker(kind, nonce, rest string) string {
	s := "MHCODI-VM-" + kind + " " + nonce
	if rest != "" {
		s += " " + rest
	}
	return s
}

// ExitMarker is the line that ends a job with status.
func ExitMarker(nonce string, status int) string {
	return Marker(Exit, nonce, strconv.Itoa(status))
}

var markerRE = regexp.MustCompile(`MHCODI-VM-(START|SETUP-FAILED|EXIT) ([0-9a-f]+)(?: (.*))?$`)

// ParseMarker finds a marker of nonce in a console line. Kernel messages
// may precede it on the same line (the serial console interleaves them), so
// it is searched for anywhere in the line.
func ParseMarker(line, nonce string) (kind, rest string, ok bool) {
	m := markerRE.FindStringSubmatch(line)
	if m == nil || m[2] != nonce {
		return "", "", false
	}
	return m[1], m[3], true
}

// ParseStatus reads an EXIT marker's status.
func ParseStatus(rest string) (int, error) {
	// Only the first word: a kernel message may follow on the same line.
	word, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
	n, err := strconv.Atoi(word)
	if err != nil {
		return 0, fmt.Errorf("exit marker: status %q: %w", rest, err)
	}
	return n, nil
}
