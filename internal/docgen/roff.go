// Package docgen writes mhcodi's manual pages from the code itself: the
// cluster file's page (mhcodi.yaml(5)) from the configs package's schema
// (its mapstructure tags and the doc comments of its fields), and the
// daemons' pages from their --help output and their package comments, so
// the manual cannot drift from what the programs accept. tools/gendocs
// runs it for make deb; cobra/doc writes the pages of mhcodi itself.
package docgen

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"strings"
	"time"
)

// Header is what every page's .TH line carries.
type Header struct {
	Version string    // "mhcodi 1.2.0" goes into the footer
	Date    time.Time // the page's date (the commit's, for reproducible packages)
}

// th is the title line of a page.
func (h Header) th(name, section string) string {
	return fmt.Sprintf(".TH %s %s %q %q %q\n", quoteArg(strings.ToUpper(name)), section,
		h.Date.UTC().Format("2006-01-02"), "mhcodi "+h.Version, "mhcodi manual")
}

func quoteArg(s string) string {
	if strings.ContainsAny(s, " \t") {
		return `"` + s + `"`
	}
	return s
}

// esc escapes text for roff: backslashes, and a leading dot or quote that
// would make a line a request. Hyphens become \- (a minus sign, which is
// what flags and paths have).
func esc(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// escLines escapes every line of a block of text.
func escLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = esc(l)
	}
	return strings.Join(lines, "\n")
}

// paragraphs renders Go doc-comment text: blank lines part paragraphs,
// indented lines are kept as they are (.nf), the rest is filled.
func paragraphs(text string) string {
	var b strings.Builder
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	inPre := false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		pre := strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "  ")
		switch {
		case strings.TrimSpace(l) == "":
			if inPre {
				// A blank line inside an indented block ends it only if
				// the next line is not indented.
				if i+1 < len(lines) && (strings.HasPrefix(lines[i+1], "\t") || strings.HasPrefix(lines[i+1], "  ")) {
					b.WriteString("\n")
					continue
				}
				b.WriteString(".fi\n.RE\n")
				inPre = false
			}
			b.WriteString(".PP\n")
		case pre:
			if !inPre {
				b.WriteString(".RS 4\n.nf\n")
				inPre = true
			}
			b.WriteString(esc(strings.TrimPrefix(strings.TrimPrefix(l, "\t"), "  ")) + "\n")
		default:
			if inPre {
				b.WriteString(".fi\n.RE\n")
				inPre = false
			}
			b.WriteString(esc(l) + "\n")
		}
	}
	if inPre {
		b.WriteString(".fi\n.RE\n")
	}
	return b.String()
}

// Gzip compresses a page the way Debian wants it (-9, no name, no time),
// so the same page gives the same bytes.
func Gzip(page []byte) []byte {
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	w.Write(page)
	w.Close()
	return b.Bytes()
}
