// Command gendocs writes mhcodi's manual pages and shell completions from
// the code: mhcodi's pages and completions from its cobra command tree
// (cobra/doc), mhcodi.yaml(5) from the config schema (internal/docgen),
// and each daemon's page from its --help output and package comment.
// make deb runs it; the pages go into the package gzipped.
//
//	go run ./tools/gendocs -bin bin -out .cache/docs -version 1.2.0
//
// It writes OUT/man/man{1,5,8}/*.gz, OUT/completions/mhcodi.bash and
// OUT/completions/_mhcodi (zsh).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/mhcodi/mhcodi/cmd/mhcodi/cli"
	"github.com/mhcodi/mhcodi/internal/docgen"
)

// daemons are the programs on the flag package that get a page in
// section 8, with the files they use.
var daemons = []struct {
	name  string
	files [][2]string
}{
	{"mhcodi-targetd", [][2]string{
		{"/etc/mhcodi/cluster.yaml", "the cluster file"},
		{"/run/mhcodi/targetd-<node>.sock", "the control socket (sessions, exports, fencing)"},
		{"/var/lib/mhcodi", "fencing state and the write log"},
	}},
	{"mhcodi-fenced", [][2]string{
		{"/etc/mhcodi/cluster.yaml", "the cluster file"},
		{"/etc/mhcodi/tls", "the cluster's certificates (mhcodi cluster init)"},
		{"/run/mhcodi/fenced-<node>.sock", "the local CLI's socket"},
		{"/var/lib/mhcodi/fenced", "the embedded etcd member's data (fencing.state_dir)"},
	}},
	{"mhcodi-initiator", [][2]string{
		{"/etc/mhcodi/cluster.yaml", "the cluster file"},
		{"/run/mhcodi/initiator-<node>.json", "each leg's state, for mhcodi import status"},
		{"/dev/mhcodi/<guest>/<disk>/<node>", "the legs' links"},
	}},
	{"mhcodi-bridge", [][2]string{
		{"/etc/mhcodi/cluster.yaml", "the cluster file"},
	}},
	{"guestraid", [][2]string{
		{"/run/guestraid/state.json", "host info and wiped legs, kept from the initramfs to the system"},
		{"/etc/initramfs-tools/hooks/guestraid", "puts guestraid and mdadm into the initramfs (mhcodi-guest)"},
	}},
}

func main() {
	src := flag.String("src", ".", "the source tree (for package comments and the config schema)")
	bin := flag.String("bin", "bin", "directory of the built binaries")
	out := flag.String("out", "", "output directory (required)")
	ver := flag.String("version", "", "version for the pages' footers (default: scripts/version.sh)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "gendocs: -out is required")
		os.Exit(2)
	}
	if err := run(*src, *bin, *out, *ver); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

func run(src, bin, out, ver string) error {
	if ver == "" {
		b, err := exec.Command(filepath.Join(src, "scripts/version.sh")).Output()
		if err != nil {
			return fmt.Errorf("scripts/version.sh: %w", err)
		}
		ver = strings.TrimSpace(string(b))
	}
	h := docgen.Header{Version: ver, Date: sourceDate(src)}
	for _, d := range []string{"man/man1", "man/man5", "man/man8", "completions"} {
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			return err
		}
	}
	write := func(rel string, data []byte) error {
		return os.WriteFile(filepath.Join(out, rel), data, 0o644)
	}

	// mhcodi: one page per command, and the completions.
	root := cli.Command()
	root.DisableAutoGenTag = true
	date := h.Date
	header := &doc.GenManHeader{Section: "1", Date: &date, Source: "mhcodi " + ver, Manual: "mhcodi manual"}
	var walk func(c *cobra.Command) error
	walk = func(c *cobra.Command) error {
		if !c.IsAvailableCommand() && c != root || c.IsAdditionalHelpTopicCommand() {
			return nil
		}
		var b bytes.Buffer
		if err := doc.GenMan(c, header, &b); err != nil {
			return err
		}
		name := strings.ReplaceAll(c.CommandPath(), " ", "-") + ".1.gz"
		if err := write("man/man1/"+name, docgen.Gzip(b.Bytes())); err != nil {
			return err
		}
		for _, sub := range c.Commands() {
			if err := walk(sub); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root); err != nil {
		return err
	}
	var bash, zsh bytes.Buffer
	if err := root.GenBashCompletionV2(&bash, true); err != nil {
		return err
	}
	if err := root.GenZshCompletion(&zsh); err != nil {
		return err
	}
	if err := write("completions/mhcodi.bash", bash.Bytes()); err != nil {
		return err
	}
	if err := write("completions/_mhcodi", zsh.Bytes()); err != nil {
		return err
	}

	// mhcodi.yaml(5).
	keys, err := docgen.ConfigKeys(filepath.Join(src, "configs"))
	if err != nil {
		return err
	}
	example, err := os.ReadFile(filepath.Join(src, "configs/examples/two-node.yaml"))
	if err != nil {
		return err
	}
	if err := write("man/man5/mhcodi.yaml.5.gz", docgen.Gzip(docgen.ConfigManPage(h, keys, string(example)))); err != nil {
		return err
	}

	// The daemons.
	for _, d := range daemons {
		exe := filepath.Join(bin, d.name)
		docText, summary, err := docgen.PackageDoc(filepath.Join(src, "cmd", d.name, "main.go"))
		if err != nil {
			return err
		}
		usage, err := help(exe)
		if err != nil {
			return err
		}
		p := docgen.ProgramPage{Name: d.name, Section: "8", Summary: summary, Doc: docText, Files: d.files,
			SeeAlso: []string{"mhcodi(1)", "mhcodi.yaml(5)"}}
		if cmds := docgen.ParseCommandList(usage); len(cmds) > 0 {
			for i := range cmds {
				u, err := help(exe, cmds[i].Name)
				if err != nil {
					return err
				}
				cmds[i].Flags = docgen.ParseFlagUsage(u)
			}
			p.Commands = cmds
		} else {
			p.Flags = docgen.ParseFlagUsage(usage)
		}
		if len(p.Flags) == 0 && len(p.Commands) == 0 {
			return fmt.Errorf("%s --help: found no flags nor commands in:\n%s", exe, usage)
		}
		if err := write("man/man8/"+d.name+".8.gz", docgen.Gzip(p.Render(h))); err != nil {
			return err
		}
	}
	return nil
}

// help runs exe [cmd] -h and returns what it printed.
func help(exe string, cmd ...string) (string, error) {
	c := exec.Command(exe, append(cmd, "-h")...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("%s %s -h: %v\n%s", exe, strings.Join(cmd, " "), err, out.String())
	}
	return out.String(), nil
}

// sourceDate is SOURCE_DATE_EPOCH, else the last commit's date, else now:
// the pages' date, the same for the same commit.
func sourceDate(src string) time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC()
		}
	}
	c := exec.Command("git", "log", "-1", "--format=%ct")
	c.Dir = src
	if b, err := c.Output(); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			return time.Unix(n, 0).UTC()
		}
	}
	return time.Now().UTC()
}
