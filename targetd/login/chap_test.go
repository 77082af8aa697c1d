package login

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCHAPResponseVector(t *testing.T) {
	// MD5(0x2a || "initiator-secret-0123" || 01..20), computed with
	// Python's hashlib as an independent reference.
	got := chapResponse(0x2a, chapSecret, seq(1, 32))
	assert.Equal(t, "4db5eeb7062600343f50a949a7488ce8", hex.EncodeToString(got))
}

func TestCheckCredentials(t *testing.T) {
	good := &Credentials{chapUser, chapSecret}
	tests := []struct {
		name      string
		c, mutual *Credentials
		wantErr   string
	}{
		{"one way", good, nil, ""},
		{"mutual", good, &Credentials{mutualUser, mutualSecret}, ""},
		{"12-byte secret", &Credentials{chapUser, "123456789012"}, nil, ""},
		{"11-byte secret", &Credentials{chapUser, "12345678901"}, nil, "at least 12"},
		{"empty user", &Credentials{"", chapSecret}, nil, "user name is empty"},
		{"long user", &Credentials{strings.Repeat("u", 256), chapSecret}, nil, "longer than 255"},
		{"long secret", &Credentials{chapUser, strings.Repeat("s", 256)}, nil, "longer than 255"},
		{"short mutual secret", good, &Credentials{mutualUser, "x"}, "mutual (target) CHAP secret"},
		{"same secrets", good, &Credentials{mutualUser, chapSecret}, "must differ"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkCredentials(tc.c, tc.mutual)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tc.wantErr)
		})
	}
}
