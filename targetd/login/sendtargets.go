package login

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/mhcodi/mhcodi/iscsi/text"
)

// Portal is one network portal of a target: Address is "host:port" with an
// IPv6 host in brackets ("[2001:db8::1]:3260"), Tag the target portal group
// tag.
type Portal struct {
	Address string
	Tag     uint16
}

// TargetInfo is a target as reported to SendTargets.
type TargetInfo struct {
	Name    string
	Portals []Portal
}

// SendTargets answers a SendTargets=value Text Request (RFC 7143 §13.3 and
// Appendix C) with TargetName and TargetAddress=<address>,<tag> pairs.
// targets are the targets the caller allows this initiator to see, after
// its ACL filtering:
//
//   - "All" (discovery sessions) reports every target given;
//   - an iSCSI name reports that target only, if it is among them (names
//     compare case-insensitively);
//   - an empty value (normal sessions: "the target of this session")
//     reports every target given, so the caller passes only the session's.
//
// An empty result means no target matched; the Text Response then carries
// no data.
func SendTargets(value string, targets []TargetInfo) []text.KV {
	var out []text.KV
	for _, t := range targets {
		if value != "All" && value != "" && !strings.EqualFold(value, t.Name) {
			continue
		}
		out = append(out, text.KV{Key: text.KeyTargetName, Value: t.Name})
		for _, p := range t.Portals {
			out = append(out, text.KV{Key: text.KeyTargetAddress, Value: p.Address + "," + strconv.Itoa(int(p.Tag))})
		}
	}
	return out
}

// ParseSendTargets parses a SendTargets response (the initiator side, and
// tests): TargetName starts a target, the TargetAddress pairs after it are
// its portals.
func ParseSendTargets(data []byte) ([]TargetInfo, error) {
	kvs, err := text.ParseTextRepeats(data)
	if err != nil {
		return nil, fmt.Errorf("login: SendTargets response: %w", err)
	}
	var out []TargetInfo
	for _, kv := range kvs {
		switch kv.Key {
		case text.KeyTargetName:
			out = append(out, TargetInfo{Name: kv.Value})
		case text.KeyTargetAddress:
			if len(out) == 0 {
				return nil, fmt.Errorf("login: SendTargets response: TargetAddress %q before any TargetName", kv.Value)
			}
			i := strings.LastIndexByte(kv.Value, ',')
			if i < 0 {
				return nil, fmt.Errorf("login: SendTargets response: TargetAddress %q has no portal group tag", kv.Value)
			}
			tag, err := strconv.ParseUint(kv.Value[i+1:], 10, 16)
			if err != nil {
				return nil, fmt.Errorf("login: SendTargets response: TargetAddress %q: bad portal group tag: %w", kv.Value, err)
			}
			last := &out[len(out)-1]
			last.Portals = append(last.Portals, Portal{Address: kv.Value[:i], Tag: uint16(tag)})
		}
	}
	return out, nil
}
