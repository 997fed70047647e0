#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Test `make install` and DKMS against a kernel build tree, on the host:
#
#   scripts/test-install.sh KDIR        (`make install-test`, part of `make check`)
#
# Everything goes into a temporary directory: `make install` into an
# INSTALL_MOD_PATH beside the kernel's own modules, DKMS with private trees
# (--dkmstree, --sourcetree, --installtree, --no-depmod). Neither writes under
# /lib/modules, /etc, /usr/src or /var/lib/dkms of the host; the test checks
# that too.
set -euo pipefail

kdir=$(cd "${1:?usage: test-install.sh KDIR}" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
rel=$(cat "$kdir/include/config/kernel.release")
ver=$(cat "$top/VERSION")
pkg=virtio-scsi-rs
# modalias of a virtio-scsi controller (virtio device id 8) as QEMU's, vendor 0x1af4.
alias=virtio:d00000008v00001AF4

# Run make as an administrator does: nothing from an outer make (`make check`
# KMAKE_FLAGS=..., -s) leaks in.
unset MAKEFLAGS MFLAGS MAKELEVEL

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vscsi-install-test.XXXXXX")
# VSCSI_KEEP_TMP=1 keeps the temporary directory, to look at what failed.
trap '[ -n "${VSCSI_KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT
start=$SECONDS

fail() {
	echo "test-install: FAIL: $*" >&2
	exit 1
}
ok() { echo "test-install: ok: $*"; }
# Run a command with its output in a log, shown only when it fails.
quiet() {
	local log=$tmp/log.$((++nlog))
	"$@" >"$log" 2>&1 || {
		cat "$log" >&2
		fail "$*"
	}
}
nlog=0

host_state() {
	# (Some of them need not exist.)
	{ find /var/lib/dkms /usr/src /etc/modprobe.d /etc/dracut.conf.d "/lib/modules/$rel" \
		-maxdepth 3 -printf '%p %s %T@\n' 2>/dev/null || true; } | sort
}
host_state >"$tmp/host-before"

### make install ###############################################################

root=$tmp/root
moddir=$root/lib/modules/$rel
# The kernel's own modules first (seconds: copies and depmod), so that the C
# driver's alias is there for the Rust driver's to compete with, as on a real
# system.
quiet make -C "$kdir" LLVM=1 modules_install INSTALL_MOD_PATH="$root"
[ -f "$moddir/kernel/drivers/scsi/virtio_scsi.ko" ] ||
	fail "the kernel's modules_install did not install virtio_scsi.ko (is it =m in $kdir?)"
quiet make -C "$top" install KDIR="$kdir" INSTALL_MOD_PATH="$root"

# modules_install of an external module puts it under updates/ (INSTALL_MOD_DIR),
# in the directory it was built in: updates/drivers/scsi/virtio_scsi_rs/.
made=$(find "$moddir" -name 'virtio_scsi_rs.ko*')
case $made in
"$moddir"/updates/*/virtio_scsi_rs.ko) ;;
*) fail "make install: virtio_scsi_rs.ko not (only) under updates/: '$made'" ;;
esac
grep -q "^${made#"$moddir/"}:" "$moddir/modules.dep" ||
	fail "make install: modules.dep does not name ${made#"$moddir/"}"
kunit=$(find "$root" -name 'virtio_scsi_rs_kunit.ko*')
[ -z "$kunit" ] || fail "make install installed the KUnit module: $kunit"
sample=$(find "$root" -name 'virtio_rng_rs.ko*')
[ -z "$sample" ] || fail "make install installed the sample: $sample"
for f in modprobe.d dracut.conf.d; do
	cmp -s "$top/scripts/install/$f-virtio_scsi_rs.conf" "$root/etc/$f/virtio_scsi_rs.conf" ||
		fail "make install: /etc/$f/virtio_scsi_rs.conf missing or not the shipped file"
done
[ "$(modinfo -b "$root" -k "$rel" -F version virtio_scsi_rs)" = "$ver" ] ||
	fail "modinfo version of the installed module is not VERSION's $ver"
ok "make install: ${made#"$moddir/"} in modules.dep, no KUnit module nor sample, both conf files"

# Which modules udev's `modprobe <modalias>` would load for a virtio-scsi
# controller, with the configuration directory $1.
resolve() {
	modprobe --dirname "$root" --set-version "$rel" --config "$1" --use-blacklist \
		--show-depends "$alias" | sed -n 's|^insmod .*/\([^/]*\)\.ko.*|\1|p' | sort | xargs
}
mkdir "$tmp/empty"
both=$(resolve "$tmp/empty")
[ "$both" = "virtio_scsi virtio_scsi_rs" ] ||
	fail "without the blacklist $alias resolves to '$both', not both drivers"
rust=$(resolve "$root/etc/modprobe.d")
[ "$rust" = "virtio_scsi_rs" ] ||
	fail "with /etc/modprobe.d/virtio_scsi_rs.conf $alias resolves to '$rust', not virtio_scsi_rs alone"
ok "$alias: virtio_scsi_rs alone with the blacklist, both drivers without it"

### DKMS #######################################################################

