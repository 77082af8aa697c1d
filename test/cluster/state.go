package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// RegistryDir holds one copy of every live cluster's state, named
// <prefix>.json, so leftovers can be found without knowing the cluster's
// directory. It is under /run: a reboot, which also drops every
// namespace, empties it.
const RegistryDir = "/run/mhcodi-test-cluster"

// StateFile is the name of the state file in the cluster's directory.
const StateFile = "cluster.json"

func registryPath(prefix string) string { return filepath.Join(RegistryDir, prefix+".json") }

// State is what a cluster records about itself: enough for Sweep to undo
// it after the process that built it died, and for `cluster status`.
type State struct {
	Prefix      string `json:"prefix"`
	Dir         string `json:"dir"`
	Config      string `json:"config"`
	Subnet      string `json:"subnet"`
	BridgeNetns string `json:"bridge_netns"`
	// RemoveDir says the directory was made by the run and goes with it.
	RemoveDir bool `json:"remove_dir"`
	// Owner is the process that tears the cluster down; zero for a
	// detached cluster, which only Sweep tears down.
	Owner ownerRecord  `json:"owner"`
	Hosts []hostRecord `json:"hosts"`
	// Up is false once Close ran (a kept directory's final state).
	Up bool `json:"up"`
}

type ownerRecord struct {
	PID   int    `json:"pid,omitempty"`
	Start uint64 `json:"start,omitempty"`
}

type hostRecord struct {
	Name     string       `json:"name"`
	Role     string       `json:"role"`
	Netns    string       `json:"netns"`
	Addr     string       `json:"addr"`
	Veth     string       `json:"veth"`
	Procs    []procRecord `json:"procs,omitempty"`
	Daemons  []daemonSpec `json:"daemons,omitempty"`
	Cut      bool         `json:"cut,omitempty"`
	Frozen   bool         `json:"frozen,omitempty"`
	RunDir   string       `json:"run_dir"`
	StateDir string       `json:"state_dir"`
}

// HostState is one host of a State.
type HostState = hostRecord

// ProcState is one process of a HostState.
type ProcState = procRecord

func (c *Cluster) state(up bool) State {
	s := State{Prefix: c.prefix, Dir: c.dir, Config: c.ConfigPath, Subnet: c.subnet.String(),
		BridgeNetns: c.bridgeNetns, RemoveDir: c.removeDir, Owner: c.owner, Up: up}
	for _, h := range c.hosts {
		s.Hosts = append(s.Hosts, h.recordLocked())
	}
	return s
}

// saveState writes the state to <dir>/cluster.json and the registry.
func (c *Cluster) saveState() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.saveStateLocked(true)
}

func (c *Cluster) saveStateLocked(up bool) error {
	b, err := json.MarshalIndent(c.state(up), "", "  ")
	if err != nil {
		return fmt.Errorf("cluster state: %w", err)
	}
	b = append(b, '\n')
	paths := []string{filepath.Join(c.dir, StateFile)}
	if up {
		if err := os.MkdirAll(RegistryDir, 0o755); err != nil {
			return fmt.Errorf("cluster registry: %w", err)
		}
		paths = append(paths, registryPath(c.prefix))
	}
	for _, p := range paths {
		// Write and rename, so a reader (Sweep, status) never sees half.
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return fmt.Errorf("cluster state: %w", err)
		}
		if err := os.Rename(tmp, p); err != nil {
			return fmt.Errorf("cluster state: %w", err)
		}
	}
	return nil
}

