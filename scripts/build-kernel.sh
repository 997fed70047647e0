#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build (or reuse) a guest kernel flavour from Debian's linux-source-6.12.
#
#   scripts/build-kernel.sh debug|perf
#
# The build lives outside the repository, in
#   ${VSCSI_CACHE:-${XDG_CACHE_HOME:-~/.cache}/virtio-scsi-rs}/kernel/<flavour>-<key>
# where <key> hashes the source package version, the config fragments, the
# toolchain versions and this recipe. A completed build is reused as is. The
# build directory is printed on the last line of stdout; it is a valid KDIR.
set -euo pipefail

# Bump when the recipe below changes in a way that changes the kernel.
RECIPE=1

flavour=${1:?usage: build-kernel.sh debug|perf}
here=$(cd "$(dirname "$0")" && pwd)
frag_dir=$here/kconfig
[ -f "$frag_dir/$flavour.config" ] || { echo "build-kernel: no flavour '$flavour'" >&2; exit 2; }

cache=${VSCSI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virtio-scsi-rs}
tarball=/usr/src/linux-source-6.12.tar.xz
[ -f "$tarball" ] || { echo "build-kernel: $tarball missing; run scripts/install-deps.sh" >&2; exit 1; }
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.12)

key=$( {
	echo "recipe=$RECIPE src=$srcver"
	cat "$frag_dir/base.config" "$frag_dir/$flavour.config"
	rustc --version; bindgen --version; clang --version | head -1
} | sha256sum | cut -c1-12)

src=$cache/src/linux-$srcver
out=$cache/kernel/$flavour-$key
log() { echo "build-kernel: $*" >&2; }

if [ -f "$out/.vscsi-built" ]; then
	log "$flavour kernel cached at $out"
	echo "$out"
	exit 0
fi

mkdir -p "$cache/src" "$cache/kernel"
exec 9>"$cache/.lock"
flock 9

if [ ! -f "$src/.vscsi-extracted" ]; then
	log "extracting $tarball ($srcver)"
	rm -rf "$src" "$src.tmp"
	mkdir -p "$src.tmp"
	tar -xf "$tarball" -C "$src.tmp" --strip-components=1
	touch "$src.tmp/.vscsi-extracted"
	mv "$src.tmp" "$src"
fi

jobs=$(nproc)
mk() { make -s -C "$src" O="$out" LLVM=1 "$@"; }

log "configuring $flavour ($out)"
rm -rf "$out"
mkdir -p "$out"
mk tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" \
	"$frag_dir/base.config" "$frag_dir/$flavour.config" >/dev/null
mk olddefconfig >/dev/null

# Every fragment line must have stuck: Kconfig silently drops an option whose
# dependencies are unmet (RUST without a usable toolchain, for instance).
bad=0
while IFS= read -r line; do
	case "$line" in CONFIG_*=*) ;; *) continue ;; esac
	opt=${line%%=*}
	want=${line#*=}
	# The last fragment to mention an option wins.
	want=$(grep -h "^$opt=" "$frag_dir/base.config" "$frag_dir/$flavour.config" | tail -1)
	want=${want#*=}
	have=$(grep "^$opt=" "$out/.config" || true)
	have=${have#*=}
	if [ "$want" = n ]; then
		[ -z "$have" ] || { log "$opt: want n, have $have"; bad=1; }
	elif [ "$want" != "$have" ]; then
		log "$opt: want $want, have ${have:-unset}"
		bad=1
	fi
done < <(cat "$frag_dir/base.config" "$frag_dir/$flavour.config")
if [ "$bad" -ne 0 ]; then
	log "config fragments did not apply (see above); 'make -C $src O=$out LLVM=1 rustavailable' explains RUST"
	exit 1
fi

log "building $flavour kernel with $jobs jobs (several minutes)"
start=$(date +%s)
if ! mk -j"$jobs" bzImage modules >"$out/build.log" 2>&1; then
	tail -40 "$out/build.log" >&2
	log "kernel build failed; full log: $out/build.log"
	exit 1
fi
touch "$out/.vscsi-built"
# Keep one build per flavour: older keys are stale recipes or toolchains.
for old in "$cache/kernel/$flavour"-*; do
	[ "$old" = "$out" ] || rm -rf "$old"
done
log "$flavour kernel built in $(( $(date +%s) - start )) s"
echo "$out"
