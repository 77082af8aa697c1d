#!/usr/bin/env bash
# deps.sh — install everything mhcodi's build, tests and demo need on Debian 12.
#
# Idempotent: Go is fetched only when no Go on the machine is as new as
# go.mod asks, a package is installed only when missing, the guest kernel is
# fetched only when the cached one is not the version linux-image-amd64 points
# at, and staticcheck is built only when absent. Prints what it installed and
# what it found already present. Run as root (make deps / make test call it).
#
#   scripts/deps.sh        everything
#   scripts/deps.sh --go   only the Go step (needs no root)
#
# Environment:
#   MHCODI_CACHE   cache directory (default: <repo>/.cache), git-ignored
#   MHCODI_NO_APT  if set, never call apt-get (report missing packages and fail)
#   MHCODI_GO_CANDIDATES  the go binaries to consider after <cache>/go/bin/go,
#                  instead of /usr/local/go/bin/go, go on PATH and Debian's
#                  /usr/lib/go-1.*/bin/go (the Go step's test sets it empty)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${MHCODI_CACHE:-$repo/.cache}
export PATH=/usr/sbin:/sbin:$PATH

# Debian packages, each with the reason it is here.
packages=(
	qemu-system-x86   # guests and test VMs (TCG)
	qemu-block-extra  # QEMU's iSCSI block driver (libiscsi)
	qemu-utils        # qemu-img / qemu-io: real iSCSI clients for tests and benchmarks
	libiscsi-bin      # iscsi-test-cu conformance suite, iscsi-perf, iscsi-inq
	tgt               # Debian's userspace target, the benchmark baseline
	mdadm             # shipped into guest images; md RAID1 inside the guest
	lvm2              # LVM volume backend (tested inside a VM)
	open-iscsi        # kernel initiator tools (tested inside a VM)
	cpio              # initramfs archives
	iproute2          # network namespaces, veth, bridges for the test cluster
	kmod              # depmod for the fetched guest kernel's modules
	xz-utils          # unpacking kernel packages
	zstd              # ditto, for newer package compressions
	e2fsprogs         # mkfs for test volumes
	util-linux        # losetup, fallocate, blkdiscard
	procps            # ps/pgrep used by test clean-up checks
	psmisc            # fuser
	make
	lintian           # make test checks the .deb packages (make deb)
	man-db            # ... and their manual pages (man -l)
)

log() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

command -v dpkg-query >/dev/null || die "dpkg-query not found: this script supports Debian 12 only"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

apt_updated=
apt_update() {
	[ -n "$apt_updated" ] && return 0
	log "running apt-get update"
	apt-get update -qq >/dev/null 2>"$cache/apt-update.err" ||
		die "apt-get update failed: $(tail -n 3 "$cache/apt-update.err")"
	apt_updated=1
}

mkdir -p "$cache"

