package text

import (
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCHAPResponseVector(t *testing.T) {
	// MD5(0x2a || "initiator-secret-0123" || 01..20), computed with
	// Python's hashlib as an independent reference.
	chall := make([]byte, 32)
	for i := range chall {
		chall[i] = byte(1 + i)
	}
	got := CHAPResponse(0x2a, "initiator-secret-0123", chall)
	assert.Equal(t, "4db5eeb7062600343f50a949a7488ce8", hex.EncodeToString(got))
}
