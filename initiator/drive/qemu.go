package drive

import (
	"strconv"
	"strings"
)

// opt is one -blockdev option. Keys with dots are nested objects in QMP
// ("cache.direct" is {"cache": {"direct": …}}).
type opt struct {
	key string
	val any // string, int or bool
}

// options lists the Spec's -blockdev options in a fixed order, so the
// command line is the same for the same leg on every host and run.
func (s Spec) options() []opt {
	o := []opt{{"driver", s.Driver}, {"node-name", s.NodeName}}
	switch s.Driver {
	case DriverNBD:
		o = append(o,
			opt{"server.type", "unix"},
			opt{"server.path", s.Socket},
			opt{"export", s.Target},
		)
		if s.TimeoutSec > 0 {
			// Should the bridge itself restart, requests wait this long
			// for it, then fail (and md drops the leg).
			o = append(o, opt{"reconnect-delay", s.TimeoutSec})
		}
	case DriverISCSI:
		o = append(o,
			opt{"transport", "tcp"},
			opt{"portal", s.Portal.String()},
			opt{"target", s.Target},
			opt{"lun", LUN},
			opt{"initiator-name", s.Initiator},
			opt{"header-digest", HeaderDigest},
		)
		if s.TimeoutSec > 0 {
			o = append(o, opt{"timeout", s.TimeoutSec})
		}
		if s.Secret != nil {
			o = append(o, opt{"user", s.User}, opt{"password-secret", s.Secret.ID})
		}
	default:
		o = append(o, opt{"filename", s.Filename}, opt{"cache.direct", s.CacheDirect}, opt{"aio", s.AIO})
	}
	// Legs are thin (sparse files, targetd's UNMAP punches holes), so the
	// guest's discards are passed down instead of ignored.
	return append(o, opt{"discard", "unmap"})
}

// escape doubles commas: QEMU's option syntax reads ",," as a literal
// comma inside a value.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func keyval(o []opt) string {
	parts := make([]string, len(o))
	for i, kv := range o {
		var v string
		switch x := kv.val.(type) {
		case string:
			v = escape(x)
		case int:
			v = strconv.Itoa(x)
		case bool:
			v = map[bool]string{true: "on", false: "off"}[x]
		}
		parts[i] = kv.key + "=" + v
	}
	return strings.Join(parts, ",")
}

// Blockdev is the value of the -blockdev option.
func (s Spec) Blockdev() string { return keyval(s.options()) }

// BlockdevJSON is the argument of QMP blockdev-add.
func (s Spec) BlockdevJSON() map[string]any {
	out := map[string]any{}
	for _, kv := range s.options() {
		m := out
		parts := strings.Split(kv.key, ".")
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = kv.val
	}
	return out
}

// SecretObject is the value of the -object option that defines the CHAP
// secret, or "" without CHAP. It names the file, never the secret.
func (s Spec) SecretObject() string {
	if s.Secret == nil {
		return ""
	}
	return keyval([]opt{{"qom-type", "secret"}, {"id", s.Secret.ID}, {"file", s.Secret.File}, {"format", "raw"}})[len("qom-type="):]
}

// SecretObjectJSON is the argument of QMP object-add for the CHAP secret,
// or nil without CHAP.
func (s Spec) SecretObjectJSON() map[string]any {
	if s.Secret == nil {
		return nil
	}
	return map[string]any{"qom-type": "secret", "id": s.Secret.ID, "file": s.Secret.File, "format": "raw"}
}

// Args are the leg's QEMU arguments: the secret object, if any, then the
// block node. The virtio-blk device that uses the node is the caller's
// (DeviceArg), since only it knows the bus.
func (s Spec) Args() []string {
	var a []string
	if obj := s.SecretObject(); obj != "" {
		a = append(a, "-object", obj)
	}
	return append(a, "-blockdev", s.Blockdev())
}

// CommandLine is Args as one shell-safe string, for logs and humans.
func (s Spec) CommandLine() string {
	a := s.Args()
	for i, x := range a {
		a[i] = shellQuote(x)
	}
	return strings.Join(a, " ")
}

// DeviceArg is the value of the -device option for the leg's virtio-blk
// disk with QEMU id id (vda, vdb…).
func (s Spec) DeviceArg(id string) string {
	return keyval([]opt{{"driver", "virtio-blk-pci"}, {"id", id}, {"drive", s.NodeName}, {"serial", s.Serial}})[len("driver="):]
}

// shellQuote quotes s for a POSIX shell unless it is plainly safe.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=,.:/@+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
