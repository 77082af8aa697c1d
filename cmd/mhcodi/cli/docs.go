package cli

import (
	"os"

	"github.com/spf13/cobra"
)

// Command returns mhcodi's command tree as it runs, with cobra's help and
// completion commands in place, for tools/gendocs, which writes its
// manual pages and shell completions from it.
func Command() *cobra.Command {
	root := newRoot(os.Stdout, os.Stderr)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}
