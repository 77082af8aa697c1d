// Command cluster brings a test cluster of network namespaces up and down
// for people (and `make demo`): the same cluster test/cluster builds for
// end-to-end tests, with mhcodi-targetd running on every storage node.
//
//	go run ./test/cmd/cluster up [--nodes 2] [--witness] [--fenced] [--foreground]
//	go run ./test/cmd/cluster status [--prefix P]
//	go run ./test/cmd/cluster down [--prefix P | --dir D | --all]
//
// `up` leaves the cluster running and exits (the daemons are detached);
// with --fenced it starts mhcodi-fenced on every node too, and it always
// prints the commands to run fenced and the CLI on each node;
// its state is in <dir>/cluster.json and /run/mhcodi-test-cluster, from
// which `down` tears it down. With --foreground it stays, and ^C or
// SIGTERM tears the cluster down. Needs root (namespaces), and bin/ built
// with `make build`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/test/cluster"
	"github.com/mhcodi/mhcodi/test/guesttest"
)

const usage = `usage: cluster up|down|status [flags]   (cluster <command> -h for its flags)

  up      build a cluster of network namespaces and start targetd on each
          storage node (and mhcodi-fenced on every node with --fenced);
          prints where everything is and what to run on each node
  status  list the registered clusters, or show one (--prefix, --dir)
  down    tear a cluster down: stop its daemons, delete its namespaces,
          remove its directory (unless --keep)
`

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(os.Args[1:], os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer, log *slog.Logger) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "up":
		return up(args[1:], out, log)
	case "down":
		return down(args[1:], out, log)
	case "status":
		return status(args[1:], out)
	case "-h", "--help", "help":
		fmt.Fprint(out, usage)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func up(args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	o := cluster.Options{Logger: log}
	fs.IntVar(&o.Nodes, "nodes", 2, "storage nodes (node-a, node-b, …)")
	fs.BoolVar(&o.Witness, "witness", false, "add a witness node")
	fs.StringVar(&o.Dir, "dir", "", "cluster directory (default: a new one under $TMPDIR)")
	fs.StringVar(&o.Prefix, "prefix", "", "namespace name prefix (default: mhc + 5 random hex digits)")
	fs.StringVar(&o.BinDir, "bin-dir", "", "where mhcodi and mhcodi-targetd are (default: the repository's bin/)")
	fs.StringVar(&o.ImageDir, "image-dir", "", "hypervisor.image_dir of the cluster file (default: <dir>/image; with --fenced, the guest image in .cache/guest-image, built when missing)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the directory when the cluster goes down")
	noTargetd := fs.Bool("no-targetd", false, "start no daemon")
	fenced := fs.Bool("fenced", false, "start mhcodi-fenced on every node too, and wait for the ledger's quorum")
	fs.Func("fencing", "a `key: value` line of the fencing section (auto_failover: true); repeatable", func(v string) error {
		o.Fencing = append(o.Fencing, v)
		return nil
	})
	foreground := fs.Bool("foreground", false, "stay until SIGINT/SIGTERM, then tear down (default: detach and exit)")
	fs.BoolVar(&o.ServiceNetwork, "service", false, "add a service network svc (br-svc on every storage node, a client namespace on it) and give the demo guest a NIC on it, host .50")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.ServiceNetwork && o.Nodes >= 2 {
		o.Guests = cluster.DefaultGuests([]string{"node-a", "node-b"})
		o.Guests[0].NICs = []configs.NIC{{Network: cluster.ServiceNetwork, Address: ".50"}}
	}
	o.Detach = !*foreground
	// Certificates always: fenced cannot run without them, and a test
	// cluster is where a sysadmin tries fenced first.
	o.TLS = true
	if *fenced && *noTargetd {
		return errors.New("--fenced needs targetd: drop --no-targetd")
	}
	if *fenced && o.ImageDir == "" {
		// A cluster with fenced is for starting guests: give it the
		// guest image (built once into .cache/guest-image, reused while
		// no input changed).
		img, err := guesttest.BuildImage(context.Background(), func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) })
		if err != nil {
			return fmt.Errorf("the guest image for --fenced (or pass --image-dir): %w", err)
		}
		o.ImageDir = img.Dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if swept, err := cluster.SweepStale(ctx); err != nil {
		log.Warn("sweeping stale clusters", "err", err)
	} else if len(swept) > 0 {
		log.Info("swept clusters whose owner died", "prefixes", swept)
	}
	c, err := cluster.New(ctx, o)
	if err != nil {
		return err
	}
	if !*noTargetd {
		for _, h := range c.Hosts() {
			if h.Role != configs.RoleStorage {
				continue
			}
			if _, err := h.StartTargetd(ctx); err != nil {
				return errors.Join(err, c.Close())
			}
		}
	}
	if *fenced {
		if err := c.StartFencedAll(ctx, time.Minute); err != nil {
			return errors.Join(err, c.Close())
		}
	}
	printCluster(out, c, *fenced)
	if !*foreground {
		fmt.Fprintf(out, "\nTear it down with: scripts/test-cluster.sh down --prefix %s\n", c.Prefix())
		return nil
	}
	fmt.Fprintf(out, "\nRunning in the foreground: ^C (or SIGTERM) tears it down.\n")
	// The cluster's own signal handler tears down and raises the signal
	// again, which ends this process.
	select {}
}

