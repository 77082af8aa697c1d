#!/usr/bin/env bash
# deb.sh — make deb: builds dist/mhcodi_<version>-1_amd64.deb and
# dist/mhcodi-guest_<version>-1_amd64.deb with nfpm (packaging/*.yaml).
#
# The binaries are built as make build builds them, stripped, with the
# version of scripts/version.sh linked in; the manual pages and shell
# completions come from tools/gendocs; nfpm is built once into .cache/bin.
# Needs Go (scripts/deps.sh --go), no root.
#
# Environment: VERSION (default: scripts/version.sh), GO (default: go),
# SOURCE_DATE_EPOCH (default: the last commit's time), DIST (default: dist).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
nfpm_version=v2.48.0
version=${VERSION:-$(scripts/version.sh)}
debversion=$(scripts/version.sh --deb "$version")
dist=${DIST:-dist}
stage=.cache/deb/stage
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

nfpm=.cache/bin/nfpm
if [ ! -x "$nfpm" ] || [ ! -f "$nfpm.$nfpm_version" ]; then
	echo "deb: building nfpm $nfpm_version into .cache/bin"
	mkdir -p .cache/bin
	GOBIN=$PWD/.cache/bin "$GO" install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$nfpm_version"
	touch "$nfpm.$nfpm_version"
fi

echo "deb: building the binaries ($version)"
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/doc/mhcodi" "$stage/doc/mhcodi-guest" "$dist"
CGO_ENABLED=0 GOAMD64=v1 "$GO" build -trimpath \
	-ldflags "-s -w -X github.com/mhcodi/mhcodi/internal/version.Version=$version" -o "$stage/bin/" ./cmd/...
CGO_ENABLED=0 GOAMD64=v1 "$GO" build -trimpath -ldflags "-s -w" -o "$stage/bin/uroot-init" github.com/u-root/u-root/cmds/core/init

echo "deb: manual pages and completions"
"$GO" run ./tools/gendocs -bin "$stage/bin" -out "$stage/docs" -version "$version"

gzip -9n <README.md >"$stage/doc/mhcodi/README.md.gz"
for p in mhcodi mhcodi-guest; do
	{
		printf '%s (%s-1) unstable; urgency=medium\n\n' "$p" "$debversion"
		printf '  * Built from %s.\n\n' "$version"
		printf ' -- mhcodi maintainers <maintainers@users.noreply.github.com>  %s\n' \
			"$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
	} | gzip -9n >"$stage/doc/$p/changelog.Debian.gz"
done

for p in mhcodi mhcodi-guest; do
	rm -f "$dist/${p}_"*.deb
	MHCODI_DEB_VERSION=$debversion "$nfpm" package --config "packaging/$p.yaml" --packager deb --target "$dist/" >/dev/null
	deb=$(ls "$dist/${p}_"*.deb)
	echo "deb: $deb ($(du -k "$deb" | cut -f1) KiB)"
done