// ReadState reads a state file: a cluster directory (its cluster.json),
// the file itself, or a prefix (its registry entry).
func ReadState(where string) (*State, error) {
	p := where
	if fi, err := os.Stat(where); err == nil && fi.IsDir() {
		p = filepath.Join(where, StateFile)
	} else if err != nil && !strings.ContainsRune(where, '/') {
		p = registryPath(where)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("cluster state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("cluster state %s: %w", p, err)
	}
	return &s, nil
}

// Registered lists the states of every cluster in the registry.
func Registered() ([]*State, error) {
	ents, err := os.ReadDir(RegistryDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cluster registry: %w", err)
	}
	var out []*State
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		s, err := ReadState(filepath.Join(RegistryDir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// OwnerAlive reports whether the process that built the cluster still
// runs (it then tears the cluster down itself). Detached clusters have no
// owner.
func (s *State) OwnerAlive() bool {
	return s.Owner.PID != 0 && sameProcess(s.Owner.PID, s.Owner.Start)
}

// Sweep tears down what the state records: every process (by PID, only
// while its start time still matches, so a recycled PID is never hit;
// SIGCONT, SIGTERM, SIGKILL after grace), every namespace, the registry
// entry, and the directory when the run made it and keep is false. It is
// what `cluster down` runs, and what undoes a run that crashed or was
// SIGKILLed. Sweeping a cluster twice is harmless.
func Sweep(ctx context.Context, s *State, keep bool) error {
	if s.Prefix == "" {
		return errors.New("sweep: state has no prefix")
	}
	ip, err := ipTool()
	if err != nil {
		return err
	}
	var errs []error
	var procs []procRecord
	for _, h := range s.Hosts {
		procs = append(procs, h.Procs...)
		// The guests a fenced started (qemu daemonizes, the leg bridge
		// has its own session) are in no record unless a test tracked
		// them; a detached `up --fenced` leaves them to this.
		found, err := guestPIDs(h.RunDir, h.Netns)
		if err != nil {
			errs = append(errs, fmt.Errorf("sweep: guests of %s: %w", h.Name, err))
		}
		for _, g := range found {
			if start, _, err := procStart(g.pid); err == nil {
				procs = append(procs, procRecord{Name: g.name, PID: g.pid, Start: start})
			}
		}
	}
	for _, p := range procs {
		if sameProcess(p.PID, p.Start) {
			_ = syscall.Kill(p.PID, syscall.SIGCONT)
			_ = syscall.Kill(p.PID, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range procs {
		for sameProcess(p.PID, p.Start) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if sameProcess(p.PID, p.Start) {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
	for _, p := range procs {
		for i := 0; sameProcess(p.PID, p.Start); i++ {
			if i == 500 {
				errs = append(errs, fmt.Errorf("sweep: %s pid %d survives SIGKILL", p.Name, p.PID))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	names := []string{}
	for _, h := range s.Hosts {
		names = append(names, h.Netns)
	}
	names = append(names, s.BridgeNetns)
	// Namespaces are created after the state is first written, but a
	// run can die between a namespace and its record being rewritten;
	// the random prefix makes every <prefix>-* this run's own.
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), s.Prefix+"-") {
				names = append(names, e.Name())
			}
		}
	}
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		if err := deleteNetns(ctx, ip, n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(registryPath(s.Prefix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if s.RemoveDir && !keep && s.Dir != "" {
		if err := os.RemoveAll(s.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SweepStale sweeps every registered cluster whose owner process is gone
// (a test binary that was SIGKILLed, a crashed CLI in the foreground).
// Detached clusters and clusters of live processes — other tests running
// in parallel — are left alone. It returns the prefixes it swept.
func SweepStale(ctx context.Context) ([]string, error) {
	all, err := Registered()
	if err != nil {
		return nil, err
	}
	var swept []string
	var errs []error
	for _, s := range all {
		if s.Owner.PID == 0 || s.OwnerAlive() {
			continue
		}
		if err := Sweep(ctx, s, false); err != nil {
			errs = append(errs, fmt.Errorf("sweep %s: %w", s.Prefix, err))
		}
		swept = append(swept, s.Prefix)
	}
	return swept, errors.Join(errs...)
}

// findBinDir picks the directory of the built binaries and checks that
// they are there, naming the step that builds them when they are not.
func findBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("MHCODI_BIN_DIR")
	}
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "bin")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("bin dir: %w", err)
	}
	for _, b := range []string{"mhcodi", "mhcodi-targetd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s not built: run `make build` (or `make test`, which builds first): %w", filepath.Join(dir, b), err)
		}
	}
	return dir, nil
}

// repoRoot is the directory of the mhcodi go.mod at or above the working
// directory.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("repo root: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if f, err := os.Open(filepath.Join(d, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			isOurs := sc.Scan() && strings.TrimSpace(sc.Text()) == "module github.com/mhcodi/mhcodi"
			f.Close()
			if isOurs {
				return d, nil
			}
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("repo root: no go.mod of github.com/mhcodi/mhcodi at or above %s; set Options.BinDir or MHCODI_BIN_DIR", wd)
		}
	}
}

// ProcAlive reports whether a recorded process still runs (its PID names
// the same process: the start time matches).
func ProcAlive(p ProcState) bool { return sameProcess(p.PID, p.Start) }
