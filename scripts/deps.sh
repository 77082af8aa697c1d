#!/usr/bin/env bash
# deps.sh — install everything mhcodi's build, tests and demo need on Debian 12.
#
# Idempotent: a package is installed only when missing, the guest kernel is
# fetched only when the cached one is not the version linux-image-amd64 points
# at, and staticcheck is built only when absent. Prints what it installed and
# what it found already present. Run as root (make deps / make test call it).
#
# Environment:
#   MHCODI_CACHE   cache directory (default: <repo>/.cache), git-ignored
#   MHCODI_NO_APT  if set, never call apt-get (report missing packages and fail)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${MHCODI_CACHE:-$repo/.cache}
export PATH=/usr/local/go/bin:/usr/sbin:/sbin:$PATH

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
)

log() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs Debian packages); try: sudo $0"
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
