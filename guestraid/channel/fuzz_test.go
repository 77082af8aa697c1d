package channel

import (
	"testing"
)

// FuzzDecode feeds arbitrary lines to the decoder both ends use: it must
// return a message or an error, never panic, and a decoded host message
// either validates or says why not.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"type":"host","guest":"demo","node":"node-a","epoch":3,"disks":[{"name":"root","legs":[{"node":"node-a","serial":"MHC0123456789ABCDEF0","local":true}]}]}`))
	f.Add([]byte(`{"type":"check","disk":"root"}`))
	f.Add([]byte(`{"type":"state","disk":"root","legs":[{"serial":"x","state":"in_sync","flags":["failfast"]}]}`))
	f.Add([]byte(`{"type":"event","event":"readd","dirty_bytes":-1}`))
	f.Add([]byte(`{"type":1}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, line []byte) {
		v, err := Decode(line)
		if err != nil {
			return
		}
		if h, ok := v.(*Host); ok {
			_ = h.Validate()
		}
	})
}
