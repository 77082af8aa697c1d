package configs

import (
	"encoding"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// Load reads the cluster file at path, applies MHCODI_* environment
// overrides, decodes it strictly, fills defaults, resolves relative paths
// against the file's directory and validates it. On any problem it returns
// Errors listing every one found, each naming the file, key path and rule.
func Load(path string) (*Config, error) {
	if path == "" {
		path = DefaultPath
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &FieldError{File: path, Rule: fmt.Sprintf("cannot resolve path: %v", err)}
	}
	if fi, err := os.Stat(path); err != nil {
		return nil, &FieldError{File: path, Rule: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}
	} else if fi.IsDir() {
		return nil, &FieldError{File: path, Rule: "is a directory, not a cluster file"}
	}

	v := viper.New()
	v.SetConfigFile(path)
	// The file is YAML whatever its name ends in.
	v.SetConfigType("yaml")
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	// viper's AutomaticEnv does not feed Unmarshal for keys it has not seen
	// (spf13/viper#761), so every scalar key outside a list is bound by hand.
	envKeys := map[string]string{}
	for _, k := range scalarKeys(reflect.TypeFor[Config](), "") {
		name := EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(k, ".", "_"))
		if err := v.BindEnv(k, name); err != nil {
			return nil, fmt.Errorf("bind %s: %w", name, err)
		}
		if val, ok := os.LookupEnv(name); ok && val != "" {
			envKeys[k] = name
		}
	}
	// Defaults of scalar keys go through viper, so an explicit "0s" in the
	// file is checked against the rules instead of silently defaulted.
	v.SetDefault("timeouts.replacement_timeout", DefaultReplacementTimeout.String())
	v.SetDefault("timeouts.lease_ttl", DefaultLeaseTTL.String())
	v.SetDefault("hypervisor.stop_timeout", DefaultStopTimeout.String())
	v.SetDefault("hypervisor.io_timeout", DefaultIOTimeout.String())
	v.SetDefault("fencing.lease_margin", DefaultLeaseMargin.String())
	v.SetDefault("fencing.monitor_interval", DefaultMonitorInterval.String())
	if err := v.ReadInConfig(); err != nil {
		var pe viper.ConfigParseError
		if errors.As(err, &pe) {
			return nil, &FieldError{File: path, Rule: "not valid YAML: " + strings.TrimPrefix(errors.Unwrap(pe).Error(), "yaml: ")}
		}
		return nil, &FieldError{File: path, Rule: fmt.Sprintf("cannot read: %v", err)}
	}

	raw := v.AllSettings()
	errs := Errors{}
	for _, ke := range unknownKeys(raw, reflect.TypeFor[Config](), "") {
		errs = append(errs, &FieldError{File: path, Key: ke.key, Rule: ke.rule})
	}

	cfg := &Config{Path: path, Dir: filepath.Dir(abs)}
	hook := viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		durationHook,
		sizeHook,
		mapstructure.TextUnmarshallerHookFunc(),
	))
	// The decoder goes on past a bad value (leaving that field zero) and
	// past unknown keys, so what it decoded is validated too: every problem
	// in the file comes at once, not one kind per run.
	var bad []string // keys whose value did not decode
	if err := v.UnmarshalExact(cfg, hook); err != nil {
		de := decodeErrors(path, err, envKeys)
		if len(errs) > 0 {
			// Unknown keys were reported above, with suggestions; the
			// decoder's "has invalid keys" only repeats them.
			de = slices.DeleteFunc(de, func(e *FieldError) bool { return strings.HasPrefix(e.Rule, "has invalid keys") })
		}
		for _, e := range de {
			bad = append(bad, e.Key)
		}
		errs = append(errs, de...)
	}

	refillMaps(raw, cfg, hook)
	cfg.applyDefaults()
	if !slices.Contains(bad, "") {
		// A decoder error without a key path leaves unknown what is left
		// of the file, so its rules are checked on the next run.
		if verr := cfg.validate(envKeys); verr != nil {
			ves, _ := AsErrors(verr)
			// A value that did not decode is zero now: its own rules would
			// only repeat the decoding error in other words.
			ves = slices.DeleteFunc(ves, func(e *FieldError) bool { return related(e.Key, bad) })
			errs = append(errs, ves...)
		}
	}
	if len(errs) > 0 {
		sortErrorsIn(errs, reflect.TypeFor[Config]())
		return nil, errs
	}
	return cfg, nil
}

