package volume

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
)

// Runner runs an external command and returns what it printed. The LVM
// backend drives lvm2 through one, so tests can check the exact argv and
// feed captured output without device-mapper.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) (stdout, stderr []byte, err error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner struct{}

// Run implements Runner. The command runs in the C locale, so the messages
// that end up in errors are the ones people search for.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	// LVM_SUPPRESS_FD_WARNINGS: lvm2 warns on stderr about any inherited
	// descriptor, which would end up in our error messages as noise.
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LVM_SUPPRESS_FD_WARNINGS=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.Bytes(), errb.Bytes(), err
}

// CommandError is a command that failed, with what it said on stderr.
type CommandError struct {
	Argv   []string
	Stderr string
	Err    error
}

func (e *CommandError) Error() string {
	msg := strings.Join(e.Argv, " ") + ": " + e.Err.Error()
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// run runs argv through r and wraps a failure in a CommandError.
func run(ctx context.Context, r Runner, argv ...string) ([]byte, error) {
	out, errb, err := r.Run(ctx, argv[0], argv[1:]...)
	if err != nil {
		return out, &CommandError{Argv: argv, Stderr: string(errb), Err: err}
	}
	return out, nil
}
