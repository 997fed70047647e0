#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the module crate's API documentation (the abstractions, the driver,
# the protocol layer) with rustdoc, every warning an error.
#
#   scripts/rustdoc.sh KDIR OUT     (`make rustdoc`, part of `make check`)
#
# An out-of-tree crate has no rustdoc rule in Kbuild, so this takes the
# rustc command Kbuild saved for the crate root (the module must be built
# first) and runs rustdoc with the same flags, as rust/Makefile's rustdoc rule
# does for the kernel's own crates: same target, cfgs, `--extern kernel`. The
# items are `pub(crate)`, so private items are documented too.
set -euo pipefail

kdir=${1:?usage: rustdoc.sh KDIR OUT}
out=${2:?usage: rustdoc.sh KDIR OUT}
here=$(cd "$(dirname "$0")/.." && pwd)
crate=$here/drivers/scsi/virtio_scsi_rs
cmdfile=$crate/.vscsi_main.o.cmd
[ -f "$cmdfile" ] || { echo "rustdoc: $cmdfile missing: build the module first" >&2; exit 1; }

saved=$(sed -n 's/^savedcmd_[^ ]* := //p' "$cmdfile")
# `RUST_MODFILE=<path> rustc|clippy-driver <flags> <crate root>`: keep the flags that say what
# the crate is (target, cfgs, features, lints, externs), drop what says where the compiler
# writes its outputs.
read -r -a words <<< "$saved"
args=()
for w in "${words[@]}"; do
	case "$w" in
	RUST_MODFILE=*) modfile=${w#RUST_MODFILE=} ;;
	rustc | clippy-driver | */rustc | */clippy-driver) ;;
	--emit=* | -Zbinary_dep_depinfo=* | --out-dir | "$crate/") ;;
	*) args+=("$w") ;;
	esac
done

rm -rf "$out"
mkdir -p "$out"
# The kernel exports RUSTC_BOOTSTRAP=1 to its Rust builds (the -Z flags).
cd "$kdir"
# shellcheck disable=SC2294 # the saved command is shell-quoted, as Kbuild runs it
eval RUSTC_BOOTSTRAP=1 RUST_MODFILE="${modfile:-virtio_scsi_rs}" rustdoc "${args[@]}" \
	-Zunstable-options --document-private-items -Dwarnings --output "$out"
echo "rustdoc: $out/vscsi_main/index.html"
