#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install everything virtio-scsi-rs needs on a fresh Debian 12 machine.
# Idempotent: a second run only checks. Uses Debian's archive and crates.io only.
set -euo pipefail

PKGS=(
	# Kernel build (LLVM=1)
	clang lld llvm libclang-dev flex bison bc libelf-dev libssl-dev cpio
	make gcc python3 rsync kmod xz-utils zstd lz4 dwarves
	# Kernel source
	linux-source-6.12
	# Guest
	qemu-system-x86 busybox-static fio sg3-utils lsscsi e2fsprogs util-linux linux-perf
	genisoimage
	# Real LUNs (tests/guest/test_iscsi.py): a userspace iSCSI target run privately by the tests
	# (never tgt.service), QEMU's libiscsi block driver (the same version as qemu-system-x86),
	# libiscsi's conformance suite iscsi-test-cu (host and guest) and iscsi-inq
	tgt qemu-block-extra libiscsi-bin
	# make install-test: DKMS with private trees
	dkms
	# Distro guest (scripts/distro/): a bookworm root tree, its disk image and overlays
	debootstrap fdisk qemu-utils
	# Host harness (a venv under the cache, see below)
	python3 python3-venv
)

need=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done

if [ ${#need[@]} -gt 0 ]; then
	echo "install-deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	SUDO=
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

command -v rustup >/dev/null || { echo "install-deps: rustup not found" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rust-src' || rustup component add rust-src
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

if ! command -v bindgen >/dev/null || ! bindgen --version | grep -q '0\.73\.'; then
	cargo install --locked --version 0.73.0 bindgen-cli
fi
# Python packages for the harness live in a venv beside the kernel builds.
cache=${VSCSI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virtio-scsi-rs}
venv=$cache/venv
reqs=$(dirname "$0")/../tests/requirements.txt
stamp=$venv/.reqs-$(sha256sum "$reqs" | cut -c1-12)
if [ ! -f "$stamp" ]; then
	rm -rf "$venv"
	/usr/bin/python3 -m venv "$venv"
	"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs"
	touch "$stamp"
fi
echo "install-deps: ok"