# --- Go ----------------------------------------------------------------------
# go.mod's toolchain line (or its go line) names the Go release the project
# builds with. A go of that release or newer already here is used as it is.
# Otherwise a Go new enough to fetch toolchains (1.21+) fetches that exact
# release from the Go module proxy (as the module golang.org/toolchain, into
# the module cache), and $cache/go links to it; the Makefile puts
# $cache/go/bin first on PATH. When there is no such Go either, Debian's
# golang-1.23 from bookworm-backports is downloaded with apt-get (its own
# package lists under $cache/go-apt: apt's sources are left alone) and
# unpacked into $cache/go-bootstrap, not installed.
go_bootstrap_pkg=golang-1.23
go_version() { # the version a go binary reports, without "go"; "" if it does not run
	(cd / && GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9][0-9.]*\).*/\1/p') || true
}
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$2" ]; }
go_required() {
	local v
	v=$(awk '$1 == "toolchain" { sub(/^go/, "", $2); print $2; exit }' "$repo/go.mod")
	[ -n "$v" ] || v=$(awk '$1 == "go" { print $2; exit }' "$repo/go.mod")
	[ -n "$v" ] || die "go.mod has no go line"
	case $v in *.*.*) ;; *) v=$v.0 ;; esac # "go 1.26" is the release 1.26.0
	echo "$v"
}
go_fetch_bootstrap() { # downloads Debian's Go into $cache/go-bootstrap; prints its go
	local codename uri aptdir opts work deb
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	[ "$codename" = bookworm ] || die "no Go new enough here, and fetching Debian's $go_bootstrap_pkg is only done on bookworm (this is '$codename'): install Go $need from your distribution"
	# The mirror this machine's apt uses for Debian itself.
	uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 ~ /debian\/?$/ { print $2; exit }')
	[ -n "$uri" ] || uri=$(cat /etc/apt/sources.list 2>/dev/null | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }')
	[ -n "$uri" ] || uri=http://deb.debian.org/debian
	aptdir=$cache/go-apt
	rm -rf "$aptdir" "$cache/go-bootstrap"
	mkdir -p "$aptdir/sources" "$aptdir/lists/partial" "$aptdir/archives/partial"
	printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
		"$uri" >"$aptdir/sources/backports.sources"
	opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$aptdir/sources"
		-o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir" -o "Dir::Cache::Archives=$aptdir/archives"
		-o "Dir::State::status=/dev/null" -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
	log "downloading Debian's $go_bootstrap_pkg from $uri bookworm-backports" >&2
	apt-get "${opts[@]}" update >"$aptdir/update.log" 2>&1 ||
		die "apt-get update for bookworm-backports failed: $(tail -n 3 "$aptdir/update.log")"
	work=$aptdir/debs
	mkdir -p "$work"
	(cd "$work" && apt-get "${opts[@]}" download "$go_bootstrap_pkg-go" "$go_bootstrap_pkg-src" >"$aptdir/download.log" 2>&1) ||
		die "apt-get download $go_bootstrap_pkg-go $go_bootstrap_pkg-src failed: $(tail -n 3 "$aptdir/download.log")"
	for deb in "$work"/*.deb; do
		dpkg-deb -x "$deb" "$cache/go-bootstrap" || die "dpkg-deb -x $(basename "$deb") failed"
	done
	rm -rf "$aptdir"
	echo "$cache/go-bootstrap/usr/lib/go-${go_bootstrap_pkg#golang-}/bin/go"
}
go_step() {
	local need c v boot modcache dir arch
	need=$(go_required)
	local candidates=("$cache/go/bin/go") more
	if [ -n "${MHCODI_GO_CANDIDATES+set}" ]; then
		read -r -a more <<<"$MHCODI_GO_CANDIDATES"
		candidates+=(${more[@]+"${more[@]}"})
	else
		candidates+=(/usr/local/go/bin/go)
		c=$(command -v go || true)
		[ -n "$c" ] && candidates+=("$c")
		for c in /usr/lib/go-1.*/bin/go; do [ -x "$c" ] && candidates+=("$c"); done
	fi
	candidates+=("$cache/go-bootstrap/usr/lib/go-${go_bootstrap_pkg#golang-}/bin/go")
	for c in "${candidates[@]}"; do
		[ -x "$c" ] || continue
		v=$(go_version "$c")
		if [ -n "$v" ] && version_ge "$v" "$need"; then
			log "present: go $v ($c; go.mod asks for $need)"
			gobin=$(dirname "$c")
			return 0
		fi
	done
	boot=
	for c in "${candidates[@]}"; do
		[ -x "$c" ] || continue
		v=$(go_version "$c")
		if [ -n "$v" ] && version_ge "$v" 1.21; then boot=$c; break; fi
	done
	[ -n "$boot" ] || boot=$(go_fetch_bootstrap)
	v=$(go_version "$boot")
	[ -n "$v" ] || die "$boot does not run"
	log "fetching Go $need through the Go module proxy with go $v ($boot)"
	(cd "$repo" && GOTOOLCHAIN=go$need "$boot" version >"$cache/go-fetch.log" 2>&1) ||
		die "go $v could not fetch Go $need (GOPROXY=$(cd / && GOTOOLCHAIN=local "$boot" env GOPROXY)): $(tail -n 3 "$cache/go-fetch.log")"
	modcache=$(cd / && GOTOOLCHAIN=local "$boot" env GOMODCACHE)
	arch=$(cd / && GOTOOLCHAIN=local "$boot" env GOHOSTARCH)
	dir=$modcache/golang.org/toolchain@v0.0.1-go$need.linux-$arch
	[ "$(go_version "$dir/bin/go")" = "$need" ] || die "Go $need is not in $dir after the fetch (see $cache/go-fetch.log)"
	ln -sfn "$dir" "$cache/go"
	log "installed: go $need in $cache/go (-> $dir)"
	gobin=$cache/go/bin
}
gobin=
go_step
export PATH=$gobin:$PATH
[ "${1:-}" = --go ] && exit 0

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs Debian packages); try: sudo $0"

# --- Debian packages ---------------------------------------------------------
missing=()
present=()
for p in "${packages[@]}"; do
	if installed "$p"; then present+=("$p"); else missing+=("$p"); fi
