// Command bench-guest is `make bench-guest`: inside a guest of the test
// cluster, sequential O_DIRECT throughput of md0 against its local leg
// alone and its remote leg alone, in one run, as ratios (TCG makes the
// absolute figures slow and noisy). Goals: md0 read ≥ 0.9× the local leg
// (reads go to the local leg; the remote one is write-mostly) and md0
// write ≥ 0.8× the remote leg (a mirrored write waits for both legs).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/test/cluster"
	"github.com/mhcodi/mhcodi/test/guesttest"
)

func main() {
	rounds := flag.Int("rounds", 5, "measurements of each kind (the median is reported)")
	size := flag.String("size", "192M", "bytes per measurement (at most the 255 MiB of md0; short runs are noise at page-cache speed)")
	reqs := flag.String("req", "1M,4M", "request sizes, comma-separated (K or M suffix); one guest boot each")
	consoleDir := flag.String("console-dir", "", "if set, each guest's console goes to console-<req>.log there (the workload's JSON lines, guestraid's events)")
	flag.Parse()
	type result struct {
		req    string
		rr, wr float64
	}
	var results []result
	for _, req := range strings.Split(*reqs, ",") {
		rr, wr, err := run(*rounds, *size, req, *consoleDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-guest:", err)
			os.Exit(1)
		}
		results = append(results, result{req, rr, wr})
	}
	// Under TCG md's own per-request work is emulated too, so the read
	// ratio grows with the request size; the write ratio depends on how
	// md's clones are split for the remote leg.
	fmt.Printf("\n| request size | md0 read / local leg read (goal ≥ 0.90) | md0 write / remote leg write (goal ≥ 0.80) |\n|---|---|---|\n")
	for _, r := range results {
		fmt.Printf("| %s | %.2f | %.2f |\n", r.req, r.rr, r.wr)
	}
}

func run(rounds int, size, req, consoleDir string) (readRatio, writeRatio float64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	img, err := guesttest.BuildImage(ctx, func(string, ...any) {})
	if err != nil {
		return 0, 0, err
	}
	// vda is the local leg (node-a, where the guest runs), vdb the remote
	// one. The remote leg is written alone only after md0 is stopped.
	var reads, writes []string
	for range rounds {
		reads = append(reads, "read:/dev/md0", "read:/dev/vda", "read:/dev/vdb")
		writes = append(writes, "write:/dev/md0")
	}
	list := append([]string{"idle:/dev/md0"}, reads...)
	list = append(list, writes...)
	list = append(list, "stop:/dev/md0")
	for range rounds {
		list = append(list, "write:/dev/vdb")
	}
	cmdline := "mhcodi.workload=bench mhcodi.workload.bench_size=" + size + " mhcodi.workload.bench_req=" + req + " mhcodi.workload.bench=" + strings.Join(list, ",")
	c, err := cluster.New(ctx, guesttest.MirrorOptions(img, 256*configs.MiB, cmdline, slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	a, b := c.Host("node-a"), c.Host("node-b")
	for _, h := range []*cluster.Host{a, b} {
		if _, err := h.StartTargetd(ctx); err != nil {
			return 0, 0, err
		}
	}
	g, err := guesttest.Start(ctx, c, a, "demo", guesttest.Options{Epoch: 1})
	if err != nil {
		return 0, 0, err
	}
	defer g.Destroy(context.Background())
	fmt.Printf("guest demo on node-a: md0 over vda (local file leg) and vdb (node-b's leg through mhcodi-bridge and targetd); %d × %s per row, O_DIRECT, %s requests\n", rounds, size, req)
	deadline := time.Now().Add(15 * time.Minute)
	for len(g.WorkloadLines("bench-done")) == 0 {
		if errs := g.WorkloadLines("error"); len(errs) > 0 {
			return 0, 0, fmt.Errorf("the workload failed: %v", errs[0]["error"])
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("no result after 15 minutes; console:\n%s", g.Console())
		}
		time.Sleep(time.Second)
	}
	if consoleDir != "" {
		if err := os.WriteFile(filepath.Join(consoleDir, "console-"+req+".log"), []byte(g.Console()), 0o644); err != nil {
			return 0, 0, fmt.Errorf("saving the console: %w", err)
		}
	}
	rates := map[string][]float64{}
	// What each disk moved during md0's measurements: md0's reads should
	// all come from vda (vdb is write-mostly), its writes go to both.
	moved := map[string]map[string]float64{}
	for _, m := range g.WorkloadLines("bench") {
		key := fmt.Sprintf("%v %v", m["op"], m["device"])
		rates[key] = append(rates[key], m["mb_per_s"].(float64))
		disks, _ := m["disks"].(map[string]any)
		for d, v := range disks {
			io, _ := v.(map[string]any)
			if moved[key] == nil {
				moved[key] = map[string]float64{}
			}
			f, _ := io[m["op"].(string)+"_bytes"].(float64)
			n, _ := io[m["op"].(string)+"_ios"].(float64)
			moved[key][d] += f
			moved[key][d+" ios"] += n
		}
	}
	med := func(k string) float64 {
		v := rates[k]
		if len(v) == 0 {
			return 0
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	fmt.Printf("\n| measurement | MB/s (median of %d) | all |\n|---|---|---|\n", rounds)
	for _, k := range []string{"read /dev/md0", "read /dev/vda", "read /dev/vdb", "write /dev/md0", "write /dev/vdb"} {
		fmt.Printf("| %s | %.1f | %s |\n", k, med(k), fmtAll(rates[k]))
	}
	for _, k := range []string{"read /dev/md0", "read /dev/vda", "write /dev/md0", "write /dev/vdb"} {
		fmt.Printf("\n%s moved: vda %.0f MiB in %.0f requests, vdb %.0f MiB in %.0f requests", k,
			moved[k]["vda"]/(1<<20), moved[k]["vda ios"], moved[k]["vdb"]/(1<<20), moved[k]["vdb ios"])
	}
	fmt.Println()
	rr := med("read /dev/md0") / med("read /dev/vda")
	wr := med("write /dev/md0") / med("write /dev/vdb")
	fmt.Printf("\nmd0 read / local leg read  = %.2f (goal ≥ 0.90)\nmd0 write / remote leg write = %.2f (goal ≥ 0.80)\n", rr, wr)
	fmt.Printf("remote leg read / local leg read = %.2f (what write-mostly saves md0's reads)\n", med("read /dev/vdb")/med("read /dev/vda"))
	return rr, wr, nil
}

func fmtAll(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.1f", x)
	}
	return strings.Join(s, ", ")
}
