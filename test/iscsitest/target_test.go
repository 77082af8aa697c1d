package iscsitest

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestFreePortalsOnlyOnLoopback(t *testing.T) {
	_, err := FreePortals("10.0.0.1", 1)
	assert.ErrorContains(t, err, "not an IPv4 loopback address")
	ps, err := FreePortals("127.0.0.11", 2)
	assert.NoError(t, err)
	assert.Len(t, ps, 2)
}