d=$tmp/dkms
mkdir -p "$d/var/lib/dkms" "$d/usr/src" "$d/lib/modules/$rel"
dk() {
	dkms "$@" -k "$rel" --kernelsourcedir "$kdir" --no-depmod \
		--dkmstree "$d/var/lib/dkms" --sourcetree "$d/usr/src" --installtree "$d/lib/modules"
}
# What `dkms add` copies: dkms.conf and the module's sources (make dkms-source).
# A build from it shows that DKMS needs nothing else of the checkout.
quiet make -C "$top" dkms-source DKMS_SRC="$tmp/dkms-source"
quiet dk add "$tmp/dkms-source"
[ -f "$d/usr/src/$pkg-$ver/dkms.conf" ] || fail "dkms add: no $pkg-$ver in the source tree"
dk build "$pkg/$ver" >"$tmp/dkms-build.log" 2>&1 || {
	cat "$tmp/dkms-build.log" "$d/var/lib/dkms/$pkg/$ver/build/make.log" >&2 || true
	fail "dkms build"
}
quiet dk install "$pkg/$ver"
dk status "$pkg/$ver" | grep -q ": installed" || fail "dkms status: $(dk status "$pkg/$ver")"
dkmsko=$(find "$d/lib/modules/$rel" -name 'virtio_scsi_rs.ko*')
case $dkmsko in
"$d/lib/modules/$rel/updates/virtio_scsi_rs.ko" | "$d/lib/modules/$rel/updates/dkms/virtio_scsi_rs.ko") ;;
*) fail "dkms install: virtio_scsi_rs.ko not (only) under updates/: '$dkmsko'" ;;
esac
quiet depmod -b "$d" "$rel"
grep -q '^updates/\(dkms/\)\?virtio_scsi_rs\.ko:' "$d/lib/modules/$rel/modules.dep" ||
	fail "depmod does not list the module DKMS installed"
ok "dkms add, build, install: ${dkmsko#"$d/lib/modules/$rel/"}"

# The module DKMS built must be the one make built: same kernel, same flags
# (DKMS adds CC=clang LD=ld.lld, which LLVM=1 already means, and KERNELRELEASE),
# same sources. What may legitimately differ is what depends on where it was
# built, its source paths. Kbuild maps the checkout's path away in Rust panic
# locations, __FILE__ and DWARF (--remap-path-prefix, -ffile-prefix-map), so
# on a kernel without KASAN the two files are equal byte for byte. KASAN's
# global descriptors name the C object's source file as the compiler was given
# it, an absolute path no flag of clang 14 maps: .rodata then holds that path,
# everything after it in .rodata moves, the relocations into and of that part
# of .rodata move with it, and the build id (a hash of the rest) differs. The
# checks below allow exactly that and nothing else.
made_root=$top
dkms_root=$d/var/lib/dkms/$pkg/$ver/build

modinfo_of() { modinfo "$1" | grep -v '^filename:'; }
diff -u <(modinfo_of "$made") <(modinfo_of "$dkmsko") >"$tmp/modinfo.diff" ||
	fail "modinfo differs between make's and DKMS's module:
$(cat "$tmp/modinfo.diff")"
for field in name version srcversion vermagic license alias parm; do
	[ -n "$(modinfo -F "$field" "$made")" ] || fail "the module has no modinfo $field"
done
# Symbols: name, type and size (values in .rodata could move with the path).
nm_of() { nm -S "$1" | awk '{ print $NF, $(NF-1), (NF == 4 ? $2 : "-") }' | sort; }
diff -u <(nm_of "$made") <(nm_of "$dkmsko") >"$tmp/nm.diff" ||
	fail "symbol tables (nm) differ:
$(cat "$tmp/nm.diff")"
# Section number, name, type and size.
sections() {
	readelf -S -W "$1" | sed -n 's/^ *\[ *\([0-9]*\)\] \(.*[^ ]\) \+\([A-Z_0-9]\+\) \+[0-9a-f]\{16\} [0-9a-f]\+ \([0-9a-f]\+\) .*/\1 \2 \3 \4/p'
}
sections "$made" >"$tmp/sections.made"
sections "$dkmsko" >"$tmp/sections.dkms"
[ "$(wc -l <"$tmp/sections.made")" -gt 10 ] || fail "cannot read the section table of $made"
diff -u <(grep -v ' \.rodata PROGBITS ' "$tmp/sections.made") \
	<(grep -v ' \.rodata PROGBITS ' "$tmp/sections.dkms") >"$tmp/sections.diff" ||
	fail "sections differ (other than .rodata's size):
$(cat "$tmp/sections.diff")"

# Where does $2's build root (followed by a source path) start in $1's .rodata? (hex offset)
path_at() {
	readelf -p .rodata "$1" | sed -n "s|^ *\[ *\([0-9a-f]*\)\]  $2/.*|\1|p"
}
if cmp -s "$made" "$dkmsko"; then
	ok "DKMS's module is make's byte for byte (modinfo, nm, sections)"
