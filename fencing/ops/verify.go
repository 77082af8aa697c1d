package ops

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// Severities of findings: an error makes mhcodi verify exit 1.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
)

// Codes of findings, stable for scripts (mhcodi verify --json).
const (
	CodeNodeDown         = "node-down"          // a node does not answer
	CodeNoQuorum         = "ledger-no-quorum"   // the ledger cannot be written
	CodeLedgerStale      = "ledger-stale"       // the records are an old read
	CodeNodeNoQuorum     = "node-no-quorum"     // one node cannot write the ledger
	CodeConfigDiffers    = "config-differs"     // nodes run with different cluster files
	CodeUnknownRunning   = "guest-unknown"      // a guest runs that the cluster file does not name
	CodeWrongNode        = "guest-wrong-node"   // a guest runs where the ledger does not give it
	CodeDoubleRun        = "guest-double-run"   // a guest runs on two hosts
	CodeGuestDown        = "guest-down"         // meant to run, runs nowhere
	CodeShouldBeStopped  = "guest-not-stopped"  // meant to be stopped, runs
	CodeGuestState       = "guest-state"        // runs but is paused, crashed…
	CodeNoRecord         = "guest-no-record"    // in the file, not in the ledger
	CodeRecordUnknown    = "record-unknown"     // in the ledger, not in the file
	CodeLeaseWrongHolder = "lease-wrong-holder" // the lease is held by a node that is not the owner
	CodeLeaseMissing     = "lease-missing"      // runs on its owner, who holds no lease
	CodeLegStale         = "leg-stale"
	CodeLegMissing       = "leg-missing"
	CodeLegDegraded      = "leg-degraded"
	CodeLegFailed        = "leg-failed"      // the leg's volume failed an fdatasync
	CodeExportMissing    = "export-missing"  // a leg's node does not export it
	CodeExportFence      = "export-fence"    // an export is fenced to another owner or epoch
	CodeExportUnfenced   = "export-unfenced" // a running guest's export accepts any initiator
	CodeImportMissing    = "import-missing"  // the runner has no session to a remote leg
	CodeNPlusOne         = "n-plus-1"        // a node's guests would not fit on their other nodes
	CodeBridgeMissing    = "bridge-missing"  // a node lacks the bridge of a guest's network (or its VLAN filtering)
	CodeResyncStalled    = "resync-stalled"  // a guest's array has not progressed its sync for ResyncStallAfter
)

// ResyncStallAfter is how long an array's sync may stand still before
// verify reports it (fenced's event log says it at the same time).
const ResyncStallAfter = 2 * time.Minute

// Finding is one thing mhcodi verify found.
type Finding struct {
	Severity string `json:"severity"`
	Code     string `json:"code"`
	Guest    string `json:"guest,omitempty"`
	Node     string `json:"node,omitempty"`
	Message  string `json:"message"`
}

// HasErrors reports whether any finding is an error.
func HasErrors(fs []Finding) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Severity == SeverityError })
}

// Verify checks a view against the cluster file, the way gnt-cluster
// verify checks a Ganeti cluster: hosts and ledger, where each guest runs
// against who owns it, legs, exports and imports, the nodes' cluster
// files, and whether each node's guests would fit on their other nodes
// (N+1). Findings come in that order.
func Verify(cfg *configs.Config, v api.ClusterView) []Finding {
	f := NewFacts(cfg, v.Self, v)
	var out []Finding
	add := func(sev, code, guest, node, format string, args ...any) {
		out = append(out, Finding{Severity: sev, Code: code, Guest: guest, Node: node, Message: fmt.Sprintf(format, args...)})
	}

	// Hosts and the ledger.
	for _, n := range v.Nodes {
		if !n.Up {
			add(SeverityError, CodeNodeDown, "", n.Node, "%s (%s) does not answer: %s", n.Node, n.Role, orDefault(n.Err, "no reason given"))
		} else if v.Quorum && !n.Status.Quorum {
			add(SeverityWarning, CodeNodeNoQuorum, "", n.Node, "%s cannot write the ledger: %s", n.Node, orDefault(n.Status.LedgerErr, "no reason given"))
		}
	}
	if !v.Quorum {
		add(SeverityError, CodeNoQuorum, "", v.Self, "the ledger has no quorum as %s sees it (%s): nothing can be started or moved without --force",
			v.Self, orDefault(v.LedgerErr, "no reason given"))
	}
	if v.LedgerStale {
		add(SeverityWarning, CodeLedgerStale, "", v.Self, "the ledger's records are %s's last read, which may be behind", v.Self)
	}
	f.verifyConfigs(add)

	// Guests.
	for _, name := range guestNames(cfg, v) {
		f.verifyGuest(name, add)
	}
	f.verifyNPlusOne(add)
	f.verifyBridges(add)
	return out
}

