package login

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/mhcodi/mhcodi/iscsi/text"
)

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
	creds  text.Credentials
	mutual *text.Credentials // nil: mutual CHAP refused
	state  chapState
	id     byte
	chall  []byte
	// mutualDone records that the initiator challenged us and we answered.
	mutualDone bool
}

// checkCredentials validates the credentials Authorize returned: a fault
// there is the target's configuration error and fails the login closed.
func checkCredentials(c, mutual *text.Credentials) error {
	check := func(what string, c *text.Credentials) error {
		if c.User == "" {
			return fmt.Errorf("%s CHAP user name is empty", what)
		}
		if len(c.User) > text.MaxSimpleValue {
			return fmt.Errorf("%s CHAP user name is longer than %d bytes", what, text.MaxSimpleValue)
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

// algorithm answers CHAP_A: picks MD5 if the initiator lists it and sends
// our identifier and challenge.
func (c *chapServer) algorithm(value string, rand io.Reader) ([]text.KV, *Error) {
	ok := false
	for _, a := range text.SplitList(value) {
		if n, err := text.ParseNumber(a); err == nil && n == chapMD5 {
			ok = true
			break
		}
	}
	if !ok {
		return nil, loginError(text.StatusAuthFailed, "initiator offers CHAP_A=%s; only 5 (MD5) is supported", text.Truncate(value))
	}
	buf := make([]byte, 1+chapChallengeLen)
	if _, err := io.ReadFull(rand, buf); err != nil {
		return nil, loginError(text.StatusTargetError, "reading random bytes for the CHAP challenge: %w", err)
	}
	c.id, c.chall = buf[0], buf[1:]
	c.state = chapWantResponse
	return []text.KV{
		{Key: text.KeyCHAPA, Value: strconv.Itoa(chapMD5)},
		{Key: text.KeyCHAPI, Value: strconv.Itoa(int(c.id))},
		{Key: text.KeyCHAPC, Value: text.EncodeHex(c.chall)},
	}, nil
}

// verify checks the initiator's CHAP_N/CHAP_R and, when it challenges us
// back with CHAP_I/CHAP_C, answers as the mutual credentials.
func (c *chapServer) verify(keys map[string]string) ([]text.KV, *Error) {
	name, hasN := keys[text.KeyCHAPN]
	resp, hasR := keys[text.KeyCHAPR]
	if !hasN || !hasR {
		return nil, loginError(text.StatusAuthFailed, "CHAP_N and CHAP_R must be sent together")
	}
	got, err := text.DecodeBinary(resp)
	if err != nil {
		return nil, loginError(text.StatusAuthFailed, "CHAP_R: %w", err)
	}
	want := text.CHAPResponse(c.id, c.creds.Secret, c.chall)
	// Compare both in constant time and only then decide, so timing says
	// nothing about which one was wrong.
	userOK := subtle.ConstantTimeCompare([]byte(name), []byte(c.creds.User))
	respOK := subtle.ConstantTimeCompare(got, want)
	if userOK&respOK != 1 {
		return nil, loginError(text.StatusAuthFailed, "CHAP response of user %q does not verify", text.Truncate(name))
	}

	mid, hasI := keys[text.KeyCHAPI]
	mchall, hasC := keys[text.KeyCHAPC]
	if !hasI && !hasC {
		c.state = chapDone
		return nil, nil
	}
	if !hasI || !hasC {
		return nil, loginError(text.StatusAuthFailed, "mutual CHAP needs both CHAP_I and CHAP_C")
	}
	if c.mutual == nil {
		return nil, loginError(text.StatusAuthFailed, "initiator asks for mutual CHAP, which is not configured for it")
	}
	id, err := text.ParseNumber(mid)
	if err != nil || id > 255 {
		return nil, loginError(text.StatusAuthFailed, "mutual CHAP_I %q is not a number from 0 to 255", text.Truncate(mid))
	}
	ch, err := text.DecodeBinary(mchall)
	if err != nil {
		return nil, loginError(text.StatusAuthFailed, "mutual CHAP_C: %w", err)
	}
	if len(ch) > text.MaxBinaryLen {
		return nil, loginError(text.StatusAuthFailed, "mutual CHAP_C is %d bytes, more than %d", len(ch), text.MaxBinaryLen)
	}
	if subtle.ConstantTimeCompare(ch, c.chall) == 1 {
		// §12.1.3: a challenge reflected back would make us compute the
		// answer an attacker needs.
		return nil, loginError(text.StatusAuthFailed, "initiator's mutual CHAP challenge repeats the target's challenge (reflection)")
	}
	c.state = chapDone
	c.mutualDone = true
	return []text.KV{
		{Key: text.KeyCHAPN, Value: c.mutual.User},
		{Key: text.KeyCHAPR, Value: text.EncodeHex(text.CHAPResponse(byte(id), c.mutual.Secret, ch))},
	}, nil
}
