#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the test guest's initramfs (uncompressed newc cpio).
#
#   scripts/mkinitramfs.sh OUT.cpio MODULE.ko...
#
# Contents: busybox, fio, sg3-utils, lsscsi, e2fsprogs, blkdiscard, iscsi-test-cu (libiscsi's
# SPC/SBC conformance suite, which also drives SG_IO devices) and their
# shared libraries from this machine, the given modules under /lib/modules/,
# and scripts/guest/init as /init.
set -euo pipefail

out=${1:?usage: mkinitramfs.sh OUT.cpio MODULE.ko...}
shift
here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,lib/modules,etc,proc,sys,dev,tmp,root}
cp /bin/busybox "$stage/bin/busybox"
install -m 0755 "$here/guest/init" "$stage/init"
install -m 0755 "$here/guest/serve" "$stage/serve"

# VSCSI_EXTRA_TOOLS adds more host binaries (e.g. /usr/bin/perf for a guest profile).
tools=(/bin/bash /usr/bin/fio /usr/bin/lsscsi /sbin/mkfs.ext4 /sbin/mke2fs /sbin/e2fsck
	/sbin/fsck.ext4 /sbin/blkdiscard /usr/bin/sg_* ${VSCSI_EXTRA_TOOLS:-})
# fio's optional engines (RBD, Gluster, NBD, RDMA, PMEM) are linked in; stand-ins
# for their libraries keep some 60 MB of Ceph, ICU, GnuTLS, ... out of the
# image and seconds out of every fio start (see scripts/stub-libs.py).
stubs=$stage.stubs
trap 'rm -rf "$stage" "$stubs"' EXIT
"$here/stub-libs.py" "$(readlink -f /usr/bin/fio)" "$stubs" libgfapi.so.0 libnbd.so.0 libibverbs.so.1 \
	librdmacm.so.1 librados.so.2 librbd.so.1 libpmemblk.so.1 libpmem.so.1
libs=()
for t in "${tools[@]}"; do
	[ -e "$t" ] || { echo "mkinitramfs: $t missing; run scripts/install-deps.sh" >&2; exit 1; }
	real=$(readlink -f "$t")
	dest=$stage/usr/local/bin/$(basename "$t")
	cp "$real" "$dest"
	while read -r lib; do libs+=("$lib"); done < <(LD_LIBRARY_PATH=$stubs ldd "$real" |
		awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}')
done
for lib in $(printf '%s\n' "${libs[@]}" | sort -u); do
	case "$lib" in
	"$stubs"/*) dest=/lib/x86_64-linux-gnu/$(basename "$lib") ;;
	*) dest=$lib ;;
	esac
	mkdir -p "$stage$(dirname "$dest")"
	cp -L "$lib" "$stage$dest"
done
# iscsi-test-cu: libiscsi links the RDMA libraries that fio gets stand-ins for (which lack the
# symbols libiscsi imports); it gets the real ones in a directory of its own, through a wrapper.
[ -e /usr/bin/iscsi-test-cu ] || { echo "mkinitramfs: iscsi-test-cu missing; run scripts/install-deps.sh" >&2; exit 1; }
mkdir -p "$stage/usr/local/lib/iscsi"
cp /usr/bin/iscsi-test-cu "$stage/usr/local/lib/iscsi/"
for lib in $(ldd /usr/bin/iscsi-test-cu | awk '/=> \// {print $3}'); do
	cp -L "$lib" "$stage/usr/local/lib/iscsi/"
done
printf '#!/bin/sh\nLD_LIBRARY_PATH=/usr/local/lib/iscsi exec /usr/local/lib/iscsi/iscsi-test-cu "$@"\n' \
	> "$stage/usr/local/bin/iscsi-test-cu"
chmod 0755 "$stage/usr/local/bin/iscsi-test-cu"
# The dynamic loader is looked up through /lib64 on x86-64.
if [ ! -e "$stage/lib64/ld-linux-x86-64.so.2" ]; then
	mkdir -p "$stage/lib64"
	cp -L /lib64/ld-linux-x86-64.so.2 "$stage/lib64/"
fi
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$stage/etc/"
echo 'root:x:0:0:root:/root:/bin/sh' > "$stage/etc/passwd"

for m in "$@"; do
	cp "$m" "$stage/lib/modules/"
done

tmp=$out.tmp
(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) > "$tmp"
mv "$tmp" "$out"
