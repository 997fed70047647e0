#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the API documentation of the module's crate (the abstractions, the
# driver, the protocol layer) and of the virtio-rng sample's crate with
# rustdoc, every warning an error.
#
#   scripts/rustdoc.sh KDIR OUT     (`make rustdoc`, part of `make check`)
#
# An out-of-tree crate has no rustdoc rule in Kbuild, so this takes the
# rustc command Kbuild saved for each crate root (the modules must be built
# first) and runs rustdoc with the same flags, as rust/Makefile's rustdoc rule
# does for the kernel's own crates: same target, cfgs, `--extern kernel`. The
# items are `pub(crate)`, so private items are documented too. The sample is
# documented where it was built (a kernel with hw_random).
set -euo pipefail

kdir=${1:?usage: rustdoc.sh KDIR OUT}
out=${2:?usage: rustdoc.sh KDIR OUT}
here=$(cd "$(dirname "$0")/.." && pwd)

rm -rf "$out"
mkdir -p "$out"

# document DIR ROOT MODULE [optional]: the crate whose root is DIR/ROOT.rs, of MODULE.ko.
document() {
	local crate=$here/$1 root=$2 module=$3
	local cmdfile=$crate/.$root.o.cmd
	if [ ! -f "$cmdfile" ]; then
		[ "${4:-}" = optional ] && return 0
		echo "rustdoc: $cmdfile missing: build the module first" >&2
		exit 1
	fi
	local saved modfile= w
	saved=$(sed -n 's/^savedcmd_[^ ]* := //p' "$cmdfile")
	# `RUST_MODFILE=<path> rustc|clippy-driver <flags> <crate root>`: keep the flags that say
	# what the crate is (target, cfgs, features, lints, externs), drop what says where the
	# compiler writes its outputs.
	local words args=()
	read -r -a words <<< "$saved"
	for w in "${words[@]}"; do
		case "$w" in
		RUST_MODFILE=*) modfile=${w#RUST_MODFILE=} ;;
		rustc | clippy-driver | */rustc | */clippy-driver) ;;
		--emit=* | -Zbinary_dep_depinfo=* | --out-dir | "$crate/") ;;
		*) args+=("$w") ;;
		esac
	done
	# The kernel exports RUSTC_BOOTSTRAP=1 to its Rust builds (the -Z flags).
	# shellcheck disable=SC2294 # the saved command is shell-quoted, as Kbuild runs it
	(cd "$kdir" && eval RUSTC_BOOTSTRAP=1 RUST_MODFILE="${modfile:-$module}" rustdoc "${args[@]}" \
		-Zunstable-options --document-private-items -Dwarnings --output "$out")
	echo "rustdoc: $out/$root/index.html"
}

document drivers/scsi/virtio_scsi_rs vscsi_main virtio_scsi_rs
document samples/virtio_rng_rs virtio_rng_main virtio_rng_rs optional