// shellLine quotes argv for a shell where it needs it.
func shellLine(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}();&|<>#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

func printCluster(out io.Writer, c *cluster.Cluster, fenced bool) {
	fmt.Fprintf(out, "cluster %s: subnet %s, bridge in netns %s\n", c.Prefix(), c.Subnet(), c.BridgeNetns())
	fmt.Fprintf(out, "  dir     %s\n  config  %s (shared: for targetd, the initiator and reading)\n  nodes   %s/nodes/<node>.yaml (each node's own copy, for fenced and the CLI)\n  tls     %s\n  logs    %s/logs\n\n",
		c.Dir(), c.ConfigPath, c.Dir(), c.TLSDir(), c.Dir())
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tNETNS\tADDRESS\tINITIATOR\tDAEMONS")
	for _, h := range c.Hosts() {
		var d []string
		for _, p := range h.Procs() {
			d = append(d, fmt.Sprintf("%s (pid %d)", p.Name, p.PID))
		}
		iqn := "-" // a witness initiates nothing
		if h.Role == configs.RoleStorage {
			iqn = h.InitiatorIQN()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Role, h.Netns, h.Addr, iqn, dash(strings.Join(d, ", ")))
	}
	_ = tw.Flush()
	// Every node shares this machine's filesystem, so each has its own
	// copy of the cluster file that differs only in hypervisor.run_dir
	// and fencing.state_dir: fenced and the CLI of a node must be given
	// that copy, its sockets and its targetd's control socket.
	if fenced {
		fmt.Fprintf(out, "\nmhcodi-fenced runs on every node and the ledger has quorum. The CLI, on each node:\n")
	} else {
		fmt.Fprintf(out, "\nTo run mhcodi-fenced (or scripts/test-cluster.sh up --fenced), on each node, then the CLI:\n")
	}
	for _, h := range c.Hosts() {
		fmt.Fprintf(out, "  %s:\n", h.Name)
		if !fenced {
			fmt.Fprintf(out, "    ip netns exec %s %s &\n", h.Netns, shellLine(h.FencedArgv()))
		}
		fmt.Fprintf(out, "    ip netns exec %s %s\n", h.Netns, shellLine(h.CLIArgv("status")))
	}
	if storage := storageHosts(c); len(storage) > 0 {
		a := storage[0]
		fmt.Fprintf(out, "\nThen: ip netns exec %s %s; ip netns exec %s %s\n", a.Netns, shellLine(a.CLIArgv("guest", "create", "demo")),
			a.Netns, shellLine(a.CLIArgv("guest", "start", "demo")))
	}
	if c.ServiceSubnet().IsValid() {
		fmt.Fprintf(out, "\nService network %s: subnet %s, bridge %s on every storage node, client in netns %s at %s; demo's NIC is %s.\n",
			cluster.ServiceNetwork, c.ServiceSubnet(), cluster.ServiceBridge, c.ClientNetns(), c.ClientAddr(), c.ServiceAddr(50).Addr())
		if storage := storageHosts(c); len(storage) > 0 {
			a := storage[0]
			fmt.Fprintf(out, "Its console, once it runs: ip netns exec %s %s (Ctrl-] detaches)\n", a.Netns, shellLine(a.CLIArgv("guest", "console", "demo")))
		}
	}
	if len(c.Hosts()) > 1 {
		a, b := c.Hosts()[0], c.Hosts()[1]
		fmt.Fprintf(out, "\nTry: ip netns exec %s iscsi-ls -i %s iscsi://%s/\n", a.Netns, a.InitiatorIQN(), b.Addr)
	}
}

func storageHosts(c *cluster.Cluster) []*cluster.Host {
	var out []*cluster.Host
	for _, h := range c.Hosts() {
		if h.Role == configs.RoleStorage {
			out = append(out, h)
		}
	}
	return out
}

