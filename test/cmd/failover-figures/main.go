// Command failover-figures runs the fencing end-to-end tests several times
// and sums up their figures: the time from cutting a guest's owner off to
// the guest writing again on the other host (quorum mode, default
// timeouts), and the forced failover's. The tests measure; this only
// collects the "FIGURE name_s=value" lines they log, so the numbers are
// those of real runs (network namespaces, fenced, TCG guests).
//
//	go run ./test/cmd/failover-figures [-n 3] [-run REGEXP]
//
// Needs root and bin/ built (make build). A failed run is reported and
// its figures still counted: a failure after the failover (a resync that
// never came) says nothing against the failover's timing.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// figureRE finds the name_s=value pairs of a FIGURE line.
var figureRE = regexp.MustCompile(`([a-z_]+_s)=([0-9]+(?:\.[0-9]+)?)`)

func main() {
	n := flag.Int("n", 3, "runs of each test")
	run := flag.String("run", `^TestFencing(QuorumFailover|ForcedFailover|FrozenOwner)$`, "the tests to run (go test -run)")
	pkg := flag.String("pkg", "./test/", "the package holding them")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	figures := map[string][]float64{}
	failed := 0
	for i := range *n {
		start := time.Now()
		got, err := runOnce(ctx, *pkg, *run, os.Stderr)
		for k, v := range got {
			figures[k] = append(figures[k], v...)
		}
		if err != nil {
			failed++
			log.Warn("run failed", "run", i+1, "took", time.Since(start).Round(time.Second), "err", err)
		} else {
			log.Info("run passed", "run", i+1, "took", time.Since(start).Round(time.Second))
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(figures) == 0 {
		fmt.Fprintln(os.Stderr, "failover-figures: no FIGURE line in any run")
		os.Exit(1)
	}
	report(os.Stdout, figures, *n, failed)
}

// runOnce runs go test once, passing its output through to w, and returns
// the figures it logged.
func runOnce(ctx context.Context, pkg, run string, w io.Writer) (map[string][]float64, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-v", "-timeout", "20m", "-run", run, pkg)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("go test: %w", err)
	}
	figures := parse(io.TeeReader(out, w))
	if err := cmd.Wait(); err != nil {
		return figures, fmt.Errorf("go test: %w", err)
	}
	return figures, nil
}

// parse collects the name_s=value pairs of every FIGURE line.
func parse(r io.Reader) map[string][]float64 {
	figures := map[string][]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "FIGURE ")
		if i < 0 {
			continue
		}
		head, _, _ := strings.Cut(line[i:], ":")
		for _, m := range figureRE.FindAllStringSubmatch(head, -1) {
			if v, err := strconv.ParseFloat(m[2], 64); err == nil {
				figures[m[1]] = append(figures[m[1]], v)
			}
		}
	}
	return figures
}

// report prints min, median and max of every figure.
func report(w io.Writer, figures map[string][]float64, runs, failed int) {
	names := make([]string, 0, len(figures))
	for k := range figures {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "%d runs, %d failed\n", runs, failed)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tN\tMIN\tMEDIAN\tMAX")
	for _, k := range names {
		v := slices.Clone(figures[k])
		slices.Sort(v)
		fmt.Fprintf(tw, "%s\t%d\t%.1f s\t%.1f s\t%.1f s\n", strings.TrimSuffix(k, "_s"), len(v), v[0], median(v), v[len(v)-1])
	}
	if err := tw.Flush(); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		fmt.Fprintln(os.Stderr, err)
	}
}

// median of sorted values.
func median(v []float64) float64 {
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
