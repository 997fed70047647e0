#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Assemble the distro guest's disk image for one kernel and module build.
#
#   scripts/distro/mkimage.sh KDIR OUTDIR
#
# From the cached bookworm base (scripts/distro/mkbase.sh): a copy of its tree,
# the kernel's own modules (modules_install), virtio_scsi_rs installed as an
# administrator does (`make install INSTALL_MOD_PATH=`), the harness's command
# server as a systemd unit, a generic (hostonly=no) dracut initramfs built in
# the tree with chroot, fstab with the root by UUID, then an ext4 filesystem
# made from the tree without a loop mount (mke2fs -d) and written into a GPT
# disk image at its partition's offset, as a cloud image is laid out.
#
# OUTDIR gets: disk.raw (GPT, partition 1 = root, ext4), initramfs-rust.img
# (the installed state: virtio_scsi blacklisted, virtio_scsi_rs added),
# initramfs-c.img (the administrator's way back to C: the modprobe.d file
# removed and the initramfs rebuilt), root-uuid, kernel-release, part-offset
# (bytes), vmlinuz (the kernel booted directly). The result is kept while its
# key (base, kernel, modules, this recipe, the command server) is unchanged.
set -euo pipefail

kdir=$(cd "${1:?usage: mkimage.sh KDIR OUTDIR}" && pwd)
out=${2:?usage: mkimage.sh KDIR OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
log() { echo "mkimage: $*" >&2; }
# The root filesystem's size (sparse: only the tree's blocks are written) and
# the partition's start; the disk has 1 MiB more at the end for the backup GPT.
FS_MIB=2048
PART_START_MIB=1

base=$("$here/mkbase.sh" | tail -1)
rel=$(cat "$kdir/include/config/kernel.release")
ko=$repo/drivers/scsi/virtio_scsi_rs/virtio_scsi_rs.ko
[ -f "$ko" ] || { log "$ko missing: build the module first (make module)"; exit 1; }
key=$( {
	echo "$base"
	sha256sum "$kdir/arch/x86/boot/bzImage" "$ko" "$here/mkimage.sh" "$here/testvm.sh" "$here/vscsi-serve.service" \
		"$here/vscsi-serve-start" "$repo/scripts/guest/serve" "$repo"/scripts/install/*
	find "$kdir" -name '*.ko' -not -path '*/scsi/virtio_scsi_rs/*' -print0 | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-12)
if [ -f "$out/.key" ] && [ "$(cat "$out/.key")" = "$key" ]; then
	log "image $key up to date in $out"
	exit 0
fi

t0=$SECONDS
mkdir -p "$out"
rm -f "$out/.key"
work=$out/.work
tree=$work/tree
mounts=()
cleanup() {
	local m
	for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$work"
cp -a "$base" "$tree"

# The kernel's modules (virtio_scsi.ko, virtio_blk.ko are modules), then ours.
make -s -C "$kdir" LLVM=1 modules_install INSTALL_MOD_PATH="$tree" INSTALL_MOD_STRIP=1 >&2
make -s -C "$repo" install KDIR="$kdir" INSTALL_MOD_PATH="$tree" >&2
[ -n "$(find "$tree/lib/modules/$rel/updates" -name virtio_scsi_rs.ko)" ] || { log "make install left no module"; exit 1; }

# The harness's command server (the test guests' scripts/guest/serve).
install -D -m 0755 "$repo/scripts/guest/serve" "$tree/usr/local/sbin/vscsi-serve"
install -D -m 0755 "$here/vscsi-serve-start" "$tree/usr/local/sbin/vscsi-serve-start"
install -D -m 0644 "$here/vscsi-serve.service" "$tree/etc/systemd/system/vscsi-serve.service"
mkdir -p "$tree/etc/systemd/system/multi-user.target.wants" "$tree/usr/local/bin"
ln -sf /etc/systemd/system/vscsi-serve.service "$tree/etc/systemd/system/multi-user.target.wants/"
ln -sf /bin/bash "$tree/usr/local/bin/bash"
ln -sf /bin/busybox "$tree/usr/local/bin/usleep"

# A generic initramfs: the image boots on any VM, as a cloud image does.
cat > "$tree/etc/dracut.conf.d/10-vscsi-image.conf" <<'CONF'
# Written by virtio-scsi-rs's scripts/distro/mkimage.sh: this image is for any VM.
hostonly="no"
hostonly_cmdline="no"
CONF

# What a test VM does not start (timers, tty1's getty, unused generators and
# modprobe@ units, dracut's shutdown pivot, dracut modules of other storage
# stacks): scripts/distro/testvm.sh says why, item by item.
"$here/testvm.sh" "$tree"

# A KASAN kernel under TCG on a loaded host is slow: udev took more than systemd's
# default 90 s to announce ttyS0 once, and the serial getty (the login prompt of
# `make run DISTRO=1`) was given up with its device.
mkdir -p "$tree/etc/systemd/system.conf.d"
cat > "$tree/etc/systemd/system.conf.d/10-vscsi-slow-vm.conf" <<'CONF'
# Written by virtio-scsi-rs's scripts/distro/mkimage.sh: a debug kernel under TCG.
[Manager]
DefaultDeviceTimeoutSec=900s
DefaultTimeoutStartSec=900s
CONF

uuid=$(cat /proc/sys/kernel/random/uuid)
printf 'UUID=%s\t/\text4\terrors=remount-ro\t0\t1\n' "$uuid" > "$tree/etc/fstab"

for fs in proc sys dev; do
	case $fs in
	proc) mount -t proc proc "$tree/proc" ;;
	sys) mount -t sysfs sysfs "$tree/sys" ;;
	dev) mount --bind /dev "$tree/dev" ;;
	esac
	mounts=("$tree/$fs" "${mounts[@]}")
done
dracut_in_tree() {
	chroot "$tree" dracut --quiet --force --kver "$rel" "$1" >&2
}
dracut_in_tree "/boot/initramfs-$rel.img"
cp "$tree/boot/initramfs-$rel.img" "$out/initramfs-rust.img"
# The way back to C, as the modprobe.d file says: remove it, rebuild the initramfs.
mv "$tree/etc/modprobe.d/virtio_scsi_rs.conf" "$work/modprobe-rust.conf"
dracut_in_tree /tmp/initramfs-c.img
mv "$tree/tmp/initramfs-c.img" "$out/initramfs-c.img"
mv "$work/modprobe-rust.conf" "$tree/etc/modprobe.d/virtio_scsi_rs.conf"
for m in "${mounts[@]}"; do umount "$m"; done
mounts=()

# The root filesystem from the tree, and a GPT disk with it as partition 1.
rm -f "$work/root.ext4" "$out/disk.raw"
mke2fs -q -t ext4 -L root -U "$uuid" -d "$tree" "$work/root.ext4" "${FS_MIB}M" > /dev/null
truncate -s $(( (PART_START_MIB + FS_MIB + 1) << 20 )) "$out/disk.raw.tmp"
printf 'label: gpt\nstart=%d, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n' \
	$((PART_START_MIB << 11)) $((FS_MIB << 11)) | sfdisk -q "$out/disk.raw.tmp"
dd if="$work/root.ext4" of="$out/disk.raw.tmp" bs=1M seek=$PART_START_MIB conv=notrunc,sparse status=none
mv "$out/disk.raw.tmp" "$out/disk.raw"
echo "$uuid" > "$out/root-uuid"
echo "$rel" > "$out/kernel-release"
echo $((PART_START_MIB << 20)) > "$out/part-offset"
echo $((FS_MIB << 20)) > "$out/part-size"
cp "$kdir/arch/x86/boot/bzImage" "$out/vmlinuz"
echo "$key" > "$out/.key"
log "image $key ($rel, root UUID $uuid) in $out, $((SECONDS - t0)) s"
