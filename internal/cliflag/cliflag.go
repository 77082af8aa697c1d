// Package cliflag parses the daemons' command lines with the standard flag
// package, the way a command-line tool should answer -h: the usage on
// standard output and exit status 0. The flag package alone prints it on
// its output (standard error) and reports flag.ErrHelp like any bad flag.
package cliflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/mhcodi/mhcodi/internal/version"
)

// Parse parses args into fs, which must use flag.ContinueOnError and, if
// it has its own Usage, write that to fs.Output().
//
// -h, -help and --help print the usage on stdout and return 0, false;
// -version and --version (added to fs unless it has a flag of that name)
// print "<program> <version> (<go version>)" on stdout and return 0,
// false, the program being the first word of fs.Name(). A bad
// flag prints the error and the usage on fs.Output() (standard error unless
// set) and returns 2, false: the command exits with that code. Otherwise it
// returns 0, true.
func Parse(fs *flag.FlagSet, args []string, stdout io.Writer) (code int, ok bool) {
	out := fs.Output()
	var showVersion *bool
	if fs.Lookup("version") == nil {
		showVersion = fs.Bool("version", false, "print the version and exit")
	}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case err == nil && showVersion != nil && *showVersion:
		program, _, _ := strings.Cut(fs.Name(), " ")
		version.Print(stdout, program)
		return 0, false
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(out)
		return 0, false
	}
	fmt.Fprintln(out, err)
	fs.Usage()
	return 2, false
}
