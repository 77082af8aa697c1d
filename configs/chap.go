package configs

import (
	"errors"
	"fmt"
	"os"
	"reflect"

	"github.com/spf13/viper"

	"github.com/mhcodi/mhcodi/naming"
)

// CHAPSecrets is the secrets file named by security.chap_secrets: for every
// node, the secret its initiator answers targets' challenges with, and the
// secret its targets answer mutual challenges with. The CHAP user names are
// the IQNs: a node's initiator IQN one way, the target IQN the other.
//
//	nodes:
//	  node-a:
//	    initiator: "at least 12 characters"
//	    target: "another one, for mutual CHAP"
type CHAPSecrets struct {
	Nodes map[string]NodeSecrets `mapstructure:"nodes"`
}

// NodeSecrets are one node's CHAP secrets.
type NodeSecrets struct {
	Initiator string `mapstructure:"initiator"`
	Target    string `mapstructure:"target"`
}

// MinCHAPSecret is the shortest secret accepted: RFC 7143 §12.1.3 asks for
// at least 96 bits of randomness, 12 bytes.
const MinCHAPSecret = 12

// LoadCHAPSecrets reads the secrets file and checks it against the
// cluster: every storage node has an initiator secret, secrets are long
// enough and distinct, no unknown node or key. The file must not be
// readable by group or others.
func (c *Config) LoadCHAPSecrets() (*CHAPSecrets, error) {
	path := c.Security.CHAPSecrets
	if path == "" {
		return nil, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, &FieldError{File: path, Rule: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, &FieldError{File: path, Rule: fmt.Sprintf("mode %04o lets others read the CHAP secrets; chmod 600 it", fi.Mode().Perm())}
	}
	v := viper.New()
	v.SetConfigFile(path)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		return nil, &FieldError{File: path, Rule: fmt.Sprintf("not valid YAML: %v", err)}
	}
	raw := v.AllSettings()
	errs := Errors{}
	for k, val := range raw {
		if k != "nodes" {
			errs = append(errs, &FieldError{File: path, Key: k, Rule: fmt.Sprintf("unknown key %q; allowed here: nodes", k)})
			continue
		}
		m, ok := val.(map[string]any)
		if !ok {
			errs = append(errs, &FieldError{File: path, Key: k, Rule: "expected a mapping of node names"})
			continue
		}
		for node, ns := range m {
			key := "nodes." + node
			if _, ok := c.Node(node); !ok {
				errs = append(errs, &FieldError{File: path, Key: key, Rule: fmt.Sprintf("node %q is not defined in %s", node, c.Path)})
			}
			for _, ke := range unknownKeys(ns, reflect.TypeFor[NodeSecrets](), key) {
				errs = append(errs, &FieldError{File: path, Key: ke.key, Rule: ke.rule})
			}
		}
	}
	if len(errs) > 0 {
		sortErrors(errs)
		return nil, errs
	}
	var s CHAPSecrets
	if err := v.UnmarshalExact(&s); err != nil {
		return nil, Errors(decodeErrors(path, err, nil))
	}
	seen := map[string]string{}
	check := func(key, secret string, required bool) {
		switch {
		case secret == "" && required:
			errs = append(errs, &FieldError{File: path, Key: key, Rule: "missing"})
		case secret == "":
		case len(secret) < MinCHAPSecret:
			errs = append(errs, &FieldError{File: path, Key: key, Rule: fmt.Sprintf("is %d bytes; CHAP secrets need at least %d (RFC 7143 §12.1.3)", len(secret), MinCHAPSecret)})
		default:
			if other, dup := seen[secret]; dup {
				errs = append(errs, &FieldError{File: path, Key: key, Rule: "is the same secret as " + other + "; every secret must differ, or one side could replay the other's answers"})
			}
			seen[secret] = key
		}
	}
	for _, n := range c.Nodes {
		if n.Role != RoleStorage {
			continue
		}
		ns := s.Nodes[n.Name]
		check("nodes."+n.Name+".initiator", ns.Initiator, true)
		check("nodes."+n.Name+".target", ns.Target, false)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &s, nil
}

// InitiatorCredentials returns the CHAP user and secret a node's initiator
// logs in with.
func (s *CHAPSecrets) InitiatorCredentials(c *Config, node string) (user, secret string, ok bool) {
	ns, ok := s.Nodes[node]
	if !ok || ns.Initiator == "" {
		return "", "", false
	}
	return c.InitiatorIQN(node), ns.Initiator, true
}

// TargetSecret is the secret node's targets answer mutual challenges with,
// "" when it has none (or s is nil: the cluster uses no CHAP).
func (s *CHAPSecrets) TargetSecret(node string) string {
	if s == nil {
		return ""
	}
	return s.Nodes[node].Target
}

// NodeOfInitiator returns the node whose initiator IQN is iqn.
func (c *Config) NodeOfInitiator(iqn string) (string, bool) {
	p, err := naming.ParseIQN(iqn)
	if err != nil || !p.Initiator || p.Prefix != c.Cluster.IQNPrefix || p.Leg.Cluster != c.Cluster.Name {
		return "", false
	}
	if _, ok := c.Node(p.Leg.Node); !ok {
		return "", false
	}
	return p.Leg.Node, true
}
