package login

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/iscsi/text"
)

func TestCheckCredentials(t *testing.T) {
	good := &text.Credentials{User: chapUser, Secret: chapSecret}
	tests := []struct {
		name      string
		c, mutual *text.Credentials
		wantErr   string
	}{
		{"one way", good, nil, ""},
		{"mutual", good, &text.Credentials{User: mutualUser, Secret: mutualSecret}, ""},
		{"12-byte secret", &text.Credentials{User: chapUser, Secret: "123456789012"}, nil, ""},
		{"11-byte secret", &text.Credentials{User: chapUser, Secret: "12345678901"}, nil, "at least 12"},
		{"empty user", &text.Credentials{User: "", Secret: chapSecret}, nil, "user name is empty"},
		{"long user", &text.Credentials{User: strings.Repeat("u", 256), Secret: chapSecret}, nil, "longer than 255"},
		{"long secret", &text.Credentials{User: chapUser, Secret: strings.Repeat("s", 256)}, nil, "longer than 255"},
		{"short mutual secret", good, &text.Credentials{User: mutualUser, Secret: "x"}, "mutual (target) CHAP secret"},
		{"same secrets", good, &text.Credentials{User: mutualUser, Secret: chapSecret}, "must differ"},
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