// verifyBridges reports, for every storage node that answers and every
// guest that could run there (it holds a leg of every disk), a bridge of
// the guest's networks the node lacks: a start or failover there would be
// refused.
func (f Facts) verifyBridges(add addFunc) {
	for _, n := range f.Cfg.Nodes {
		if n.Role != configs.RoleStorage || !f.up(n.Name) {
			continue
		}
		for i := range f.Cfg.Guests {
			g := &f.Cfg.Guests[i]
			if len(g.NICs) == 0 || !slices.Contains(candidates(g), n.Name) {
				continue
			}
			for _, p := range f.bridgeProblems(g, n.Name) {
				add(SeverityError, CodeBridgeMissing, g.Name, n.Name, "%s cannot run %s: %s", n.Name, g.Name, p)
			}
		}
	}
}

type addFunc func(sev, code, guest, node, format string, args ...any)

// verifyConfigs compares the digests of the nodes' cluster files with
// this node's (or, without it, the first one reported).
func (f Facts) verifyConfigs(add addFunc) {
	ref, refNode := "", ""
	for _, n := range f.View.Nodes {
		if n.ConfigDigest != "" && (ref == "" || n.Node == f.Self) {
			ref, refNode = n.ConfigDigest, n.Node
		}
	}
	for _, n := range f.View.Nodes {
		if n.ConfigDigest != "" && n.ConfigDigest != ref {
			add(SeverityError, CodeConfigDiffers, "", n.Node, "%s runs with a cluster file that differs from %s's (digest %s, not %s): copy the same file to every node and restart mhcodi-fenced",
				n.Node, refNode, short(n.ConfigDigest), short(ref))
		}
	}
}

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func (f Facts) verifyGuest(name string, add addFunc) {
	g, inFile := f.Cfg.Guest(name)
	rec, inLedger := f.record(name)
	running := f.runningOn(name)

	switch {
	case !inFile && len(running) > 0:
		add(SeverityError, CodeUnknownRunning, name, running[0], "%s runs on %s but the cluster file does not name it (mhcodi guest destroy %s)", name, andList(running), name)
	case !inFile:
		add(SeverityWarning, CodeRecordUnknown, name, "", "the ledger has a record of %s, which the cluster file does not name", name)
	case !inLedger:
		add(SeverityWarning, CodeNoRecord, name, "", "%s is not in the ledger (mhcodi guest create %s)", name, name)
	}
	if len(running) > 1 {
		add(SeverityError, CodeDoubleRun, name, "", "%s runs on %s at once: its disks may be written by two runners", name, andList(running))
	}
	for _, n := range running {
		if inLedger && rec.Owner != n {
			add(SeverityError, CodeWrongNode, name, n, "%s runs on %s, but the ledger gives it to %s (epoch %d)", name, n, orDefault(rec.Owner, "nobody"), rec.Epoch)
		}
		nv, _ := f.node(n)
		for _, s := range nv.Status.Guests {
			if s.Name == name && s.State != hypervisor.StateRunning && s.State != hypervisor.StateBlocked {
				add(SeverityWarning, CodeGuestState, name, n, "%s on %s is %s", name, n, s.State)
			}
		}
	}
	if inLedger && rec.Desired == ledger.DesiredRunning && len(running) == 0 {
		where := "no node that answers runs it"
		if rec.Owner != "" && !f.up(rec.Owner) {
			where = fmt.Sprintf("its owner %s does not answer", rec.Owner)
		}
		add(SeverityError, CodeGuestDown, name, rec.Owner, "%s should run but %s", name, where)
	}
	if inLedger && rec.Desired == ledger.DesiredStopped && len(running) > 0 {
		add(SeverityWarning, CodeShouldBeStopped, name, running[0], "%s runs on %s though it should be stopped", name, andList(running))
	}
	// Leases exist only in quorum mode: a two-node cluster holds none.
	if f.View.Quorum && inLedger && QuorumMode(f.Cfg) {
		h := f.holder(name)
		switch {
		case h != "" && h != rec.Owner:
			add(SeverityError, CodeLeaseWrongHolder, name, h, "%s's lease is held by %s, but the ledger gives it to %s", name, h, orDefault(rec.Owner, "nobody"))
		case h == "" && slices.Contains(running, rec.Owner):
			add(SeverityWarning, CodeLeaseMissing, name, rec.Owner, "%s runs on its owner %s, which holds no lease on it", name, rec.Owner)
		}
	}
	if !inFile {
		return
	}
	for _, d := range g.Disks {
		for _, n := range d.Legs {
			f.verifyLeg(g, d, n, rec, running, add)
		}
		for _, n := range running {
			nv, _ := f.node(n)
			if secs := nv.Status.Stalled[name][d.Name]; secs >= ResyncStallAfter.Seconds() {
				add(SeverityWarning, CodeResyncStalled, name, n, "%s's array of %s on %s has not progressed its sync for %s: check the legs' targets and the guest's I/O",
					name, d.Name, n, time.Duration(secs*float64(time.Second)).Round(time.Second))
			}
		}
	}
}

