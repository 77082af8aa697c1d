#!/usr/bin/env bash
# A test cluster of network namespaces on this machine, for people and
# `make demo`: the one test/cluster builds for end-to-end tests.
#
#   scripts/test-cluster.sh up [--nodes 2] [--witness] [--fenced] [--fencing 'auto_failover: true'] [--foreground] [--keep]
#   scripts/test-cluster.sh status [--prefix P] [--json]
#   scripts/test-cluster.sh down [--prefix P | --dir D | --all] [--keep]
#
# Needs root (it creates network namespaces) and the binaries in bin/
# (`make build`; `up` builds them when they are missing). `up` prints, for
# each node, its own cluster file and the commands that run mhcodi-fenced
# and the CLI there; `up --fenced` starts fenced on every node as well.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

if [[ $# -eq 0 ]]; then
	exec go run ./test/cmd/cluster help
fi
if [[ $1 == up && ( ! -x bin/mhcodi || ! -x bin/mhcodi-targetd || ! -x bin/mhcodi-fenced || ! -x bin/mhcodi-bridge ) ]]; then
	make build
fi
# Built first rather than `go run`, so a foreground `up` gets ^C itself
# (go run would stand between it and the terminal).
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/cluster" ./test/cmd/cluster
"$bin/cluster" "$@"
