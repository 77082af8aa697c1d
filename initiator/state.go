package initiator

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// DefaultStateDir is where mhcodi-initiator writes its state file and
// where `mhcodi import status` reads it.
const DefaultStateDir = "/run/mhcodi"

// StatePath is node's state file in dir: initiator-<node>.json.
func StatePath(dir, node string) string {
	return filepath.Join(dir, "initiator-"+node+".json")
}

// StateFile is what mhcodi-initiator publishes after every pass: the
// daemon's identity, when it last looked, and every leg's status. A file
// (not a socket) so that the last known state stays readable when the
// daemon is down; Updated tells how fresh it is.
type StateFile struct {
	Node    string    `json:"node"`
	Backend string    `json:"backend"`
	LinkDir string    `json:"link_dir"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Updated time.Time `json:"updated"`
	// IntervalMS is the time between passes, in milliseconds: a file
	// older than a few intervals comes from a daemon that stopped.
	IntervalMS int64       `json:"interval_ms"`
	Legs       []LegStatus `json:"legs"`
}

// Stale reports whether the file is older than three passes at now.
func (s *StateFile) Stale(now time.Time) bool {
	iv := time.Duration(s.IntervalMS) * time.Millisecond
	if iv <= 0 {
		iv = time.Second
	}
	return now.Sub(s.Updated) > 3*iv+2*time.Second
}

// WriteState writes s to path atomically (temp file and rename), so a
// reader never sees half a file.
func WriteState(path string, s *StateFile) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

// ReadState reads a state file written by WriteState.
func ReadState(path string) (*StateFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading initiator state: %w", err)
	}
	var s StateFile
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("reading initiator state %s: %w", path, err)
	}
	return &s, nil
}
