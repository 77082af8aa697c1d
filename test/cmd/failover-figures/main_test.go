package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestParseAndReport(t *testing.T) {
	out := `=== RUN   TestFencingQuorumFailover
    fencing_e2e_test.go:383: FIGURE quorum_failover_s=21.5: from cutting the owner off (lease_ttl 10s, x_s=9 after the colon is prose)
    fencing_e2e_test.go:428: FIGURE forced_failover_command_s=11.8 forced_failover_writing_s=71.2: the forced failover
    something else quorum_failover_s=99
    fencing_e2e_test.go:383: FIGURE quorum_failover_s=18: again
`
	f := parse(strings.NewReader(out))
	assert.Equal(t, map[string][]float64{
		"quorum_failover_s":         {21.5, 18},
		"forced_failover_command_s": {11.8},
		"forced_failover_writing_s": {71.2},
	}, f)
	var b bytes.Buffer
	report(&b, f, 2, 1)
	assert.Contains(t, b.String(), "2 runs, 1 failed\n")
	assert.Regexp(t, `quorum_failover\s+2\s+18.0 s\s+19.8 s\s+21.5 s`, b.String())
	assert.Equal(t, 2.0, median([]float64{1, 2, 3}))
	assert.Equal(t, 2.5, median([]float64{1, 2, 3, 4}))
}
