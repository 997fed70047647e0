#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The distro guest's base: a Debian bookworm root tree (debootstrap, variant
# minbase, the packages of scripts/distro/packages), cached as a directory under
#   ${VSCSI_CACHE:-~/.cache/virtio-scsi-rs}/distro/base-<key>/root
# where <key> hashes this script and the package list: a change to either
# debootstraps again, otherwise the tree is reused as is. Prints the tree's
# path on the last line of stdout. Needs root (debootstrap, chroot).
#
# What is here is the distribution, configured as a test VM image: root with
# an empty password (a serial getty on the console logs in as root), a fixed
# machine-id (every boot of the image is not a first boot), no apt caches.
# Kernel, modules, initramfs and the harness's command server are added per
# module build by scripts/distro/mkimage.sh.
set -euo pipefail

SUITE=bookworm
MIRROR=${VSCSI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)
cache=${VSCSI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virtio-scsi-rs}
key=$(cat "$here/mkbase.sh" "$here/packages" | sha256sum | cut -c1-12)
out=$cache/distro/base-$key
log() { echo "mkbase: $*" >&2; }

if [ -f "$out/.vscsi-built" ]; then
	log "bookworm base cached at $out"
	echo "$out/root"
	exit 0
fi
command -v debootstrap >/dev/null || { log "debootstrap missing; run scripts/install-deps.sh"; exit 1; }
mkdir -p "$cache/distro"
exec 9>"$cache/distro/.lock"
flock 9
[ -f "$out/.vscsi-built" ] && { echo "$out/root"; exit 0; }

pkgs=$(grep -v '^#' "$here/packages" | xargs | tr ' ' ,)
rm -rf "$out"
mkdir -p "$out"
log "debootstrap $SUITE ($pkgs) into $out/root"
t0=$SECONDS
debootstrap --variant=minbase --include="$pkgs" "$SUITE" "$out/root" "$MIRROR" > "$out/debootstrap.log" 2>&1 ||
	{ tail -20 "$out/debootstrap.log" >&2; exit 1; }

r=$out/root
# Root logs in without a password (serial getty on ttyS0; pam_unix has nullok).
sed -i 's/^root:[^:]*:/root::/' "$r/etc/shadow"
echo vscsi-distro > "$r/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tvscsi-distro\n' > "$r/etc/hosts"
# A machine-id of its own: an empty one makes every boot of the image a first
# boot (preset-all, ConditionFirstBoot units), which a test image does not want.
systemd-machine-id-setup --root="$r" >/dev/null 2>&1 || \
	cat /proc/sys/kernel/random/uuid | tr -d - > "$r/etc/machine-id"
# The journal persists on the root fs (so a crash test finds it replayed).
mkdir -p "$r/var/log/journal"
rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*_Packages
touch "$out/.vscsi-built"
log "done in $((SECONDS - t0)) s"
echo "$r"