// pick finds the state of the cluster the flags name; with neither flag,
// the only detached cluster registered.
func pick(prefix, dir string) (*cluster.State, error) {
	switch {
	case prefix != "" && dir != "":
		return nil, errors.New("give --prefix or --dir, not both")
	case prefix != "":
		return cluster.ReadState(prefix)
	case dir != "":
		return cluster.ReadState(dir)
	}
	all, err := cluster.Registered()
	if err != nil {
		return nil, err
	}
	var detached []*cluster.State
	for _, s := range all {
		if s.Owner.PID == 0 {
			detached = append(detached, s)
		}
	}
	if len(detached) == 1 {
		return detached[0], nil
	}
	var names []string
	for _, s := range detached {
		names = append(names, s.Prefix)
	}
	return nil, fmt.Errorf("%d clusters brought up by `cluster up` are registered (%s): name one with --prefix", len(detached), dash(strings.Join(names, ", ")))
}

func down(args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("down", flag.ContinueOnError)
	prefix := fs.String("prefix", "", "the cluster's prefix")
	dir := fs.String("dir", "", "the cluster's directory")
	all := fs.Bool("all", false, "every cluster brought up by `cluster up`, and every cluster whose owner died (never one a running test owns)")
	keep := fs.Bool("keep", false, "keep the cluster's directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var states []*cluster.State
	if *all {
		reg, err := cluster.Registered()
		if err != nil {
			return err
		}
		for _, s := range reg {
			// A live owner is a test or a foreground `up` that tears
			// down itself; another engineer's run must not lose its
			// cluster to this.
			if !s.OwnerAlive() {
				states = append(states, s)
			}
		}
	} else {
		s, err := pick(*prefix, *dir)
		if err != nil {
			return err
		}
		states = append(states, s)
	}
	var errs []error
	for _, s := range states {
		if s.OwnerAlive() {
			// A foreground `up` (or a test): ask it to tear down itself,
			// then sweep whatever remains.
			log.Info("asking the owner to tear down", "prefix", s.Prefix, "pid", s.Owner.PID)
			_ = syscall.Kill(s.Owner.PID, syscall.SIGTERM)
			for i := 0; i < 300 && s.OwnerAlive(); i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if err := cluster.Sweep(ctx, s, *keep); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Prefix, err))
			continue
		}
		fmt.Fprintf(out, "cluster %s is down\n", s.Prefix)
	}
	if len(states) == 0 {
		fmt.Fprintln(out, "no cluster to tear down")
	}
	return errors.Join(errs...)
}

func status(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	prefix := fs.String("prefix", "", "show this cluster")
	dir := fs.String("dir", "", "show the cluster of this directory")
	asJSON := fs.Bool("json", false, "print the state as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var states []*cluster.State
	if *prefix != "" || *dir != "" {
		s, err := pick(*prefix, *dir)
		if err != nil {
			return err
		}
		states = append(states, s)
	} else {
		var err error
		if states, err = cluster.Registered(); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if states == nil {
			states = []*cluster.State{}
		}
		return enc.Encode(states)
	}
	if len(states) == 0 {
		fmt.Fprintln(out, "no cluster is registered")
	}
	for _, s := range states {
		owner := "detached (cluster down tears it down)"
		switch {
		case s.Owner.PID != 0 && s.OwnerAlive():
			owner = fmt.Sprintf("pid %d", s.Owner.PID)
		case s.Owner.PID != 0:
			owner = fmt.Sprintf("pid %d, DEAD: leftovers (cluster down --prefix %s)", s.Owner.PID, s.Prefix)
		}
		fmt.Fprintf(out, "cluster %s: subnet %s, owner %s\n  dir %s\n  config %s\n", s.Prefix, s.Subnet, owner, s.Dir, s.Config)
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NODE\tROLE\tNETNS\tADDRESS\tLINK\tPROCESSES")
		for _, h := range s.Hosts {
			ns := h.Netns
			if _, err := os.Stat("/run/netns/" + h.Netns); err != nil {
				ns += " (gone)"
			}
			link := "up"
			if h.Cut {
				link = "cut"
			}
			var ps []string
			for _, p := range h.Procs {
				st := "running"
				if !cluster.ProcAlive(p) {
					st = "gone"
				} else if h.Frozen {
					st = "frozen"
				}
				ps = append(ps, fmt.Sprintf("%s pid %d %s", p.Name, p.PID, st))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Role, ns, h.Addr, link, dash(strings.Join(ps, ", ")))
		}
		_ = tw.Flush()
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
