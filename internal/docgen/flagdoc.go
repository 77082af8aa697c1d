package docgen

import (
	"fmt"
	"go/parser"
	"go/token"
	"strings"
)

// Flag is one flag of a --help output of Go's flag package.
type Flag struct {
	Name  string // without the dash
	Arg   string // the argument name, "" for a boolean
	Usage string
}

// ParseFlagUsage reads the flag lines of a Go flag package usage text:
//
//	-config string
//	  	cluster file (default "/etc/mhcodi/cluster.yaml")
//	-x	a one-letter boolean
func ParseFlagUsage(usage string) []Flag {
	var out []Flag
	for _, line := range strings.Split(usage, "\n") {
		switch {
		case strings.HasPrefix(line, "  -"):
			head, usage, _ := strings.Cut(strings.TrimPrefix(line, "  -"), "\t")
			name, arg, _ := strings.Cut(strings.TrimSpace(head), " ")
			out = append(out, Flag{Name: name, Arg: arg, Usage: strings.TrimSpace(usage)})
		case strings.HasPrefix(line, "    \t") && len(out) > 0:
			f := &out[len(out)-1]
			f.Usage = strings.TrimSpace(f.Usage + " " + strings.TrimSpace(line))
		}
	}
	return out
}

// PackageDoc returns the package comment of the Go file at path (a
// command's main.go) and its first sentence with "Command <name>" cut
// off: the page's NAME line.
func PackageDoc(path string) (doc, summary string, err error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		return "", "", err
	}
	if f.Doc == nil {
		return "", "", fmt.Errorf("%s has no package comment", path)
	}
	doc = f.Doc.Text()
	// "Command mhcodi-targetd exports ..." reads "mhcodi-targetd exports ...".
	doc = strings.TrimPrefix(doc, "Command ")
	first := strings.Join(strings.Fields(doc), " ")
	if i := strings.Index(first, ". "); i >= 0 {
		first = first[:i]
	}
	first = strings.TrimSuffix(first, ".")
	_, first, _ = strings.Cut(first, " ") // the program's name
	return doc, first, nil
}

// Subcommand is one command of a program with commands (guestraid).
type Subcommand struct {
	Name    string
	Summary string
	Flags   []Flag
}

// ProgramPage is a daemon's manual page.
type ProgramPage struct {
	Name, Section string
	Summary       string // NAME line: what it does
	Doc           string // DESCRIPTION: the package comment
	Flags         []Flag // of the program itself (none when it has commands)
	Commands      []Subcommand
	Files         [][2]string // path, what it is
	SeeAlso       []string    // "mhcodi.yaml(5)"
}

// ParseCommandList reads the "commands:" block of a usage text: lines
// "  name   summary".
func ParseCommandList(usage string) []Subcommand {
	_, block, ok := strings.Cut(usage, "commands:\n")
	if !ok {
		return nil
	}
	block, _, _ = strings.Cut(block, "\n\n")
	var out []Subcommand
	for _, line := range strings.Split(block, "\n") {
		if !strings.HasPrefix(line, "  ") {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		out = append(out, Subcommand{Name: f[0], Summary: strings.Join(f[1:], " ")})
	}
	return out
}

// Render writes the page.
func (p ProgramPage) Render(h Header) []byte {
	var b strings.Builder
	b.WriteString(h.th(p.Name, p.Section))
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", esc(p.Name), esc(p.Summary))
	b.WriteString(".SH SYNOPSIS\n")
	if len(p.Commands) > 0 {
		fmt.Fprintf(&b, ".B %s\n.I command\n.RI [ flags ]\n", esc(p.Name))
	} else {
		fmt.Fprintf(&b, ".B %s\n.RI [ flags ]\n", esc(p.Name))
	}
	b.WriteString(".SH DESCRIPTION\n")
	b.WriteString(paragraphs(p.Doc))
	writeFlags := func(fl []Flag) {
		for _, f := range fl {
			fmt.Fprintf(&b, ".TP\n\\fB\\-%s\\fR", esc(f.Name))
			if f.Arg != "" {
				fmt.Fprintf(&b, " \\fI%s\\fR", esc(f.Arg))
			}
			fmt.Fprintf(&b, "\n%s\n", esc(f.Usage))
		}
	}
	if len(p.Commands) > 0 {
		b.WriteString(".SH COMMANDS\n")
		for _, c := range p.Commands {
			fmt.Fprintf(&b, ".SS %s %s\n%s\n", esc(p.Name), esc(c.Name), esc(c.Summary))
			if len(c.Flags) > 0 {
				b.WriteString(".PP\nFlags:\n")
				writeFlags(c.Flags)
			}
		}
	}
	if len(p.Flags) > 0 {
		b.WriteString(".SH OPTIONS\nFlags take one dash or two:\n.BR \\-config \" or \" \\-\\-config .\n")
		writeFlags(p.Flags)
	}
	if len(p.Files) > 0 {
		b.WriteString(".SH FILES\n")
		for _, f := range p.Files {
			fmt.Fprintf(&b, ".TP\n.I %s\n%s\n", esc(f[0]), esc(f[1]))
		}
	}
	if len(p.SeeAlso) > 0 {
		b.WriteString(".SH SEE ALSO\n")
		for i, s := range p.SeeAlso {
			name, sec, _ := strings.Cut(strings.TrimSuffix(s, ")"), "(")
			sep := ","
			if i == len(p.SeeAlso)-1 {
				sep = ""
			}
			fmt.Fprintf(&b, ".BR %s (%s)%s\n", esc(name), sec, sep)
		}
	}
	return []byte(b.String())
}