else
	at_made=$(path_at "$made" "$made_root")
	at_dkms=$(path_at "$dkmsko" "$dkms_root")
	[ -n "$at_made" ] && [ "$at_made" = "$at_dkms" ] && [ "$(wc -w <<<"$at_made")" = 1 ] ||
		fail "the modules differ, and not by one build path at one offset of .rodata ('$at_made', '$at_dkms')"
	# The source paths themselves, relative to their roots.
	diff <(readelf -p .rodata "$made" | grep -F "$made_root/" | sed "s|.*$made_root/||") \
		<(readelf -p .rodata "$dkmsko" | grep -F "$dkms_root/" | sed "s|.*$dkms_root/||") >/dev/null ||
		fail "the embedded source paths differ beyond their roots"
	# Both builds' .rodata: equal before the path, and from the end of make's
	# path on equal to DKMS's moved by one offset, the sizes' difference.
	objcopy --dump-section .rodata="$tmp/rodata.made" "$made" "$tmp/discard.ko"
	objcopy --dump-section .rodata="$tmp/rodata.dkms" "$dkmsko" "$tmp/discard.ko"
	p=$((16#$at_made))
	shift_by=$(($(stat -c %s "$tmp/rodata.dkms") - $(stat -c %s "$tmp/rodata.made")))
	# The NUL after each path; the padding after the shorter one is longer.
	rest=$(readelf -p .rodata "$made" | grep -F "$made_root/" | sed "s|.*$made_root||")
	end_made=$((p + ${#made_root} + ${#rest} + 1))
	end_dkms=$((p + ${#dkms_root} + ${#rest} + 1))
	after=$((end_dkms - shift_by > end_made ? end_dkms - shift_by : end_made))
	cmp -s -n "$p" "$tmp/rodata.made" "$tmp/rodata.dkms" ||
		fail ".rodata differs before the embedded build path (offset $at_made)"
	cmp -s -i "$after:$((after + shift_by))" "$tmp/rodata.made" "$tmp/rodata.dkms" ||
		fail ".rodata differs after the embedded build path beyond a move by $shift_by bytes"
	# Relocations: the same entries, but those at or into .rodata past the path
	# moved by that offset.
	relocs() { readelf -r -W "$1" | grep -v '^Relocation section'; }
	paste -d '\n' <(relocs "$made") <(relocs "$dkmsko") | awk -v p="$p" -v s="$shift_by" '
		function hex(x,   i, n) {
			n = 0
			for (i = 1; i <= length(x); i++) n = n * 16 + index("0123456789abcdef", substr(x, i, 1)) - 1
			return n
		}
		NR % 2 == 1 { a = $0; next }
		{
			if (a == $0) next
			na = split(a, fa, " "); nb = split($0, fb, " ")
			if (na != nb || fa[2] != fb[2] || fa[3] != fb[3] || fa[5] != fb[5]) { bad = 1; print; next }
			# An entry in .rela.rodata past the path: its offset moved.
			if (hex(fa[1]) != hex(fb[1]) && !(hex(fa[1]) > p && hex(fb[1]) - hex(fa[1]) == s)) { bad = 1; print; next }
			# An addend into .rodata past the path: moved.
			if (fa[7] != fb[7] && !(fa[5] == ".rodata" && hex(fa[7]) > p && hex(fb[7]) - hex(fa[7]) == s)) { bad = 1; print }
		}
		END { exit bad }' >"$tmp/relocs.diff" ||
		fail "relocations differ beyond the move of .rodata past the build path:
$(head -20 "$tmp/relocs.diff")"
	# Every other section's contents (section numbers, as names may repeat).
	while read -r num name _; do
		case $name in .rodata | .rela.* | .note.gnu.build-id) continue ;; esac
		cmp -s <(readelf -x "$num" "$made" 2>&1) <(readelf -x "$num" "$dkmsko" 2>&1) ||
			fail "section $name differs"
	done <"$tmp/sections.made"
	ok "DKMS's module is make's but for KASAN's source path in .rodata ($shift_by bytes longer): modinfo, nm, sections, relocations"
fi
for ko in "$made" "$dkmsko"; do
	[ "$(strings -a "$ko" | grep -cF -e "$made_root/" -e "$dkms_root/")" -le 1 ] ||
		fail "$ko embeds its build path more than once (KASAN's): $(strings -a "$ko" | grep -F -e "$made_root/" -e "$dkms_root/" | head -3)"
done

quiet dk remove "$pkg/$ver"
left=$(find "$d/lib/modules/$rel" -name 'virtio_scsi_rs.ko*')
[ -z "$left" ] || fail "dkms remove left $left"
[ ! -e "$d/var/lib/dkms/$pkg" ] || fail "dkms remove left $d/var/lib/dkms/$pkg"
[ -z "$(dk status)" ] || fail "dkms status after remove: $(dk status)"
ok "dkms remove"

host_state >"$tmp/host-after"
diff -u "$tmp/host-before" "$tmp/host-after" >"$tmp/host.diff" ||
	fail "the host's module, DKMS or configuration directories changed:
$(cat "$tmp/host.diff")"
ok "the host's /lib/modules/$rel, /etc, /usr/src, /var/lib/dkms unchanged"
echo "test-install: passed in $((SECONDS - start)) s"
