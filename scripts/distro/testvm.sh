#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The distro guest configured as a test VM: what a Debian bookworm system starts
# at every boot that a VM without a display, network, package updates or other
# storage stacks never uses. scripts/distro/mkimage.sh runs this on the image's
# tree before dracut (part of the image's cache key).
#
#   scripts/distro/testvm.sh TREE
#
# A systemd boot of the debug kernel (KASAN, lockdep, kmemleak) under TCG pays
# for every process it starts, about 0.1 to 0.5 s each, so that is what goes:
# units and generators that would start a program to find nothing to do. Each
# item says why the guest does not need it. What the tests check is untouched:
# the initramfs is still dracut's generic (hostonly=no) one with the driver in
# it because of the installed dracut.conf.d file, udev still loads the driver
# by its alias, the root is still found by UUID, and systemd still starts every
# unit a server's multi-user.target has (journald with the persistent journal,
# udevd and its coldplug, logind, dbus, the serial getty).
set -euo pipefail

tree=${1:?usage: testvm.sh TREE}
units=$tree/etc/systemd/system
mask() {
	local u
	for u; do ln -sfn /dev/null "$units/$u"; done
}
disable() {
	local u
	for u; do rm -f "$units"/*.wants/"$u"; done
}

# Timers of a long-lived system: package lists and upgrades, dpkg database
# backups, weekly fstrim, ext4 scrubbing of LVM snapshots. A test VM lives
# minutes on a throwaway overlay; apt has no network here anyway.
disable apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer e2scrub_all.timer
# e2scrub's boot-time cleanup of LVM snapshots (a script that runs lvs): no LVM.
mask e2scrub_reap.service

# The login prompt is the serial getty on the console (console=ttyS0, started by
# systemd-getty-generator); QEMU runs with -nodefaults -display none, so tty1's
# getty would wait on a virtual terminal nobody sees.
disable getty@tty1.service

# The coldplug after the switch to the root skips the virtual terminals: the
# kernel's tty0 to tty63 and 21 vc nodes are 85 of the 215 devices udev
# replays (a full coldplug took 26 s here, 0.12 s a device), and with
# -display none and tty1's getty gone nothing opens one. The serial ports and
# /dev/tty, /dev/console and /dev/ptmx are still replayed (the serial getty
# waits for dev-ttyS0.device). The initramfs's systemd-udev-trigger.service
# gets the same drop-in (install_items in the dracut.conf.d file below): its
# coldplug took 15 s of the initramfs, most of it on the virtual terminals.
mkdir -p "$units/systemd-udev-trigger.service.d"
cat > "$units/systemd-udev-trigger.service.d/10-vscsi-testvm.conf" <<'CONF'
# Written by virtio-scsi-rs's scripts/distro/testvm.sh: no coldplug of the virtual terminals.
[Service]
ExecStart=
ExecStart=-udevadm trigger --type=all --action=add --prioritized-subsystem=module,block,tpmrm,net,tty,input --subsystem-nomatch=tty --subsystem-nomatch=vc
ExecStart=-udevadm trigger --type=devices --action=add --subsystem-match=tty --sysname-match=ttyS* --sysname-match=tty --sysname-match=console --sysname-match=ptmx
CONF

# systemd-sysusers creates the users and groups of sysusers.d that do not exist
# yet. Debian's packages create theirs when installed, so in this image it finds
# every one there; it still runs at every boot (ConditionNeedsUpdate=/etc, and
# bookworm has no systemd-update-done to record that /etc is up to date), 3 to
# 6 s of each boot on the critical chain to sysinit.target.
mask systemd-sysusers.service

# dracut-shutdown unpacks the initramfs into /run at shutdown so that
# systemd-shutdown can switch back into it, for roots that userspace must tear
# down (dm, md, network). An ext4 root on a partition is unmounted, or remounted
# read-only, by systemd-shutdown itself: the host's e2fsck after poweroff checks
# that it was.
mask dracut-shutdown.service

# Modules systemd loads at boot by name (modprobe@.service) for filesystems and
# devices the kernel may have as modules: configfs, device-mapper, DRM, EFI
# pstore, FUSE, loop. The project's kernels (scripts/kconfig/) have none of them
# as a module: each would be a modprobe that finds nothing.
mask modprobe@configfs.service modprobe@dm_mod.service modprobe@drm.service \
	modprobe@efi_pstore.service modprobe@fuse.service modprobe@loop.service

# Generators run at every boot and at every daemon-reload, each a program of
# its own. These find nothing to do in this image: no crypttab, veritytab or
# integritytab, no resume= or hibernation image, the root given by fstab and
# root=UUID (gpt-auto's partition discovery is for images without either), no
# rc.local, no SysV init script that lacks a unit (fio's is not enabled), no
# system-update symlink, no systemd.run= on the command line. The fstab, getty
# and debug generators stay.
mkdir -p "$tree/etc/systemd/system-generators"
for g in systemd-cryptsetup-generator systemd-veritysetup-generator systemd-integritysetup-generator \
	systemd-hibernate-resume-generator systemd-gpt-auto-generator systemd-rc-local-generator \
	systemd-sysv-generator systemd-system-update-generator systemd-run-generator; do
	ln -sfn /dev/null "$tree/etc/systemd/system-generators/$g"
done

# The initramfs: still generic (hostonly=no, written by mkimage.sh), but
# without the dracut modules of storage stacks and boot paths this VM does not
# have: encrypted, device-mapper, LVM, MD RAID, NVDIMM or virtiofs roots, a
# separate /usr, resume from hibernation, LUN masking, terminfo for a shell.
# Their udev rules and generators would run on every device of every boot. The
# driver gets in as before, because of /etc/dracut.conf.d/virtio_scsi_rs.conf.
# And uncompressed: the kernel's gunzip of the 12 MB image took 3.3 s of every
# boot under TCG ("Unpacking initramfs" to "Freeing initrd memory"); QEMU loads
# the larger file in no time.
cat > "$tree/etc/dracut.conf.d/20-vscsi-testvm.conf" <<'CONF'
# Written by virtio-scsi-rs's scripts/distro/testvm.sh: a test VM's root is a plain ext4 partition.
omit_dracutmodules+=" crypt dm lvm mdraid dmraid multipath nvdimm virtiofs usrmount resume lunmask terminfo "
compress="cat"
install_items+=" /etc/systemd/system/systemd-udev-trigger.service.d/10-vscsi-testvm.conf "
CONF
