package docgen

import (
	"encoding"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/configs"
)

// Key is one key of the cluster file.
type Key struct {
	// Path is the key as written in the file: "timeouts.lease_ttl",
	// "guests[].disks[].size" (a list's entries), "networks.<name>.vlan"
	// (a mapping of names).
	Path string
	// Kind says what the value is: "section", "list", "mapping", or the
	// scalar's type ("string", "duration", ...).
	Kind string
	// Doc is the comment of the field in package configs, with the Go
	// name made the key's.
	Doc string
	// Default is the value a file that leaves the key out gets, "" when
	// none (or the key is a section or list).
	Default string
	// Env is the environment variable that sets it, "" inside lists and
	// mappings.
	Env string
}

// sourceDocs holds the doc comments of package configs: type name ->
// field name -> comment, and type name -> the type's own comment.
type sourceDocs struct {
	fields map[string]map[string]string
	types  map[string]string
}

// readSource parses the package's non-test Go files in dir.
func readSource(dir string) (*sourceDocs, error) {
	fset := token.NewFileSet()
	matches, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	d := &sourceDocs{fields: map[string]map[string]string{}, types: map[string]string{}}
	for _, path := range matches {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				ts := spec.(*ast.TypeSpec)
				doc := ts.Doc
				if doc == nil && len(gd.Specs) == 1 {
					doc = gd.Doc
				}
				if doc != nil {
					d.types[ts.Name.Name] = doc.Text()
				}
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					continue
				}
				m := map[string]string{}
				for _, fl := range st.Fields.List {
					text := ""
					if fl.Doc != nil {
						text = fl.Doc.Text()
					} else if fl.Comment != nil {
						text = fl.Comment.Text()
					}
					for _, n := range fl.Names {
						m[n.Name] = text
					}
				}
				d.fields[ts.Name.Name] = m
			}
		}
	}
	return d, nil
}

// ConfigKeys lists every key of the cluster file, in the order of the
// schema, documented from the comments of package configs, whose source
// is in srcDir.
func ConfigKeys(srcDir string) ([]Key, error) {
	docs, err := readSource(srcDir)
	if err != nil {
		return nil, err
	}
	defaults, given, err := loadDefaults()
	if err != nil {
		return nil, err
	}
	var keys []Key
	var walk func(t reflect.Type, path string, scalarEnv bool)
	walk = func(t reflect.Type, path string, scalarEnv bool) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			key := tag
			if path != "" {
				key = path + "." + tag
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			k := Key{Path: key, Doc: fieldDoc(docs, t.Name(), f.Name, tag)}
			switch {
			case ft.Kind() == reflect.Struct && !isLeaf(ft):
				k.Kind = "section"
				if k.Doc == "" {
					k.Doc = typeDoc(docs, ft.Name(), "This section")
				}
				keys = append(keys, k)
				walk(ft, key, scalarEnv && f.Type.Kind() != reflect.Pointer)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && !isLeaf(ft.Elem()):
				k.Kind = "list"
				if k.Doc == "" {
					k.Doc = typeDoc(docs, ft.Elem().Name(), "Each entry")
				}
				keys = append(keys, k)
				walk(ft.Elem(), key+"[]", false)
			case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
				k.Kind = "mapping"
				if k.Doc == "" {
					k.Doc = typeDoc(docs, ft.Elem().Name(), "Each entry")
				}
				keys = append(keys, k)
				walk(ft.Elem(), key+".<name>", false)
			default:
				k.Kind = kindOf(ft)
				if scalarEnv {
					k.Env = configs.EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
				}
				if !given[key] {
					k.Default = defaults[key]
				}
				keys = append(keys, k)
			}
		}
	}
	walk(reflect.TypeFor[configs.Config](), "", true)
	return keys, nil
}

// fieldDoc is a field's comment with its Go name replaced by the key.
func fieldDoc(d *sourceDocs, typeName, field, key string) string {
	text := strings.TrimSpace(d.fields[typeName][field])
	if rest, ok := strings.CutPrefix(text, field); ok && (rest == "" || strings.ContainsRune(" ,;:", rune(rest[0]))) {
		text = key + rest
	}
	return text
}

// typeDoc is a type's comment with its Go name replaced by subject.
func typeDoc(d *sourceDocs, typeName, subject string) string {
	text := strings.TrimSpace(d.types[typeName])
	if rest, ok := strings.CutPrefix(text, typeName+" "); ok {
		text = subject + " " + rest
	}
	return text
}

func isLeaf(t reflect.Type) bool {
	return reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

func kindOf(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[time.Duration]():
		return "duration"
	case reflect.TypeFor[configs.Size]():
		return "size"
	case reflect.TypeFor[configs.Address]():
		return "address"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "boolean"
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "number"
	case reflect.Slice:
		return "list of " + kindOf(t.Elem()) + "s"
	}
	return t.String()
}

// minimalFile holds only what a cluster file must say; every other key
// the loader fills in is a default.
const minimalFile = `cluster: {name: c, iqn_prefix: iqn.2026-01.org.example}
nodes:
  - {name: a, san_address: 192.0.2.1, mgmt_address: 198.51.100.1}
  - {name: b, san_address: 192.0.2.2, mgmt_address: 198.51.100.2}
storage: {backend: lvm, lvm: {vg: vg0}}
guests:
  - name: g
    preferred_node: a
    disks: [{name: d, size: 1G, legs: [a, b]}]
`

