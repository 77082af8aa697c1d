// Package packaging holds what installs mhcodi the way a Debian admin
// expects, and its tests: nfpm's package definitions (mhcodi.yaml,
// mhcodi-guest.yaml), deb.sh behind make deb, the Debian copyright file;
// TestDeb builds the packages and checks them (a dpkg --root install,
// lintian, systemd-analyze verify, man -l, --version), TestGoStep runs
// scripts/deps.sh's Go step on a machine without Go and builds with what
// it got, TestGuide checks that every mhcodi command of the README's
// real-host guide exists.
package packaging
