package initiator

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/naming"
)

// Credentials are one side's CHAP user name and secret.
type Credentials struct {
	User   string
	Secret string
}

// Target is a remote leg as an initiator logs in to it.
type Target struct {
	IQN    string
	Portal netip.AddrPort
	// Initiator is this node's initiator IQN, the one the target's ACL
	// admits.
	Initiator string
	// CHAP is what this initiator answers the target's challenge with;
	// nil when the cluster has no CHAP secrets.
	CHAP *Credentials
	// MutualCHAP is what the target must answer this initiator's
	// challenge with (the owning node's target secret); nil for one-way
	// CHAP.
	MutualCHAP *Credentials
	// ReplacementTimeout is how long the kernel queues I/O for a lost
	// session before failing it, so md drops the leg.
	ReplacementTimeout time.Duration
}

// Want is one leg this node must see, and how.
type Want struct {
	Leg naming.Leg
	// Link is the absolute path of its link (<link_dir>/<guest>/<disk>/<node>);
	// empty for a remote leg the hypervisor reaches by itself.
	Link string
	// Local legs: the LV or file the link points at.
	Local    bool
	Location string
	// Remote legs through a kernel initiator: the target to log in to.
	Target *Target
	// Serial is the leg's VPD 0x80 unit serial; an imported LUN whose
	// serial differs is not linked.
	Serial string
}

// Key names the leg in states, events and the state file:
// <guest>/<disk>/<node>.
func (w Want) Key() string { return w.Leg.String() }

// GuestMayRunOn reports whether g may run on node: a guest runs where one
// of its legs is (its read leg is then local), or on its preferred node.
func GuestMayRunOn(g configs.Guest, node string) bool {
	if g.PreferredNode == node {
		return true
	}
	for _, d := range g.Disks {
		if slices.Contains(d.Legs, node) {
			return true
		}
	}
	return false
}

// Plan lists the legs node must see, in file order: every leg of every
// guest that may run on node. Local legs are linked to their volume;
// remote legs are imported through the kernel (open-iscsi, netlink) or,
// with the qemu backend, left to the hypervisor and not linked. secrets
// may be nil (no CHAP).
func Plan(cfg *configs.Config, node string, secrets *configs.CHAPSecrets) ([]Want, error) {
	if _, ok := cfg.Node(node); !ok {
		return nil, fmt.Errorf("node %q is not in %s", node, cfg.Path)
	}
	linkDir := cfg.Initiator.LinkDir
	if linkDir == "" {
		linkDir = configs.DefaultLinkDir
	}
	rt := cfg.Timeouts.ReplacementTimeout
	if rt <= 0 {
		rt = configs.DefaultReplacementTimeout
	}
	var out []Want
	for _, l := range cfg.Legs() {
		g, _ := cfg.Guest(l.Guest)
		if !GuestMayRunOn(*g, node) {
			continue
		}
		w := Want{Leg: l.Leg, Serial: l.Serial}
		link := filepath.Join(linkDir, l.Guest, l.Disk, l.Node)
		switch {
		case l.Node == node:
			w.Local, w.Location, w.Link = true, l.Location, link
		case cfg.Initiator.Backend == configs.InitiatorQEMU:
			// QEMU's own initiator reaches it; nothing to import.
		default:
			owner, _ := cfg.Node(l.Node)
			if owner.SANAddress.IsZero() {
				return nil, fmt.Errorf("leg %s: node %s has no san_address", l.Leg, l.Node)
			}
			t := &Target{
				IQN:                l.TargetIQN,
				Portal:             owner.SANAddress.AddrPort(configs.DefaultSANPort),
				Initiator:          cfg.InitiatorIQN(node),
				ReplacementTimeout: rt,
			}
			if secrets != nil {
				user, secret, ok := secrets.InitiatorCredentials(cfg, node)
				if !ok {
					return nil, fmt.Errorf("no CHAP initiator secret for node %s in %s", node, cfg.Security.CHAPSecrets)
				}
				t.CHAP = &Credentials{User: user, Secret: secret}
				if ts := secrets.TargetSecret(l.Node); ts != "" {
					// targetd answers a mutual challenge as the target
					// it is, with its node's target secret.
					t.MutualCHAP = &Credentials{User: l.TargetIQN, Secret: ts}
				}
			}
			w.Target, w.Link = t, link
		}
		out = append(out, w)
	}
	return out, nil
}
