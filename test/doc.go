// Package test holds mhcodi's end-to-end, conformance and benchmark suites:
// they run the built binaries in bin/ and the real tools scripts/deps.sh
// installs. Run them with `make test`, which builds and installs first.
package test
