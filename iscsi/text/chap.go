package text

import "crypto/md5"

// Credentials are a CHAP user name and secret.
type Credentials struct{ User, Secret string }

// CHAPResponse is the RFC 1994 MD5 response: MD5(identifier || secret ||
// challenge).
func CHAPResponse(id byte, secret string, challenge []byte) []byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}