done
log "present: ${present[*]:-none}"
if [ ${#missing[@]} -gt 0 ]; then
	[ -z "${MHCODI_NO_APT:-}" ] || die "missing packages and MHCODI_NO_APT is set: ${missing[*]}"
	apt_update
	log "installing: ${missing[*]}"
	# No service may start at install time: tgtd or iscsid on this machine
	# would only get in the tests' way. policy-rc.d is honoured by invoke-rc.d.
	if ! DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >"$cache/apt-install.log" 2>&1; then
		die "apt-get install ${missing[*]} failed; last lines of $cache/apt-install.log:
$(tail -n 15 "$cache/apt-install.log")"
	fi
	for p in "${missing[@]}"; do installed "$p" || die "package $p still not installed after apt-get install (see $cache/apt-install.log)"; done
	log "installed: ${missing[*]}"
else
	log "installed: none (all packages present)"
fi

# Debian's tgt package enables and may start tgtd; a stray tgtd on 3260 would
# shadow the targets tests start. Stop only a tgtd the package started
# (it runs with the packaged pid file); tests start their own with -f.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
	systemctl disable --now tgt.service >/dev/null 2>&1 || true
	systemctl disable --now iscsid.service iscsid.socket open-iscsi.service >/dev/null 2>&1 || true
fi

# --- guest kernel ------------------------------------------------------------
# The package that linux-image-amd64 depends on, e.g. linux-image-6.1.0-28-amd64.
kdir=$cache/kernel
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$kpkg" ]; then
	apt_update
	kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$kpkg" ] || die "cannot resolve the kernel package: 'apt-cache depends linux-image-amd64' names no linux-image-<version> package"
kver=${kpkg#linux-image-}

if [ -f "$kdir/VERSION" ] && [ "$(cat "$kdir/VERSION")" = "$kver" ] &&
	[ -f "$kdir/vmlinuz" ] && [ -f "$kdir/lib/modules/$kver/modules.dep" ]; then
	log "present: guest kernel $kver in $kdir"
else
	log "fetching guest kernel package $kpkg"
	work=$(mktemp -d "$cache/kernel.tmp.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	chmod 755 "$work" # apt's _apt sandbox user must be able to write here
	if ! (cd "$work" && apt-get download "$kpkg" >"$work/download.log" 2>&1); then
		apt_update
		(cd "$work" && apt-get download "$kpkg" >"$work/download.log" 2>&1) ||
			die "apt-get download $kpkg failed: $(tail -n 3 "$work/download.log")"
	fi
	deb=$(ls "$work"/*.deb 2>/dev/null | head -n 1)
	[ -n "$deb" ] || die "apt-get download $kpkg produced no .deb file"
	mkdir -p "$work/x" "$work/out/lib/modules"
	dpkg-deb -x "$deb" "$work/x" || die "dpkg-deb -x $(basename "$deb") failed"
	[ -f "$work/x/boot/vmlinuz-$kver" ] || die "$kpkg holds no boot/vmlinuz-$kver"
	cp "$work/x/boot/vmlinuz-$kver" "$work/out/vmlinuz"
	cp "$work/x/boot/config-$kver" "$work/out/config" 2>/dev/null || true
	mv "$work/x/lib/modules/$kver" "$work/out/lib/modules/$kver"
	# The package ships no modules.dep (postinst makes it): make it here.
	depmod -b "$work/out" "$kver" || die "depmod for $kver failed"
	echo "$kver" >"$work/out/VERSION"
	rm -rf "$kdir.old"
	[ -d "$kdir" ] && mv "$kdir" "$kdir.old"
	mv "$work/out" "$kdir"
	rm -rf "$kdir.old" "$work"
	trap - EXIT
	log "installed: guest kernel $kver in $kdir ($(du -sh "$kdir" | cut -f1))"
fi

# --- Go tools ----------------------------------------------------------------
staticcheck_version=v0.8.2
bindir=$cache/bin
if [ -x "$bindir/staticcheck" ] && "$bindir/staticcheck" -version 2>/dev/null | grep -qF "(${staticcheck_version#v})"; then
	log "present: staticcheck $staticcheck_version"
else
	mkdir -p "$bindir"
	GOBIN=$bindir go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version" 2>"$cache/staticcheck.err" ||
		die "go install staticcheck@$staticcheck_version failed: $(tail -n 3 "$cache/staticcheck.err")"
	log "installed: staticcheck $staticcheck_version in $bindir"
fi

log "done"