// refillMaps decodes again, leniently, the entries of named sections
// (networks, and each node's networks) that the strict decoder dropped for
// an unknown key inside them: the unknown key is reported already, and the
// entry's other keys are still to be checked (and a NIC on that network is
// not on an unknown one).
func refillMaps(raw map[string]any, cfg *Config, hook viper.DecoderConfigOption) {
	dc := &mapstructure.DecoderConfig{}
	hook(dc)
	lenient := func(in any, out any) {
		d := *dc
		d.Result = out
		if dec, err := mapstructure.NewDecoder(&d); err == nil {
			_ = dec.Decode(in)
		}
	}
	if m, ok := raw["networks"].(map[string]any); ok {
		for k, e := range m {
			if _, ok := cfg.Networks[k]; ok {
				continue
			}
			var nw Network
			lenient(e, &nw)
			if cfg.Networks == nil {
				cfg.Networks = map[string]Network{}
			}
			cfg.Networks[k] = nw
		}
	}
	nodes, _ := raw["nodes"].([]any)
	for i, n := range nodes {
		nm, _ := n.(map[string]any)
		m, ok := nm["networks"].(map[string]any)
		if !ok || i >= len(cfg.Nodes) {
			continue
		}
		for k, e := range m {
			if _, ok := cfg.Nodes[i].Networks[k]; ok {
				continue
			}
			var nn NodeNetwork
			lenient(e, &nn)
			if cfg.Nodes[i].Networks == nil {
				cfg.Nodes[i].Networks = map[string]NodeNetwork{}
			}
			cfg.Nodes[i].Networks[k] = nn
		}
	}
}

// related reports whether key is one of keys, or inside or around one of
// them ("guests[0].disks" and "guests[0].disks[0].size" are both related to
// "guests[0].disks[0]").
func related(key string, keys []string) bool {
	within := func(inner, outer string) bool {
		rest, ok := strings.CutPrefix(inner, outer)
		return ok && (rest == "" || rest[0] == '.' || rest[0] == '[')
	}
	for _, k := range keys {
		if within(key, k) || within(k, key) {
			return true
		}
	}
	return false
}

// sizeHook refuses small sizes without a unit. ParseSize reads a bare
// number as bytes, and below a mebibyte that is never what was meant:
// "size: 10" is a 10-byte disk, "memory: 2048" a 2 KiB guest. A bare
// whole number of at least 1 MiB is an exact byte count (what `stat -c %s`
// or `blockdev --getsize64` print, and what scripts write into cluster
// files), so it stays accepted.
func sizeHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[Size]() {
		return data, nil
	}
	var num string
	switch d := data.(type) {
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		num = fmt.Sprint(d)
	case string:
		t := strings.TrimSpace(d)
		if t == "" || strings.Trim(t, "0123456789.") != "" {
			return data, nil // has a unit, or is no number: ParseSize says which
		}
		num = t
	default:
		return data, nil
	}
	if strings.HasPrefix(num, "-") {
		return nil, fmt.Errorf("%s is not a size: write a positive number with a unit, e.g. 10G", num)
	}
	if n, err := strconv.ParseUint(num, 10, 64); err == nil && n >= uint64(MiB) {
		return data, nil
	}
	return nil, fmt.Errorf("%s has no unit, so it would be %s bytes: write %sG or %sM (binary units K, M, G, T)", num, num, num, num)
}

// durationHook reads durations from strings ("10s", "1m30s") and refuses
// bare numbers, which time.Duration would take as nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	switch d := data.(type) {
	case string:
		v, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration: write a number with a unit, e.g. 10s, 1m30s", d)
		}
		return v, nil
	case time.Duration:
		return d, nil
	}
	return nil, fmt.Errorf("%v is not a duration: write a number with a unit, e.g. 10s (a bare number would be nanoseconds)", data)
}

// scalarKeys lists the dotted keys of every scalar field reachable from t
// through structs only (not through lists or pointers): the keys an
// environment variable can set.
func scalarKeys(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		if tag == "" || tag == "-" {
			continue
		}
		key := prefix + tag
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Struct && !isLeaf(ft):
			out = append(out, scalarKeys(ft, key+".")...)
		case ft.Kind() == reflect.Slice, ft.Kind() == reflect.Pointer, ft.Kind() == reflect.Map:
		default:
			out = append(out, key)
		}
	}
	return out
}

