// Package version is the version every mhcodi binary reports with
// --version. Release builds (make build, make deb) set it from git
// describe:
//
//	go build -ldflags "-X github.com/mhcodi/mhcodi/internal/version.Version=$(scripts/version.sh)"
//
// A plain go build reports the module version or VCS revision the Go
// toolchain stamped, or "devel".
package version

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Version is set at link time; see the package comment.
var Version string

// String returns the version of this binary.
func String() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return "devel-g" + rev + dirty
	}
	return "devel"
}

// Print writes the --version line: "<program> <version> (<go version>)".
func Print(w io.Writer, program string) {
	fmt.Fprintf(w, "%s %s (%s)\n", program, String(), runtime.Version())
}
