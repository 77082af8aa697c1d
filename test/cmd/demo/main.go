// Command demo is `make demo`: two hosts as network namespaces, targetd on
// each, the guest image booted on node-a with its disk mirrored across
// both, node-b's leg killed and returned while the guest keeps writing.
// It says what happens in plain sentences and tears everything down, on
// success, failure and ^C.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/guestraid/channel"
	"github.com/mhcodi/mhcodi/test/cluster"
	"github.com/mhcodi/mhcodi/test/guesttest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	slog.SetDefault(quiet) // the sentences are the output; the drivers' logs are not

	say("Building the guest image: Debian's kernel and a u-root initramfs with guestraid, mdadm and a test workload.")
	img, err := guesttest.BuildImage(ctx, func(string, ...any) {})
	if err != nil {
		return err
	}
	c, err := cluster.New(ctx, guesttest.MirrorOptions(img, 64*configs.MiB, "mhcodi.workload=write mhcodi.workload.size=8M", quiet))
	if err != nil {
		return err
	}
	defer func() {
		say("Tearing down: the guest, the daemons, the namespaces and the files are removed.")
		c.Close()
	}()
	a, b := c.Host("node-a"), c.Host("node-b")
	say("Two hosts on one SAN bridge: node-a at %s and node-b at %s (network namespaces %s and %s).", a.Addr, b.Addr, a.Netns, b.Netns)
	for _, h := range []*cluster.Host{a, b} {
		if _, err := h.StartTargetd(ctx); err != nil {
			return err
		}
	}
	say("mhcodi-targetd runs on both and exports each host's leg of guest demo's disk over iSCSI.")

	say("Booting guest demo on node-a: md RAID1 over its local leg and node-b's leg (reached through mhcodi-bridge, a userspace iSCSI initiator).")
	g, err := guesttest.Start(ctx, c, a, "demo", guesttest.Options{Epoch: 1})
	if err != nil {
		return err
	}
	defer g.Destroy(context.Background())
	st, next, err := g.WaitState(ctx, 0, "root", guesttest.Healthy)
	if err != nil {
		return fmt.Errorf("%w; console:\n%s", err, g.Console())
	}
	say("The mirror is built and in sync: %s", guesttest.Describe(st))
	say("The guest writes a checksummed pattern to md0, continuously.")
	time.Sleep(3 * time.Second)

	say("Killing node-b's targetd (a crash: SIGKILL).")
	killed := time.Now()
	if err := b.KillTargetd(); err != nil {
		return err
	}
	st, next, err = g.WaitState(ctx, next, "root", func(s *channel.State) bool { return s.Degraded > 0 })
	if err != nil {
		return err
	}
	say("After %.1f s md dropped node-b's leg; the guest runs on its local leg: %s", time.Since(killed).Seconds(), guesttest.Describe(st))
	time.Sleep(5 * time.Second)
	say("The guest kept writing meanwhile: %d workload I/O errors so far.", len(g.WorkloadLines("ioerror")))

	say("Starting node-b's targetd again.")
	back := time.Now()
	if _, err := b.StartTargetd(ctx); err != nil {
		return err
	}
	readd, next, err := g.WaitEvent(ctx, next, "root", channel.EventReAdd)
	if err != nil {
		return err
	}
	say("guestraid re-added node-b's leg through the write-intent bitmap %.1f s later: %d KiB of %d MiB were dirty.",
		time.Since(back).Seconds(), readd.DirtyBytes>>10, st.ArrayBytes>>20)
	done, next, err := g.WaitEvent(ctx, next, "root", channel.EventResyncDone)
	if err != nil {
		return err
	}
	st, _, err = g.WaitState(ctx, next, "root", guesttest.Healthy)
	if err != nil {
		return err
	}
	say("Resync done (%d KiB written to the returning leg): %s", done.ResyncBytes>>10, guesttest.Describe(st))

	say("Stopping the guest with the ACPI power button: the workload stops, md stops, the guest powers off.")
	if err := g.Stop(ctx, 90*time.Second); err != nil {
		return err
	}
	rep, err := guesttest.CompareLegs(c.Config, "demo", "root", 8<<20)
	if err != nil {
		return err
	}
	if rep.FirstDiff != -1 {
		return fmt.Errorf("the legs differ at byte %d of their data areas", rep.FirstDiff)
	}
	va := rep.Verify["node-a"]
	if !va.OK() || !rep.Verify["node-b"].OK() {
		return fmt.Errorf("the pattern does not verify: %+v", rep.Verify)
	}
	say("On the hosts, both leg files hold identical data from md's data offset on, and the pattern verifies (pass %d written up to block %d of %d).", va.Gen, va.Cursor, va.Blocks)
	say("Workload I/O errors seen by the guest: %d.", len(g.WorkloadLines("ioerror")))
	return nil
}
