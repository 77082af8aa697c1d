// Command vmjob is the guest side of test/guestraid_vm_test.go: it runs
// guestraid's commands against real md on the VM's virtio disks, one
// phase per boot, plays the host on a unix socket for `guestraid watch`,
// and checks what happens. It prints "vmjob: ok: …" per check and
// "vmjob: FAIL: …" (exit 1) at the first failure, and "vmjob: figure …"
// lines with measurements for the host test to log.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"

	"golang.org/x/sys/unix"

	"github.com/mhcodi/mhcodi/guestraid/channel"
)

const (
	guestraid = "/bin/guestraid"
	mdadm     = "/sbin/mdadm"
	md0       = "/dev/md0"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: vmjob <phase>")
	}
	phases := map[string]func(){
		"first": phaseFirst, "only-a": func() { phaseOnly("node-a", 0xA1) }, "only-b": func() { phaseOnly("node-b", 0xB2) },
		"split": phaseSplit, "boot": phaseBoot,
	}
	for _, name := range os.Args[1:] {
		f := phases[name]
		if f == nil {
			fail("unknown phase %q", name)
		}
		fmt.Printf("vmjob: phase %s\n", name)
		f()
	}
	fmt.Println("vmjob: all checks passed")
	exit(0)
}

func fail(format string, args ...any) {
	fmt.Printf("vmjob: FAIL: "+format+"\n", args...)
	exit(1)
}

// exit prints test/vm's exit marker itself (the format test/vm/doc.go
// documents; the host takes the first one) and waits until the serial
// console has sent it (tcdrain) before exiting. test/vm's uinit prints
// the same marker and powers off at once, without draining the console,
// and under TCG the line is often lost with the machine; remove this when
// the uinit drains (and waits) before powering off.
func exit(status int) {
	for _, f := range strings.Fields(sysfs("/proc/cmdline")) {
		if nonce, ok := strings.CutPrefix(f, "mhcodi.vm.nonce="); ok {
			unix.Sync()
			fmt.Printf("\nMHCODI-VM-EXIT %s %d\n", nonce, status)
		}
	}
	_ = unix.IoctlSetInt(int(os.Stdout.Fd()), unix.TCSBRK, 1)
	// tcdrain alone was not enough in practice (the tail of the output
	// was still lost at times): give the UART a moment too.
	time.Sleep(time.Second)
	os.Exit(status)
}

func ok(format string, args ...any) { fmt.Printf("vmjob: ok: "+format+"\n", args...) }

func check(cond bool, format string, args ...any) {
	if !cond {
		fail(format, args...)
	}
	ok(format, args...)
}

