package login

import (
	"crypto/md5"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Credentials are a CHAP user name and secret.
type Credentials struct{ User, Secret string }

// CHAP parameters.
const (
	// chapMD5 is the only CHAP algorithm RFC 7143 requires (§12.1.3); the
	// one open-iscsi and libiscsi use.
	chapMD5 = 5
	// chapChallengeLen is the length of our challenges: at least 16 bytes
	// are needed to resist precomputation; 32 is what libiscsi sends for
	// its own and what every initiator accepts (the limit is 1024).
	chapChallengeLen = 32
	// MinCHAPSecret is the shortest secret accepted: RFC 7143 §9.2.1 asks
	// for at least 96 random bits (12 bytes) when CHAP is not protected by
	// IPsec, which is our case.
	MinCHAPSecret = 12
	// maxCHAPSecret keeps secrets within what initiators store (open-iscsi
	// and libiscsi keep 255 bytes at most).
	maxCHAPSecret = 255
)

// chapState is where a CHAP exchange stands (§12.1.3).
type chapState uint8

const (
	chapStart         chapState = iota // AuthMethod not yet agreed
	chapWantAlgorithm                  // AuthMethod=CHAP agreed, waiting for CHAP_A
	chapWantResponse                   // challenge sent, waiting for CHAP_N/CHAP_R
	chapDone                           // initiator authenticated
)

// chapServer is the target side of one CHAP exchange.
type chapServer struct {
	creds  Credentials
	mutual *Credentials // nil: mutual CHAP refused
	state  chapState
	id     byte
	chall  []byte
	// mutualDone records that the initiator challenged us and we answered.
	mutualDone bool
}

// checkCredentials validates the credentials Authorize returned: a fault
// there is the target's configuration error and fails the login closed.
func checkCredentials(c, mutual *Credentials) error {
	check := func(what string, c *Credentials) error {
		if c.User == "" {
			return fmt.Errorf("%s CHAP user name is empty", what)
		}
		if len(c.User) > maxSimpleValue {
			return fmt.Errorf("%s CHAP user name is longer than %d bytes", what, maxSimpleValue)
		}
		if len(c.Secret) < MinCHAPSecret {
			return fmt.Errorf("%s CHAP secret for user %q is %d bytes; at least %d are required (RFC 7143 §9.2.1)",
				what, c.User, len(c.Secret), MinCHAPSecret)
		}
		if len(c.Secret) > maxCHAPSecret {
			return fmt.Errorf("%s CHAP secret for user %q is longer than %d bytes", what, c.User, maxCHAPSecret)
		}
		return nil
	}
	if err := check("initiator", c); err != nil {
		return err
	}
	if mutual == nil {
		return nil
	}
	if err := check("mutual (target)", mutual); err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(c.Secret), []byte(mutual.Secret)) == 1 {
		// §9.2.1: a secret used to authenticate initiators must never
		// authenticate targets, or a reflected challenge reveals it.
		return errors.New("the initiator and mutual CHAP secrets are the same; they must differ (RFC 7143 §9.2.1)")
	}
	return nil
}

// chapResponse is the RFC 1994 MD5 response: MD5(identifier || secret ||
// challenge).
func chapResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// algorithm answers CHAP_A: picks MD5 if the initiator lists it and sends
// our identifier and challenge.
func (c *chapServer) algorithm(value string, rand io.Reader) ([]KV, *Error) {
	ok := false
	for _, a := range splitList(value) {
		if n, err := parseNumber(a); err == nil && n == chapMD5 {
			ok = true
			break
		}
	}
	if !ok {
		return nil, loginError(StatusAuthFailed, "initiator offers CHAP_A=%s; only 5 (MD5) is supported", truncate(value))
	}
	buf := make([]byte, 1+chapChallengeLen)
	if _, err := io.ReadFull(rand, buf); err != nil {
		return nil, loginError(StatusTargetError, "reading random bytes for the CHAP challenge: %w", err)
	}
	c.id, c.chall = buf[0], buf[1:]
	c.state = chapWantResponse
	return []KV{
		{KeyCHAPA, strconv.Itoa(chapMD5)},
		{KeyCHAPI, strconv.Itoa(int(c.id))},
		{KeyCHAPC, encodeHex(c.chall)},
	}, nil
}

// verify checks the initiator's CHAP_N/CHAP_R and, when it challenges us
// back with CHAP_I/CHAP_C, answers as the mutual credentials.
func (c *chapServer) verify(keys map[string]string) ([]KV, *Error) {
	name, hasN := keys[KeyCHAPN]
	resp, hasR := keys[KeyCHAPR]
	if !hasN || !hasR {
		return nil, loginError(StatusAuthFailed, "CHAP_N and CHAP_R must be sent together")
	}
	got, err := decodeBinary(resp)
	if err != nil {
		return nil, loginError(StatusAuthFailed, "CHAP_R: %w", err)
	}
	want := chapResponse(c.id, c.creds.Secret, c.chall)
	// Compare both in constant time and only then decide, so timing says
	// nothing about which one was wrong.
	userOK := subtle.ConstantTimeCompare([]byte(name), []byte(c.creds.User))
	respOK := subtle.ConstantTimeCompare(got, want)
	if userOK&respOK != 1 {
		return nil, loginError(StatusAuthFailed, "CHAP response of user %q does not verify", truncate(name))
	}

	mid, hasI := keys[KeyCHAPI]
	mchall, hasC := keys[KeyCHAPC]
	if !hasI && !hasC {
		c.state = chapDone
		return nil, nil
	}
	if !hasI || !hasC {
		return nil, loginError(StatusAuthFailed, "mutual CHAP needs both CHAP_I and CHAP_C")
	}
	if c.mutual == nil {
		return nil, loginError(StatusAuthFailed, "initiator asks for mutual CHAP, which is not configured for it")
	}
	id, err := parseNumber(mid)
	if err != nil || id > 255 {
		return nil, loginError(StatusAuthFailed, "mutual CHAP_I %q is not a number from 0 to 255", truncate(mid))
	}
	ch, err := decodeBinary(mchall)
	if err != nil {
		return nil, loginError(StatusAuthFailed, "mutual CHAP_C: %w", err)
	}
	if len(ch) > maxBinaryLen {
		return nil, loginError(StatusAuthFailed, "mutual CHAP_C is %d bytes, more than %d", len(ch), maxBinaryLen)
	}
	if subtle.ConstantTimeCompare(ch, c.chall) == 1 {
		// §12.1.3: a challenge reflected back would make us compute the
		// answer an attacker needs.
		return nil, loginError(StatusAuthFailed, "initiator's mutual CHAP challenge repeats the target's challenge (reflection)")
	}
	c.state = chapDone
	c.mutualDone = true
	return []KV{
		{KeyCHAPN, c.mutual.User},
		{KeyCHAPR, encodeHex(chapResponse(byte(id), c.mutual.Secret, ch))},
	}, nil
}