// loadDefaults loads minimalFile and returns the value of every scalar key
// (the first entry of a list standing for all), and the keys the file
// gave itself.
func loadDefaults() (values map[string]string, given map[string]bool, err error) {
	dir, err := os.MkdirTemp("", "mhcodi-docgen-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(path, []byte(minimalFile), 0o644); err != nil {
		return nil, nil, err
	}
	// The defaults are the code's, not this environment's.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, configs.EnvPrefix+"_") {
			defer os.Setenv(name, os.Getenv(name))
			os.Unsetenv(name)
		}
	}
	cfg, err := configs.Load(path)
	if err != nil {
		return nil, nil, fmt.Errorf("the minimal cluster file no longer loads: %w", err)
	}
	values = map[string]string{}
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			key := tag
			if path != "" {
				key = path + "." + tag
			}
			fv := v.Field(i)
			for fv.Kind() == reflect.Pointer {
				if fv.IsNil() {
					break
				}
				fv = fv.Elem()
			}
			switch {
			case fv.Kind() == reflect.Pointer:
			case fv.Kind() == reflect.Struct && !isLeaf(fv.Type()):
				walk(fv, key)
			case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
				if fv.Len() > 0 {
					walk(fv.Index(0), key+"[]")
				}
			case fv.Kind() == reflect.Map:
			default:
				if !fv.IsZero() {
					values[key] = fmt.Sprint(fv.Interface())
				}
			}
		}
	}
	walk(reflect.ValueOf(*cfg), "")
	given = map[string]bool{}
	for _, k := range []string{"cluster.name", "cluster.iqn_prefix", "nodes[].name", "nodes[].san_address",
		"nodes[].mgmt_address", "storage.backend", "storage.lvm.vg", "guests[].name", "guests[].preferred_node",
		"guests[].disks[].name", "guests[].disks[].size", "guests[].disks[].legs"} {
		given[k] = true
	}
	return values, given, nil
}

// ConfigManPage renders mhcodi.yaml(5). example is a cluster file shown
// at the end (configs/examples/two-node.yaml).
func ConfigManPage(h Header, keys []Key, example string) []byte {
	var b strings.Builder
	b.WriteString(h.th("mhcodi.yaml", "5"))
	b.WriteString(`.SH NAME
mhcodi.yaml \- the mhcodi cluster file, /etc/mhcodi/cluster.yaml
.SH SYNOPSIS
.B /etc/mhcodi/cluster.yaml
.SH DESCRIPTION
Every mhcodi daemon and the
.BR mhcodi (1)
command read one YAML file, identical on every node of the cluster:
.I /etc/mhcodi/cluster.yaml
unless
.B \-\-config
.I FILE
or the environment variable
.B MHCODI_CONFIG
names another. Each daemon finds its own node in it by name
.RB ( \-\-node ).
.PP
Loading is strict: a key this page does not list is an error (with the
nearest allowed key as a suggestion), as is a value of the wrong type;
every problem in the file is reported at once, each as
.IR "FILE: KEY PATH: RULE" .
.B mhcodi config check
checks a file and prints every name derived from it.
.PP
Names of the cluster, nodes, guests and disks are lower\-case DNS labels
(a letter first, then a\-z, 0\-9 and \-, at most 31 characters). Every disk
has exactly two legs, on two different storage nodes. Addresses are IP
addresses with an optional port, never host names. A
.I size
needs a binary unit (K, M, G, T: 512M, 10G) and is a whole number of MiB; a
.I duration
needs a unit (10s, 1m30s). Relative paths are read from the directory of
the file.
.SH KEYS
Keys are written as paths: a list's entries are
.IR key [],
the entries of a mapping of names
.IR key .<name>.
A key with an environment variable can be set by it too, over the file.
`)
	for _, k := range keys {
		if !strings.Contains(k.Path, ".") && !strings.Contains(k.Path, "[") {
			fmt.Fprintf(&b, ".SS %s\n", esc(k.Path))
		}
		fmt.Fprintf(&b, ".TP\n.B %s\n", esc(k.Path))
		var info []string
		info = append(info, `\fI`+esc(k.Kind)+`\fR`)
		if k.Default != "" {
			info = append(info, "default "+esc(k.Default))
		}
		if k.Env != "" {
			info = append(info, "environment "+`\fB`+esc(k.Env)+`\fR`)
		}
		fmt.Fprintf(&b, "(%s)\n", strings.Join(info, "; "))
		if k.Doc != "" {
			b.WriteString(".br\n")
			b.WriteString(escLines(strings.Join(strings.Fields(k.Doc), " ")) + "\n")
		}
	}
	b.WriteString(`.SH ENVIRONMENT
.TP
.B MHCODI_CONFIG
the cluster file, instead of /etc/mhcodi/cluster.yaml
.TP
.B MHCODI_\fIKEY\fR
the key whose path, in upper case with dots as underscores, is
.IR KEY ,
e.g. MHCODI_TIMEOUTS_LEASE_TTL=30s; every key outside a list or mapping
has one (listed above). Nodes and guests come only from the file.
`)
	if example != "" {
		b.WriteString(".SH EXAMPLE\n.RS 4\n.nf\n")
		b.WriteString(escLines(strings.TrimRight(example, "\n")) + "\n")
		b.WriteString(".fi\n.RE\n")
	}
	b.WriteString(`.SH FILES
.TP
.I /etc/mhcodi/cluster.yaml
the cluster file
.TP
.I /usr/share/doc/mhcodi/examples/
example cluster files
.SH SEE ALSO
.BR mhcodi (1),
.BR mhcodi\-targetd (8),
.BR mhcodi\-fenced (8),
.BR mhcodi\-initiator (8),
.BR mhcodi\-bridge (8)
`)
	return []byte(b.String())
}

// EnvKeys lists the environment variables of keys, sorted.
func EnvKeys(keys []Key) []string {
	var out []string
	for _, k := range keys {
		if k.Env != "" {
			out = append(out, k.Env)
		}
	}
	sort.Strings(out)
	return out
}
