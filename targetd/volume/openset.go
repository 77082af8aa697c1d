package volume

import "sync"

// openSet counts the open Volumes of one backend by name, so Remove can
// refuse a volume this process still serves with a clear message before it
// asks the kernel or lvm2.
type openSet struct {
	mu sync.Mutex
	n  map[string]int
}

func (s *openSet) add(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil {
		s.n = map[string]int{}
	}
	s.n[name]++
}

func (s *openSet) done(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[name]--; s.n[name] <= 0 {
		delete(s.n, name)
	}
}

func (s *openSet) count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[name]
}
