package ops

import (
	"errors"
	"slices"
	"strings"
)

// andList writes "a", "a and b", "a, b and c".
func andList(xs []string) string { return list(xs, "and") }

// orList writes "a", "a or b", "a, b or c".
func orList(xs []string) string { return list(xs, "or") }

func list(xs []string, conj string) string {
	switch len(xs) {
	case 0:
		return "none"
	case 1:
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " " + conj + " " + xs[len(xs)-1]
}

func joinOr(xs []string, none string) string {
	if len(xs) == 0 {
		return none
	}
	return strings.Join(xs, ", ")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func ifElse(c bool, a, b string) string {
	if c {
		return a
	}
	return b
}

// firstOther is the first of xs that is not x, "" if none.
func firstOther(xs []string, x string) string {
	for _, y := range xs {
		if y != x {
			return y
		}
	}
	return ""
}

// appendNew appends x to xs unless it is there already.
func appendNew(xs []string, x string) []string {
	if slices.Contains(xs, x) {
		return xs
	}
	return append(slices.Clone(xs), x)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func asError(err error, e **Error) bool { return errors.As(err, e) }