// isLeaf reports whether a struct type is read from one scalar (Address).
func isLeaf(t reflect.Type) bool {
	return reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

type keyError struct{ key, rule string }

// unknownKeys walks the decoded file against the Config type and reports
// every key the schema does not have, with the keys that are allowed there.
func unknownKeys(data any, t reflect.Type, path string) []keyError {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []keyError
	switch t.Kind() {
	case reflect.Struct:
		if isLeaf(t) {
			return nil
		}
		m, ok := data.(map[string]any)
		if !ok {
			return nil // a type error, which the decoder reports
		}
		fields := map[string]reflect.Type{}
		var allowed []string
		for i := 0; i < t.NumField(); i++ {
			tag := t.Field(i).Tag.Get("mapstructure")
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = t.Field(i).Type
			allowed = append(allowed, tag)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[strings.ToLower(k)]
			if !ok {
				rule := fmt.Sprintf("unknown key %q", k)
				if s := closest(k, allowed); s != "" {
					rule += fmt.Sprintf(" (did you mean %q?)", s)
				}
				rule += "; allowed here: " + strings.Join(allowed, ", ")
				out = append(out, keyError{join(path, k), rule})
				continue
			}
			out = append(out, unknownKeys(m[k], ft, join(path, k))...)
		}
	case reflect.Map:
		// A map of named sections (networks): its keys are names, not
		// schema keys; what is inside each is checked.
		if m, ok := data.(map[string]any); ok && t.Key().Kind() == reflect.String {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				out = append(out, unknownKeys(m[k], t.Elem(), join(path, k))...)
			}
		}
	case reflect.Slice:
		if l, ok := data.([]any); ok {
			for i, e := range l {
				out = append(out, unknownKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// closest returns the allowed key nearest to k by edit distance, if it is
// near enough to be a typo.
func closest(k string, allowed []string) string {
	best, bestD := "", 3
	for _, a := range allowed {
		if d := editDistance(strings.ToLower(k), a); d < bestD {
			best, bestD = a, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// decodeErrors turns the decoder's errors into FieldErrors with key paths.
func decodeErrors(file string, err error, envKeys map[string]string) Errors {
	var out Errors
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var de *mapstructure.DecodeError
		if errors.As(e, &de) {
			rule := de.Unwrap().Error()
			var pe *mapstructure.ParseError
			if errors.As(de.Unwrap(), &pe) {
				rule = fmt.Sprintf("%v is not a valid %s", pe.Value, typeWord(pe.Expected.Type()))
			}
			var ue *mapstructure.UnconvertibleTypeError
			if errors.As(de.Unwrap(), &ue) {
				rule = fmt.Sprintf("expected %s, got %s", typeWord(ue.Expected.Type()), describe(ue.Value))
			}
			if strings.HasPrefix(rule, "expected a map or struct") {
				rule = "expected a mapping (key: value lines), got a single value"
			}
			out = append(out, &FieldError{File: file, Key: de.Name(), Env: envKeys[de.Name()], Rule: rule})
			return
		}
		out = append(out, &FieldError{File: file, Rule: e.Error()})
	}
	walk(err)
	return out
}

func typeWord(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if t == reflect.TypeFor[Size]() {
			return "size (e.g. 10G)"
		}
		return "whole number"
	case reflect.Bool:
		return "true/false"
	case reflect.String:
		return "string"
	case reflect.Slice:
		return "list"
	case reflect.Struct, reflect.Map:
		return "mapping (key: value lines)"
	}
	return t.String()
}

func describe(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	case nil:
		return "nothing"
	}
	return fmt.Sprintf("%q", fmt.Sprint(v))
}

// sortErrors orders errors by key path, with list indexes compared as
// numbers and other keys alphabetically.
func sortErrors(es Errors) { sortErrorsIn(es, nil) }

// sortErrorsIn orders errors as the keys appear in a file written in the
// order of the schema t (cluster, nodes, storage, guests, ...): fields in
// the order t declares them, keys t does not know after them, list indexes
// as numbers. Errors on the same key keep their order.
func sortErrorsIn(es Errors, t reflect.Type) {
	sort.SliceStable(es, func(i, j int) bool { return keyLessIn(t, es[i].Key, es[j].Key) })
}

func keyLess(a, b string) bool { return keyLessIn(nil, a, b) }

func keyLessIn(t reflect.Type, a, b string) bool {
	for a != "" && b != "" {
		ta, ra := nextToken(a)
		tb, rb := nextToken(b)
		if ta != tb {
			na, ea := parseIndex(ta)
			nb, eb := parseIndex(tb)
			if ea && eb {
				return na < nb
			}
			if fa, fb := fieldRank(t, ta), fieldRank(t, tb); fa != fb {
				return fa < fb
			}
			return ta < tb
		}
		t = childType(t, ta)
		a, b = ra, rb
	}
	return a == "" && b != ""
}

// fieldRank is the position of the field named by tok (".name" or "name")
// in struct t, or the number of fields if t has no such field; 0 if t is
// not a struct.
func fieldRank(t reflect.Type, tok string) int {
	if t == nil || t.Kind() != reflect.Struct {
		return 0
	}
	name := strings.TrimPrefix(tok, ".")
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Tag.Get("mapstructure") == name {
			return i
		}
	}
	return t.NumField()
}

// childType is the type of what tok ("[1]", ".name") names inside t, or
// nil if unknown.
func childType(t reflect.Type, tok string) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return nil
	}
	if _, ok := parseIndex(tok); ok {
		if t.Kind() == reflect.Slice {
			return t.Elem()
		}
		return nil
	}
	if t.Kind() == reflect.Map {
		return t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	name := strings.TrimPrefix(tok, ".")
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Tag.Get("mapstructure") == name {
			ft := t.Field(i).Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			return ft
		}
	}
	return nil
}

func nextToken(s string) (string, string) {
	i := strings.IndexAny(s[1:], ".[")
	if i < 0 {
		return s, ""
	}
	return s[:i+1], s[i+1:]
}

func parseIndex(tok string) (int, bool) {
	if !strings.HasPrefix(tok, "[") || !strings.HasSuffix(tok, "]") {
		return 0, false
	}
	n := 0
	for _, c := range tok[1 : len(tok)-1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
