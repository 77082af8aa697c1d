package configs

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/mhcodi/mhcodi/naming"
)

// VLAN IDs a network may use (802.1Q: 0 and 4095 are reserved).
const (
	MinVLAN = 1
	MaxVLAN = 4094
)

// NetworkNames lists the service networks by name, sorted.
func (c *Config) NetworkNames() []string {
	out := make([]string, 0, len(c.Networks))
	for n := range c.Networks {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// BridgeFor is the bridge of network on node: the node's own, or the
// network's. "" when neither names one (or the network is unknown).
func (c *Config) BridgeFor(node, network string) string {
	if n, ok := c.Node(node); ok {
		if nn, ok := n.Networks[network]; ok && nn.Bridge != "" {
			return nn.Bridge
		}
	}
	return c.Networks[network].Bridge
}

// NICInfo is one NIC of one guest with what is derived for it.
type NICInfo struct {
	Guest   string `json:"guest"`
	Name    string `json:"name"`
	Index   int    `json:"index"`
	Network string `json:"network"`
	VLAN    int    `json:"vlan,omitempty"`
	MAC     string `json:"mac"`
	// Derived is false when the cluster file gave the MAC.
	Derived bool   `json:"derived"`
	Address string `json:"address,omitempty"`
	Tap     string `json:"tap"`
	// Bridges is the network's bridge on each storage node.
	Bridges map[string]string `json:"bridges"`
}

// NICs lists every NIC of guest (every guest's, in file order, when guest
// is "").
func (c *Config) NICs(guest string) []NICInfo {
	var out []NICInfo
	for _, g := range c.Guests {
		if guest != "" && g.Name != guest {
			continue
		}
		for i, n := range g.NICs {
			ni := NICInfo{Guest: g.Name, Name: n.Name, Index: i, Network: n.Network, VLAN: c.Networks[n.Network].VLAN,
				MAC: n.MAC, Address: n.Address, Tap: naming.TapName(g.Name, n.Name), Bridges: map[string]string{}}
			if ni.MAC == "" {
				ni.MAC, ni.Derived = naming.MAC(c.Cluster.Name, g.Name, n.Name).String(), true
			} else if m, err := naming.ValidMAC(n.MAC); err == nil {
				ni.MAC = m.String()
			}
			for _, node := range c.Nodes {
				if node.Role == RoleStorage {
					ni.Bridges[node.Name] = c.BridgeFor(node.Name, n.Network)
				}
			}
			out = append(out, ni)
		}
	}
	return out
}

// validateNetworks checks the networks section and the nodes' own
// bridges. It runs after validateNodes.
func (c *Config) validateNetworks(v *validator) {
	for _, name := range c.NetworkNames() {
		nw := c.Networks[name]
		key := "networks." + name
		if err := naming.ValidLabel(name); err != nil {
			v.addf(key, "network name %v", err)
		}
		if nw.VLAN != 0 && (nw.VLAN < MinVLAN || nw.VLAN > MaxVLAN) {
			v.addf(key+".vlan", "%d is outside %d–%d (802.1Q VLAN IDs; leave it out for an untagged network)", nw.VLAN, MinVLAN, MaxVLAN)
		}
		if nw.Bridge != "" {
			if err := naming.ValidIfName(nw.Bridge); err != nil {
				v.addf(key+".bridge", "%v", err)
			}
			continue
		}
		var missing []string
		for _, n := range c.Nodes {
			if n.Role == RoleStorage && n.Networks[name].Bridge == "" {
				missing = append(missing, n.Name)
			}
		}
		if len(missing) > 0 {
			v.addf(key+".bridge", "missing: name the network's bridge here, or on every storage node (nodes[].networks.%s.bridge); %s name%s none", name, strings.Join(missing, ", "), ifS(len(missing) == 1, "s", ""))
		}
	}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		key := fmt.Sprintf("nodes[%d]", i)
		if n.SANBridge != "" {
			if err := naming.ValidIfName(n.SANBridge); err != nil {
				v.addf(key+".san_bridge", "%v", err)
			}
		}
		if n.Role == RoleWitness {
			if n.SANBridge != "" {
				v.addf(key+".san_bridge", "a witness has no SAN; remove the key")
			}
			if len(n.Networks) > 0 {
				v.addf(key+".networks", "a witness runs no guests, so it has no service networks; remove the section")
			}
			continue
		}
		names := make([]string, 0, len(n.Networks))
		for nw := range n.Networks {
			names = append(names, nw)
		}
		sort.Strings(names)
		for _, nw := range names {
			nkey := key + ".networks." + nw
			if _, ok := c.Networks[nw]; !ok {
				v.addf(nkey, "network %q is not defined in networks (%s)", nw, orNone(c.NetworkNames()))
				continue
			}
			if b := n.Networks[nw].Bridge; b == "" {
				v.addf(nkey+".bridge", "missing: name this node's bridge of %s, or remove the section to use networks.%s.bridge", nw, nw)
			} else if err := naming.ValidIfName(b); err != nil {
				v.addf(nkey+".bridge", "%v", err)
			}
		}
		if n.SANBridge == "" {
			continue
		}
		// A service network on the SAN's bridge would put guests on
		// the segment that carries the iSCSI traffic.
		for _, nw := range c.NetworkNames() {
			if c.BridgeFor(n.Name, nw) != n.SANBridge {
				continue
			}
			k := "networks." + nw + ".bridge"
			if _, own := n.Networks[nw]; own {
				k = key + ".networks." + nw + ".bridge"
			}
			v.addf(k, "bridge %q is %s's SAN bridge (%s.san_bridge); a service network needs a bridge of its own, so guests stay off the SAN", n.SANBridge, n.Name, key)
		}
	}
}

// validateNICs checks one guest's NICs and records their MACs (and
// addresses) in macs (addrs), which span the whole cluster.
func (c *Config) validateNICs(v *validator, key string, g *Guest, macs, addrs map[string]string) {
	names := map[string]int{}
	for j := range g.NICs {
		n := &g.NICs[j]
		nkey := fmt.Sprintf("%s.nics[%d]", key, j)
		if n.Network == "" {
			v.addf(nkey+".network", "missing: name the service network this NIC is on (%s)", orNone(c.NetworkNames()))
		} else if _, ok := c.Networks[n.Network]; !ok {
			v.addf(nkey+".network", "network %q is not defined in networks (%s)", n.Network, orNone(c.NetworkNames()))
		}
		if n.Name == "" {
			n.Name = n.Network
		}
		nameOK := false
		if n.Name != "" {
			if err := naming.ValidLabel(n.Name); err != nil {
				v.addf(nkey+".name", "NIC name %v", err)
			} else if i, dup := names[n.Name]; dup {
				v.addf(nkey+".name", "NIC name %q is already used by %s.nics[%d]; name NICs on one network apart with name:", n.Name, key, i)
			} else {
				names[n.Name], nameOK = j, true
			}
		}
		mac := ""
		if n.MAC != "" {
			m, err := naming.ValidMAC(n.MAC)
			if err != nil {
				v.addf(nkey+".mac", "%v", err)
			} else {
				mac = m.String()
			}
		} else if nameOK {
			mac = naming.MAC(c.Cluster.Name, g.Name, n.Name).String()
		}
		if mac != "" {
			if other, dup := macs[mac]; dup {
				v.addf(nkey+".mac", "MAC %s is also the MAC of %s; two NICs on one network segment must not share a MAC", mac, other)
			} else {
				macs[mac] = nkey
			}
		}
		if n.Address != "" {
			p, err := netip.ParsePrefix(n.Address)
			switch {
			case err != nil:
				v.addf(nkey+".address", "%q is not an address with its prefix length (e.g. 192.0.2.10/24)", n.Address)
			case p.Addr() == p.Masked().Addr() && p.Bits() < p.Addr().BitLen()-1:
				v.addf(nkey+".address", "%s is the network's own address, not a host's", n.Address)
			default:
				a := p.Addr().String()
				if other, dup := addrs[a]; dup {
					v.addf(nkey+".address", "%s is also the address of %s", a, other)
				}
				addrs[a] = nkey
			}
		}
	}
}

func ifS(c bool, a, b string) string {
	if c {
		return a
	}
	return b
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none are"
	}
	return "defined: " + strings.Join(names, ", ")
}