// run runs a command with its output on the console and returns it.
func run(argv ...string) (string, error) {
	fmt.Printf("vmjob: $ %s\n", strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stdout
	err := cmd.Run()
	os.Stdout.Write(out.Bytes())
	return out.String(), err
}

func must(argv ...string) string {
	out, err := run(argv...)
	if err != nil {
		fail("%s: %v", strings.Join(argv, " "), err)
	}
	return out
}

func sysfs(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

func devState(dev string) string { return sysfs("/sys/block/md0/md/dev-" + dev + "/state") }

// waitIdle waits for md0's resync/recovery to end.
func waitIdle(d time.Duration) time.Duration {
	start := time.Now()
	time.Sleep(200 * time.Millisecond)
	for time.Since(start) < d {
		if sysfs("/sys/block/md0/md/sync_action") == "idle" && sysfs("/sys/block/md0/md/degraded") != "" {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	fail("md0 still %s after %s", sysfs("/sys/block/md0/md/sync_action"), d)
	return 0
}

// hostFile writes host info to a file and returns its path.
func hostFile(name, node string, epoch uint64, stale ...string) string {
	h := hostInfo(node, epoch, stale...)
	b, _ := json.Marshal(h)
	p := "/tmp/" + name + ".json"
	if err := os.WriteFile(p, b, 0o644); err != nil {
		fail("%v", err)
	}
	return p
}

func hostInfo(node string, epoch uint64, stale ...string) channel.Host {
	st := map[string]bool{}
	for _, s := range stale {
		st[s] = true
	}
	return channel.Host{Type: "host", Guest: "demo", Node: node, Epoch: epoch, Disks: []channel.Disk{{Name: "root", Legs: []channel.Leg{
		{Node: "node-a", Serial: "MHC-LEG-A", Local: node == "node-a", Stale: st["node-a"]},
		{Node: "node-b", Serial: "MHC-LEG-B", Local: node == "node-b", Stale: st["node-b"]},
	}}}}
}

// pattern is 1 MiB of b.
func pattern(b byte) []byte { return bytes.Repeat([]byte{b}, 1<<20) }

func writeMD(off int64, mib int, b byte) {
	f, err := os.OpenFile(md0, os.O_WRONLY, 0)
	if err != nil {
		fail("%v", err)
	}
	defer f.Close()
	for i := 0; i < mib; i++ {
		if _, err := f.WriteAt(pattern(b), off+int64(i)<<20); err != nil {
			fail("writing md0: %v", err)
		}
	}
	if err := f.Sync(); err != nil {
		fail("sync md0: %v", err)
	}
}

func readMD(off int64) []byte {
	f, err := os.OpenFile(md0, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		fail("%v", err)
	}
	defer f.Close()
	// O_DIRECT: an aligned buffer (a fresh 1 MiB allocation is page aligned).
	buf := make([]byte, 1<<20)
	if _, err := f.ReadAt(buf, off); err != nil {
		fail("reading md0: %v", err)
	}
	return buf
}

func serialDev(serial string) string {
	ents, _ := os.ReadDir("/sys/block")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "vd") && sysfs("/sys/block/"+e.Name()+"/serial") == serial {
			return e.Name()
		}
	}
	return ""
}

// host is the host end of `guestraid watch --channel unix:…`.
type host struct {
	ln     net.Listener
	conn   net.Conn
	events chan *channel.Event
	states chan *channel.State
	watch  *exec.Cmd
	ended  chan error
}

func startWatch(hostInfo string, extra ...string) *host {
	sock := "/tmp/host.sock"
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fail("%v", err)
	}
	h := &host{ln: ln, events: make(chan *channel.Event, 256), states: make(chan *channel.State, 1024), ended: make(chan error, 1)}
	args := append([]string{"watch", "--host-info", hostInfo, "--channel", "unix:" + sock, "--poll", "300ms", "--readd-delay", "3s"}, extra...)
	fmt.Printf("vmjob: $ %s %s &\n", guestraid, strings.Join(args, " "))
	h.watch = exec.Command(guestraid, args...)
	h.watch.Stdout, h.watch.Stderr = os.Stdout, os.Stdout
	if err := h.watch.Start(); err != nil {
		fail("%v", err)
	}
	go func() { h.ended <- h.watch.Wait() }()
	if ul, ok := ln.(*net.UnixListener); ok {
		_ = ul.SetDeadline(time.Now().Add(30 * time.Second))
	}
	h.conn, err = ln.Accept()
	if err != nil {
		fail("watch did not connect to the host socket: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(h.conn)
		for sc.Scan() {
			v, err := channel.Decode(sc.Bytes())
			if err != nil {
				fmt.Printf("vmjob: host got a bad line %q: %v\n", sc.Text(), err)
				continue
			}
			switch m := v.(type) {
			case *channel.Event:
				h.events <- m
			case *channel.State:
				select {
				case h.states <- m:
				default:
				}
			}
		}
	}()
	return h
}

func (h *host) send(v any) {
	b, _ := json.Marshal(v)
	fmt.Printf("vmjob: host sends %s\n", b)
	if _, err := h.conn.Write(append(b, '\n')); err != nil {
		fail("sending to watch: %v", err)
	}
}

// expect waits for event word (skipping others) and returns it.
func (h *host) expect(word string, d time.Duration) *channel.Event {
	t := time.After(d)
	for {
		select {
		case e := <-h.events:
			if e.Event == word {
				ok("host got event %s: %s", word, e.Detail)
				return e
			}
		case <-t:
			fail("no %s event within %s", word, d)
		case err := <-h.ended:
			fail("watch ended: %v", err)
		}
	}
}

func (h *host) stop() {
	_ = h.watch.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-h.ended:
		check(err == nil, "watch exited cleanly on SIGTERM (%v)", err)
	case <-time.After(15 * time.Second):
		_ = h.watch.Process.Kill()
		fail("watch did not exit on SIGTERM")
	}
	h.conn.Close()
	h.ln.Close()
}

// phaseFirst: both legs, host info over fw_cfg, events on the virtio port.
func phaseFirst() {
	// 1. First boot: create, from fw_cfg host info, over the virtio port.
	_, err := os.Stat(channel.FwCfgPath)
	check(err == nil, "fw_cfg host info at %s", channel.FwCfgPath)
	must(guestraid, "assemble", "--host-wait", "0")
	check(strings.Contains(sysfs("/proc/mdstat"), "md0 : active raid1"), "md0 created")
	a, b := serialDev("MHC-LEG-A"), serialDev("MHC-LEG-B")
	check(a != "" && b != "", "legs by serial: A=%s B=%s", a, b)
	check(strings.Contains(devState(b), "write_mostly") && strings.Contains(devState(b), "failfast"), "remote leg %s is write-mostly and failfast (%s)", b, devState(b))
	check(!strings.Contains(devState(a), "write_mostly"), "local leg %s is the read leg (%s)", a, devState(a))
	exam := must(mdadm, "--examine", "/dev/"+a)
	check(strings.Contains(exam, "Internal Bitmap"), "internal bitmap")
	fmt.Printf("vmjob: figure bitmap_chunk %s\n", sysfs("/sys/block/md0/md/bitmap/chunksize"))
	fmt.Printf("vmjob: figure initial_resync %s\n", waitIdle(3*time.Minute).Round(time.Millisecond))
	must(mdadm, "--examine-bitmap", "/dev/"+a)
	writeMD(0, 2, 0x11)

	// 2. Re-assemble (a second boot).
	must(mdadm, "--stop", md0)
	info := hostFile("host1", "node-a", 1)
	must(guestraid, "assemble", "--host-info", info, "--channel", "none")
	check(sysfs("/sys/block/md0/md/degraded") == "0", "re-assembled with both legs")
	check(bytes.Equal(readMD(0), pattern(0x11)), "data survived re-assembly")

	// 3. A leg fails; watch removes it, re-adds it through the bitmap.
	h := startWatch(info)
	select {
	case st := <-h.states:
		check(st.MD == "md0" && st.Degraded == 0, "host got a state message: %s %s degraded=%d", st.MD, st.ArrayState, st.Degraded)
	case <-time.After(10 * time.Second):
		fail("no state message from watch")
	}
	// md clears the bits of the initial resync lazily (a few bitmap
	// daemon periods): a leg failed before that would count them too.
	start := time.Now()
	for {
		out, _ := exec.Command(mdadm, "--examine-bitmap", "/dev/"+a).Output()
		if strings.Contains(string(out), " 0 dirty") {
			break
		}
		if time.Since(start) > time.Minute {
			fail("bitmap still dirty a minute after the resync: %s", out)
		}
		time.Sleep(time.Second)
	}
	fmt.Printf("vmjob: figure bitmap_clean_after %s\n", time.Since(start).Round(time.Second))
	must(mdadm, md0, "--fail", "/dev/"+b)
	writeMD(64<<20, 8, 0x22) // 8 MiB, while vdb is out: 8 dirty chunks
	writeMD(200<<20, 1, 0x23)
	h.expect(channel.EventFail, 10*time.Second)
	h.expect(channel.EventRemoved, 10*time.Second)
	ev := h.expect(channel.EventReAdd, 30*time.Second)
	fmt.Printf("vmjob: figure readd dirty_bytes %d array_bytes %d\n", ev.DirtyBytes, ev.ArrayBytes)
	check(ev.DirtyBytes >= 9<<20 && ev.DirtyBytes < 64<<20, "dirty_bytes %d covers the 9 MiB written, not the array", ev.DirtyBytes)
	done := h.expect(channel.EventResyncDone, 60*time.Second)
	fmt.Printf("vmjob: figure readd resync_bytes %d\n", done.ResyncBytes)
	check(done.ResyncBytes > 0 && done.ResyncBytes < 64<<20, "bitmap re-add wrote %d bytes, not the whole leg", done.ResyncBytes)
	check(strings.Contains(devState(b), "write_mostly"), "flags back on the re-added leg (%s)", devState(b))

	// 4. The host marks node-b stale: wiped, full resync.
	h.send(hostInfo("node-a", 2, "node-b"))
	h.expect(channel.EventWipe, 30*time.Second)
	h.expect(channel.EventAdd, 10*time.Second)
	start = time.Now()
	done = h.expect(channel.EventResyncDone, 3*time.Minute)
	fmt.Printf("vmjob: figure stale full resync_bytes %d in %s\n", done.ResyncBytes, time.Since(start).Round(time.Millisecond))
	check(done.ResyncBytes >= done.ArrayBytes, "stale leg resynced in full (%d of %d bytes)", done.ResyncBytes, done.ArrayBytes)

	// 5. Failover to node-b: the flags follow.
	h.send(hostInfo("node-b", 3))
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && !(strings.Contains(devState(a), "write_mostly") && !strings.Contains(devState(b), "write_mostly")) {
		time.Sleep(200 * time.Millisecond)
	}
	check(strings.Contains(devState(a), "write_mostly") && strings.Contains(devState(a), "failfast"), "after failover %s is write-mostly, failfast (%s)", a, devState(a))
	check(!strings.Contains(devState(b), "write_mostly") && !strings.Contains(devState(b), "failfast"), "after failover %s is the read leg (%s)", b, devState(b))

	// 6. A check scrub on request.
	h.send(channel.Check{Type: "check", Disk: "root"})
	h.expect(channel.EventCheckStart, 15*time.Second)
	cd := h.expect(channel.EventCheckDone, 2*time.Minute)
	check(strings.Contains(cd.Detail, "mismatch_cnt 0"), "the legs match after all that")
	h.stop()

	// 7. status, both forms.
	out := must(guestraid, "status", "--host-info", hostFile("host3", "node-b", 3))
	check(strings.Contains(out, "md0") && strings.Contains(out, "in_sync"), "status table")
	out = must(guestraid, "status", "--json", "--host-info", hostFile("host3", "node-b", 3))
	var states []channel.State
	check(json.Unmarshal([]byte(out), &states) == nil && len(states) == 1 && states[0].Degraded == 0 && len(states[0].Legs) == 2, "status --json")
	check(bytes.Equal(readMD(64<<20), pattern(0x22)) && bytes.Equal(readMD(0), pattern(0x11)), "data intact")
	must(mdadm, "--stop", md0)
	ok("first phase done")
}

// phaseOnly: one leg attached; degraded assembly; write a marker.
func phaseOnly(node string, marker byte) {
	info := hostFile("host", "node-a", 4)
	out, err := run(guestraid, "assemble", "--host-info", info, "--channel", "none")
	check(err == nil, "degraded assembly with only %s's leg succeeds", node)
	_ = out
	check(sysfs("/sys/block/md0/md/degraded") == "1", "md0 runs degraded")
	writeMD(100<<20, 4, marker)
	check(bytes.Equal(readMD(100<<20), pattern(marker)), "wrote %s's marker", node)
	must(mdadm, "--stop", md0)
}

// phaseSplit: both legs after each ran alone.
func phaseSplit() {
	// Without host info: the event-count policy, no-host-info reported;
	// the two are never assembled together.
	out, err := run(guestraid, "assemble", "--channel", "none", "--host-wait", "0", "--state-file", "")
	_ = out
	check(err == nil, "assembled without host info")
	check(sysfs("/sys/block/md0/md/degraded") == "1", "split legs not assembled together (degraded=1)")
	must(mdadm, "--examine", "/dev/vda")
	must(mdadm, "--examine", "/dev/vdb")
	must(mdadm, "--stop", md0)

	// The host decides: node-a is stale (node-b ran last), so node-b's
	// data wins and node-a is wiped and resynced in full.
	info := hostFile("stale-a", "node-b", 5, "node-a")
	must(guestraid, "assemble", "--host-info", info, "--channel", "none")
	check(bytes.Equal(readMD(100<<20), pattern(0xB2)), "node-b's writes are the array's content")
	fmt.Printf("vmjob: figure split full resync %s\n", waitIdle(3*time.Minute).Round(time.Millisecond))
	check(sysfs("/sys/block/md0/md/degraded") == "0", "node-a's leg is back after a full resync")
	out = must(mdadm, "--detail", md0)
	_ = out
	// Reads now come from either leg (node-b is local, node-a
	// write-mostly); check node-a's copy directly through a scrub.
	must(guestraid, "status", "--host-info", info)
	if err := os.WriteFile("/sys/block/md0/md/sync_action", []byte("check"), 0); err != nil {
		fail("%v", err)
	}
	waitIdle(3 * time.Minute)
	check(sysfs("/sys/block/md0/md/mismatch_cnt") == "0", "mismatch_cnt 0: node-a's diverged writes are gone")
	must(mdadm, "--stop", md0)
}

// phaseBoot: guestraid boot as a process (not PID 1 here: test/vm's
// uinit is): assemble, run a command, SIGTERM → children stopped, arrays
// stopped, exit (--poweroff=false).
func phaseBoot() {
	info := hostFile("host", "node-b", 6)
	if err := os.MkdirAll("/etc/guestraid", 0o755); err != nil {
		fail("%v", err)
	}
	cmd := exec.Command(guestraid, "boot", "--poweroff=false", "--host-info", info, "--channel", "none",
		"--run", "/bin/vmjob child")
	out := &syncbuf.Buffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		fail("%v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(out.String(), "vmjob child running") {
		time.Sleep(200 * time.Millisecond)
	}
	check(strings.Contains(sysfs("/proc/mdstat"), "md0 : active"), "boot assembled md0 before running the command")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		fmt.Print(out.String())
		check(err == nil, "boot shut down on SIGTERM (%v)", err)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		fmt.Print(out.String())
		fail("boot did not shut down")
	}
	check(strings.Contains(out.String(), "vmjob child got SIGTERM"), "the command got SIGTERM")
	check(!strings.Contains(sysfs("/proc/mdstat"), "md0 : active"), "md0 stopped at shutdown")
}

func init() {
	// "vmjob child": a command for phaseBoot's --run.
	if len(os.Args) > 1 && os.Args[1] == "child" {
		sig := make(chan os.Signal, 1)
		signalNotify(sig)
		fmt.Println("vmjob child running")
		<-sig
		fmt.Println("vmjob child got SIGTERM")
		os.Exit(0)
	}
}
