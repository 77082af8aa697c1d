package scsi

import "maps"

// luState is the part of an LU's state that every command must consult:
// the nexuses that have talked to the LU, pending unit attentions,
// persistent reservations and the SPC-2 reservation.
//
// It is immutable once published: writers (rare: a new nexus, a PR OUT, a
// reset, a unit attention reported) copy it under LU.mu and publish the
// copy through an atomic pointer, so that READ and WRITE check it without
// any lock (see LU.gate).
type luState struct {
	// known holds every nexus that sent a command to the LU; unit
	// attentions after a reset or a resize go to them.
	known map[Nexus]struct{}
	// ua holds the pending unit attentions of each nexus, oldest first.
	// Nexuses without one have no entry.
	ua map[Nexus][]asc

	// Persistent reservations (SPC-4 5.13).
	regs       map[Nexus]uint64 // registered nexus -> reservation key
	res        *prReservation   // nil: no persistent reservation
	generation uint32           // PRGENERATION

	// spc2 is the holder of a RESERVE(6)/RESERVE(10) reservation.
	spc2 *Nexus
}

func newLUState() *luState {
	return &luState{
		known: map[Nexus]struct{}{},
		ua:    map[Nexus][]asc{},
		regs:  map[Nexus]uint64{},
	}
}

// clone returns a deep enough copy for a writer to modify.
func (s *luState) clone() *luState {
	c := *s
	c.known = maps.Clone(s.known)
	c.ua = make(map[Nexus][]asc, len(s.ua))
	for n, q := range s.ua {
		c.ua[n] = append([]asc(nil), q...)
	}
	c.regs = maps.Clone(s.regs)
	if s.res != nil {
		r := *s.res
		c.res = &r
	}
	if s.spc2 != nil {
		n := *s.spc2
		c.spc2 = &n
	}
	return &c
}

// quiet reports whether a command from n can skip every unit attention and
// reservation check: the common case, checked without locks.
func (s *luState) quiet(n Nexus) bool {
	if len(s.ua) != 0 || s.res != nil || s.spc2 != nil {
		return false
	}
	_, ok := s.known[n]
	return ok
}

// maxUAs bounds the queue of one nexus; SAM-5 lets a device server drop
// older unit attentions when it runs out of room.
const maxUAs = 8

// addUA queues code for n unless already pending.
func (s *luState) addUA(n Nexus, code asc) {
	q := s.ua[n]
	for _, c := range q {
		if c == code {
			return
		}
	}
	if len(q) >= maxUAs {
		q = q[1:]
	}
	s.ua[n] = append(q, code)
}

// addUAAll queues code for every known nexus except skip (nil: none).
func (s *luState) addUAAll(code asc, skip *Nexus) {
	for n := range s.known {
		if skip != nil && n == *skip {
			continue
		}
		s.addUA(n, code)
	}
}

// popUA removes and returns the oldest unit attention of n.
func (s *luState) popUA(n Nexus) (asc, bool) {
	q := s.ua[n]
	if len(q) == 0 {
		return 0, false
	}
	if len(q) == 1 {
		delete(s.ua, n)
	} else {
		s.ua[n] = q[1:]
	}
	return q[0], true
}

// clearUA drops a pending unit attention code of n.
func (s *luState) clearUA(n Nexus, code asc) {
	q := s.ua[n]
	out := q[:0]
	for _, c := range q {
		if c != code {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		delete(s.ua, n)
	} else {
		s.ua[n] = out
	}
}

// mutate runs f on a private copy of the state under lu.mu and publishes
// it when f returns true.
func (lu *LU) mutate(f func(s *luState) bool) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	s := lu.state.Load().clone()
	if f(s) {
		lu.state.Store(s)
	}
}
