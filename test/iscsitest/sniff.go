package iscsitest

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
)

// LoginSniffer is a loopback TCP relay in front of a target that records
// the text keys of every login exchange passing through it (Login Request
// and Login Response PDUs, which are never digested or encrypted). It
// answers "what did the two sides actually negotiate?" — for example
// whether a HeaderDigest=CRC32C offer was accepted — without trusting
// either side's logs. Point the client at Portal() with the same IQN.
type LoginSniffer struct {
	ln     net.Listener
	target string
	log    *slog.Logger

	mu    sync.Mutex
	keys  []LoginKey
	conns map[net.Conn]struct{} // open relayed connections, both ends
	wg    sync.WaitGroup
	stop  onceErr
}

// LoginKey is one key=value pair seen in a login PDU.
type LoginKey struct {
	FromTarget bool // a Login Response; false for a Login Request
	Key, Value string
}

// StartLoginSniffer relays a free port of 127.0.0.1 to target (a loopback
// portal). Close it.
func StartLoginSniffer(target string, log *slog.Logger) (*LoginSniffer, error) {
	if err := checkLoopback(target); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("login sniffer: %w", err)
	}
	s := &LoginSniffer{ln: ln, target: target, log: log, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Portal is where clients connect instead of the target.
func (s *LoginSniffer) Portal() string { return s.ln.Addr().String() }

// Keys is every login key seen so far, in order.
func (s *LoginSniffer) Keys() []LoginKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]LoginKey(nil), s.keys...)
}

// Answer is the last value the target sent for key ("" if never).
func (s *LoginSniffer) Answer(key string) string { return s.last(key, true) }

// Offer is the last value the initiator sent for key ("" if never).
func (s *LoginSniffer) Offer(key string) string { return s.last(key, false) }

func (s *LoginSniffer) last(key string, fromTarget bool) string {
	v := ""
	for _, k := range s.Keys() {
		if k.Key == key && k.FromTarget == fromTarget {
			v = k.Value
		}
	}
	return v
}

// Close stops accepting, cuts relayed connections and waits for them.
func (s *LoginSniffer) Close() error {
	return s.stop.do(func() error {
		err := s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		return err
	})
}

func (s *LoginSniffer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		t, err := net.Dial("tcp4", s.target)
		if err != nil {
			s.log.Warn("login sniffer: dial target", "target", s.target, "err", err)
			_ = c.Close()
			continue
		}
		s.mu.Lock()
		s.conns[c], s.conns[t] = struct{}{}, struct{}{}
		s.mu.Unlock()
		s.wg.Add(2)
		go s.relay(c, t, false)
		go s.relay(t, c, true)
	}
}

// relay copies src to dst, decoding PDUs until the login phase ends in
// this direction, then plainly. It closes both ends when done, which ends
// the other direction too.
func (s *LoginSniffer) relay(src, dst net.Conn, fromTarget bool) {
	defer s.wg.Done()
	defer func() {
		_ = src.Close()
		_ = dst.Close()
		s.mu.Lock()
		delete(s.conns, src)
		delete(s.conns, dst)
		s.mu.Unlock()
	}()
	for {
		done, err := s.loginPDU(src, dst, fromTarget)
		if err != nil {
			return
		}
		if done {
			break
		}
	}
	_, _ = io.Copy(dst, src)
}

// Login opcodes (RFC 7143 §11.12, §11.13) and the flags of byte 1.
const (
	opLoginReq  = 0x03
	opLoginResp = 0x23
	flagTransit = 0x80
	stageFFP    = 3 // NSG: full feature phase
)

// loginPDU relays one PDU. It reports done once a PDU leaves the login
// phase: a login PDU moving to full feature phase, or any other PDU.
// Digests can only follow the last login PDU, so the framing read here is
// never digested.
func (s *LoginSniffer) loginPDU(src, dst net.Conn, fromTarget bool) (bool, error) {
	var bhs [48]byte
	if _, err := io.ReadFull(src, bhs[:]); err != nil {
		return false, err
	}
	op := bhs[0] & 0x3f
	ahs := int(bhs[4]) * 4
	dlen := int(binary.BigEndian.Uint32(bhs[4:8]) & 0xffffff)
	body := make([]byte, ahs+(dlen+3)&^3)
	if _, err := io.ReadFull(src, body); err != nil {
		return false, err
	}
	if _, err := dst.Write(append(bhs[:], body...)); err != nil {
		return false, err
	}
	if op != opLoginReq && op != opLoginResp {
		return true, nil
	}
	s.record(fromTarget, body[ahs:ahs+dlen])
	return bhs[1]&flagTransit != 0 && bhs[1]&0x3 == stageFFP, nil
}

func (s *LoginSniffer) record(fromTarget bool, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, kv := range strings.Split(string(data), "\x00") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		s.keys = append(s.keys, LoginKey{FromTarget: fromTarget, Key: k, Value: v})
	}
}

// RequireAnswer is Answer, with an error naming what was seen when the
// target never sent key.
func (s *LoginSniffer) RequireAnswer(key string) (string, error) {
	if v := s.Answer(key); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("the target sent no %s in any login response; keys seen: %v", key, s.Keys())
}