func (f Facts) verifyLeg(g *configs.Guest, d configs.Disk, node string, rec ledger.Record, running []string, add addFunc) {
	leg := fmt.Sprintf("%s's leg of %s on %s", g.Name, d.Name, node)
	l := f.legRow(rec, running, g.Name, d.Name, node)
	switch l.State {
	case LegStale:
		sev, more := SeverityError, "it is wiped and resynced in full when the guest runs"
		if l.Progress > 0 {
			sev, more = SeverityWarning, fmt.Sprintf("it is being resynced (%d%%)", int(l.Progress*100))
		}
		add(sev, CodeLegStale, g.Name, node, "%s is stale since epoch %d (it may hold another runner's writes): %s", leg, l.StaleEpoch, more)
	case LegDegraded:
		add(SeverityError, CodeLegDegraded, g.Name, node, "%s is out of the array: the disk has one copy", leg)
	case LegFailed:
		add(SeverityError, CodeLegFailed, g.Name, node, "%s failed an fdatasync (%s): targetd fails every write to it; fix the device, restart mhcodi-targetd on %s and have the leg resynced in full", leg, l.SyncError, node)
	case LegResyncing:
		add(SeverityWarning, CodeLegDegraded, g.Name, node, "%s is being resynced (%d%%): the disk has one current copy until it ends", leg, int(l.Progress*100))
	case LegMissing:
		add(SeverityError, CodeLegMissing, g.Name, node, "%s is missing: %s", leg,
			ifElse(len(running) > 0, "the guest has no device for it", node+" does not export it"))
	case LegDown:
		if len(running) > 0 {
			add(SeverityError, CodeLegMissing, g.Name, node, "%s is out of reach: %s does not answer", leg, node)
		}
	}
	if !f.up(node) {
		return
	}
	e, ok := f.export(node, g.Name, d.Name)
	if !ok {
		if l.State != LegMissing || len(running) > 0 {
			add(SeverityError, CodeExportMissing, g.Name, node, "%s does not export %s (mhcodi volume create --node %s, and mhcodi-targetd)", node, leg, node)
		}
		return
	}
	switch {
	case e.Owner != "" && rec.Owner != "" && (e.Owner != rec.Owner || e.Epoch != rec.Epoch):
		add(SeverityError, CodeExportFence, g.Name, node, "%s's export of %s/%s accepts %s at epoch %d, but the ledger gives %s to %s at epoch %d",
			node, g.Name, d.Name, e.Owner, e.Epoch, g.Name, rec.Owner, rec.Epoch)
	case e.Owner == "" && len(running) > 0:
		add(SeverityWarning, CodeExportUnfenced, g.Name, node, "%s's export of %s/%s is not fenced: any initiator may write it", node, g.Name, d.Name)
	}
	for _, r := range running {
		if r != node && e.Sessions == 0 && f.up(r) {
			add(SeverityError, CodeImportMissing, g.Name, r, "%s runs %s but has no session to its leg of %s on %s", r, g.Name, d.Name, node)
		}
	}
}

// verifyNPlusOne checks, for every storage node, that the guests it owns
// and that should run would fit, with their memory, on the other nodes
// that hold their legs (Ganeti's ENODEN1).
func (f Facts) verifyNPlusOne(add addFunc) {
	for _, n := range f.Cfg.Nodes {
		if n.Role != configs.RoleStorage {
			continue
		}
		need := map[string]uint64{}
		names := map[string][]string{}
		var nowhere []string
		for i := range f.Cfg.Guests {
			g := &f.Cfg.Guests[i]
			rec, _ := f.record(g.Name)
			if rec.Owner != n.Name || rec.Desired != ledger.DesiredRunning {
				continue
			}
			to, err := f.bestDest(g, n.Name, need)
			if err != nil {
				nowhere = append(nowhere, g.Name)
				continue
			}
			need[to] += memMiB(g)
			names[to] = append(names[to], g.Name)
		}
		for _, to := range sortedKeys(need) {
			nv, _ := f.node(to)
			if need[to] > nv.Status.MemoryFreeMiB {
				add(SeverityError, CodeNPlusOne, "", n.Name, "if %s fails, %s needs %d MiB for %s but has %d MiB free",
					n.Name, to, need[to], andList(names[to]), nv.Status.MemoryFreeMiB)
			}
		}
		if len(nowhere) > 0 && f.up(n.Name) {
			add(SeverityError, CodeNPlusOne, "", n.Name, "if %s fails, %s %s nowhere to go: no other node that answers holds a leg of every disk",
				n.Name, andList(nowhere), ifElse(len(nowhere) == 1, "has", "have"))
		}
	}
}

// FormatFindings is one line per finding, for logs.
func FormatFindings(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "%s %s: %s\n", f.Severity, f.Code, f.Message)
	}
	return b.String()
}
