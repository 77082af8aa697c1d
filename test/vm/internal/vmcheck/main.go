// Command vmcheck is test/vm's own guest job: it checks facts about the
// machine it runs on and exits 1 if any is false.
//
//	vmcheck [-exists PATH]... [-module NAME]... [-contains FILE:TEXT]... [-sleep DURATION]
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var exists, modules, contains list
	flag.Var(&exists, "exists", "a path that must exist (repeatable)")
	flag.Var(&modules, "module", "a module that must be listed in /proc/modules (repeatable)")
	flag.Var(&contains, "contains", "FILE:TEXT, a file that must contain TEXT (repeatable)")
	sleep := flag.Duration("sleep", 0, "sleep this long first")
	flag.Parse()
	time.Sleep(*sleep)

	failed := false
	check := func(ok bool, what string, err error) {
		switch {
		case ok:
			fmt.Printf("vmcheck: ok: %s\n", what)
		case err != nil:
			fmt.Printf("vmcheck: FAIL: %s: %v\n", what, err)
			failed = true
		default:
			fmt.Printf("vmcheck: FAIL: %s\n", what)
			failed = true
		}
	}
	for _, p := range exists {
		_, err := os.Stat(p)
		check(err == nil, p+" exists", err)
	}
	if len(modules) > 0 {
		b, err := os.ReadFile("/proc/modules")
		loaded := map[string]bool{}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				loaded[f[0]] = true
			}
		}
		for _, m := range modules {
			name := strings.ReplaceAll(m, "-", "_")
			check(loaded[name], "module "+name+" is loaded", err)
		}
	}
	for _, c := range contains {
		file, text, _ := strings.Cut(c, ":")
		b, err := os.ReadFile(file)
		check(err == nil && strings.Contains(string(b), text), fmt.Sprintf("%s contains %q", file, text), err)
	}
	if failed {
		os.Exit(1)
	}
}
