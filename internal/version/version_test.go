package version

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestString(t *testing.T) {
	old := Version
	defer func() { Version = old }()
	Version = ""
	assert.NotEmpty(t, String(), "a build without -X still says something")
	Version = "1.2.3-4-gabcdef"
	assert.Equal(t, "1.2.3-4-gabcdef", String())
	var b bytes.Buffer
	Print(&b, "mhcodi-targetd")
	assert.Equal(t, "mhcodi-targetd 1.2.3-4-gabcdef ("+runtime.Version()+")\n", b.String())
}
