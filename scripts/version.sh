#!/bin/sh
# version.sh — the version of this tree, from git describe.
#
#   scripts/version.sh         1.2.0, 1.2.0-5-g1a2b3c4d, 0.0.0-174-g6d1c105c-dirty
#   scripts/version.sh --deb [VERSION]
#                              this (or VERSION) as a Debian upstream version: 1.2.0,
#                              1.2.0+git5.g1a2b3c4d, 0.0.0+git174.g6d1c105c.dirty
#                              (sorts after the tag it follows)
#
# With a tag vX.Y.Z it is git describe's own output less the "v". A tree
# without such a tag counts from v0.0.0 at its first commit. Outside git
# (a source tarball) it prints $MHCODI_VERSION, else 0.0.0.
set -eu
cd "$(dirname "$0")/.."

v=
if [ "${1:-}" = --deb ] && [ -n "${2:-}" ]; then
	v=$2
elif git rev-parse --git-dir >/dev/null 2>&1; then
	if d=$(git describe --tags --match 'v[0-9]*' --abbrev=8 --dirty 2>/dev/null); then
		v=${d#v}
	else
		n=$(git rev-list --count HEAD 2>/dev/null || echo 0)
		h=$(git rev-parse --short=8 HEAD 2>/dev/null || echo unknown)
		v=0.0.0-$n-g$h
		if ! git diff --quiet HEAD -- 2>/dev/null; then v=$v-dirty; fi
	fi
fi
[ -n "$v" ] || v=${MHCODI_VERSION:-0.0.0}

if [ "${1:-}" = --deb ]; then
	# 1.2.0-5-g1a2b3c4d[-dirty] -> 1.2.0+git5.g1a2b3c4d[.dirty]
	v=$(printf '%s\n' "$v" | sed -E 's/^([0-9][^-]*)-([0-9]+)-(g[0-9a-f]+)/\1+git\2.\3/; s/-dirty$/.dirty/; s/-/./g')
fi
printf '%s\n' "$v"
