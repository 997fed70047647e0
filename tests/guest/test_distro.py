# SPDX-License-Identifier: GPL-2.0
"""A distro guest with its root disk on the driver (issue 13): Debian bookworm with systemd, udev
and dracut on the project's debug kernel, booted as a cloud test VM is (direct kernel boot, the
image's dracut initramfs, root=UUID on a scsi-hd of a virtio-scsi controller). The module is
installed as an administrator does (`make install`: under updates/, virtio_scsi blacklisted,
virtio_scsi_rs added to the initramfs); the C baseline boots the initramfs the administrator's
way back builds (the modprobe.d file removed, the initramfs rebuilt). See
scripts/distro/ and Documentation/testing.rst.

A systemd boot of a KASAN kernel under TCG takes minutes, so each driver's case is one chain of
steps through a few boots: boot to multi-user.target, the root disk's driver, the journal, fio on
a second disk, a hot-plugged disk's udev links, suspend to idle and resume, `systemctl reboot`,
a crash under write load and the journal replay of the next boot, `systemctl poweroff`, and a
host-side fsck of the root filesystem."""

import re
import time

import pytest

from harness.distro import DistroGuest
from harness.plugin import report, run_table
from harness.topology import Controller, Disk, Topology

DRIVER_NAME = {"rust": "virtio_scsi_rs", "c": "virtio_scsi"}

# Units allowed to have failed in `systemctl is-system-running` ("degraded"), and why.
MAY_FAIL = {}

def root_driver(g):
    """The driver bound to the virtio device under the root filesystem's disk, and that disk."""
    out = g.sh(
        "src=$(findmnt -no SOURCE /); disk=$(lsblk -no PKNAME \"$src\")\n"
        "d=$(readlink -f /sys/class/block/$disk/device)\n"
        "while [ \"$d\" != / ]; do case ${d##*/} in virtio[0-9]*) break ;; esac; d=${d%/*}; done\n"
        "echo $src $disk $(basename $(readlink $d/driver))"
    )
    src, disk, name = out.split()
    return name, src, disk


def check_boot(g, driver, image):
    """multi-user.target reached, nothing failed but what MAY_FAIL names, the root filesystem by
    UUID on a disk of `driver`, no kernel report in this boot's journal."""
    state = g.run("systemctl is-system-running --wait", timeout=600, check=False)[1].strip()
    failed = g.sh("systemctl list-units --state=failed --plain --no-legend --no-pager | awk '{print $1}'").split()
    unexpected = [u for u in failed if u not in MAY_FAIL]
    assert state in ("running", "degraded") and not unexpected, (
        f"system {state}, failed units {failed}:\n" + g.sh("systemctl status --no-pager --lines=20 " + " ".join(failed) + " || true")
    )
    assert g.sh("systemctl is-active multi-user.target").strip() == "active"
    assert f"root=UUID={image.uuid}" in g.sh("cat /proc/cmdline")
    name, src, disk = root_driver(g)
    assert name == DRIVER_NAME[driver], f"root {src} on {disk} bound to {name}"
    assert g.sh("findmnt -no UUID /").strip() == image.uuid
    reports = g.journal_reports()
    assert not reports, "kernel reports in the journal:\n" + "\n\n".join(map(str, reports))
    # The coldplug replayed the built-in modules' events too (scripts/distro/testvm.sh trims
    # only the virtual terminals): 60-block.rules set the media-change polling interval.
    assert g.sh("cat /sys/module/block/parameters/events_dfl_poll_msecs").strip() == "2000"
    analyze = g.sh("systemd-analyze time --no-pager").strip().replace("\n", "; ")
    report(f"distro {driver}: boot {len(g.boots)} to @@READY {g.boots[-1]:.0f} s; {analyze}")


def by_id(serial):
    return f"/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_{serial}"


@pytest.mark.cost(900)
def test_distro_root_on_driver(make_guest, distro_image, driver, tmp_path):
    t0 = time.monotonic()
    image = distro_image
    root = image.overlay(str(tmp_path / "root.qcow2"))
    topo = Topology([Controller(disks=[root, Disk(backend="file", size=256 << 20, target=1, props={"serial": "data"})])])
    g = make_guest(
        topo, smp=1, mem="1G", append=image.append(), scan="all", shared=False,
        kernel=image.kernel, initrd=image.initrd(driver), cls=DistroGuest,
    )
    assert isinstance(g, DistroGuest)

    # Boot: multi-user.target with the root disk on the driver; how long systemd took.
    check_boot(g, driver, image)
    modules = g.sh("lsmod | awk 'NR > 1 && /^virtio_scsi/ {print $1}'").split()
    report(f"distro {driver}: modules loaded {sorted(modules)}")

    # fio with verification on the second disk.
    g.sh(
        f"fio --name=verify --filename={by_id('data')} --rw=randwrite --bs=4k --size=8M --ioengine=libaio"
        " --iodepth=16 --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 --output-format=terse",
        timeout=600,
    )

    # A hot-plugged disk under systemd/udev: its persistent names.
    g.qmp("blockdev-add", **{"node-name": "hot1", "driver": "null-co", "size": 64 << 20, "read-zeroes": True})
    g.qmp("device_add", driver="scsi-hd", id="hot1d", drive="hot1", bus="vs0.0", channel=0, lun=0, serial="hot1",
          **{"scsi-id": 2})
    g.wait_for(f"[ -e {by_id('hot1')} ]", timeout=120, what="the hot-plugged disk's by-id link")
    g.wait_for("ls /dev/disk/by-path | grep -q -- '-scsi-0:0:2:0$'", timeout=60, what="its by-path link")
    # Every link to the disk's node (test -ef follows links: no readlink per link, each a
    # program start of a tenth of a second or more).
    links = g.sh(
        "for l in /dev/disk/by-id/* /dev/disk/by-path/*; do [ $l -ef " + by_id("hot1") + " ] && echo ${l#/dev/disk/}; done"
    ).split()
    # Each driver's case may run on another worker: the one that finds both compares.
    both = run_table("distro-hotplug-links", driver, sorted(links))
    assert len(both) < 2 or both["rust"] == both["c"], f"hot-plugged disk's links differ: {both}"
    assert by_id("hot1")[len("/dev/disk/"):] in links, links

    # Suspend to idle and resume with the root disk on the driver, then I/O on the root disk.
    assert g.suspend_to_idle() == 1
    g.sh("dd if=/dev/urandom of=/var/tmp/resumed bs=64k count=64 conv=fsync status=none\n"
         "a=$(sha256sum < /var/tmp/resumed); echo 3 > /proc/sys/vm/drop_caches\n"
         "[ \"$(dd if=/var/tmp/resumed bs=64k iflag=direct status=none | sha256sum)\" = \"$a\" ]")

    if driver == "c":
        # The baseline ends here: reboots and a crash with the root disk on the C driver test
        # the kernel, and each boot costs minutes.
        return finish(g, image, driver, tmp_path, t0)

    # systemctl reboot: the same root, the same driver.
    g.check_reports()
    g.reboot()
    check_boot(g, driver, image)

    # A crash under write load on the root filesystem; the next boot replays the journal.
    g.sh("echo before-the-crash > /root/synced && sync /root/synced")
    g.expect_report(r"sysrq triggered crash")
    g.check_reports()
    g.trigger(
        "fio --name=load --directory=/var/tmp --rw=write --bs=64k --size=32M --numjobs=2 --time_based"
        " --runtime=600 >/dev/null 2>&1 &\n"
        "while :; do f=/var/tmp/o$RANDOM; echo x > $f; rm -f $f; done &\n"
        "sleep 4; echo c > /proc/sysrq-trigger"
    )
    g.wait_ready("the boot after the crash")
    check_boot(g, driver, image)
    # The guest boots with fsck.mode=skip (see DistroImage.append): the initramfs's mount of the
    # root replays the journal ("recovery complete"); an e2fsck at boot would say "recovering
    # journal" instead. The host's e2fsck -fn after the poweroff checks what the replay left.
    log = g.sh("{ journalctl -b -o cat --no-pager; dmesg; } | grep -E 'EXT4-fs|recovering journal|orphan' || true",
               timeout=300)
    replay = re.findall(r"^.*(?:recovering journal|recovery complete|orphan).*$", log, re.M | re.I)
    assert replay, f"no journal replay after the crash:\n{log}"
    report(f"distro {driver}: after the crash: {'; '.join(line.strip() for line in replay)}")
    assert g.sh("cat /root/synced").strip() == "before-the-crash"

    finish(g, image, driver, tmp_path, t0)


def finish(g, image, driver, tmp_path, t0):
    """A clean poweroff (QEMU exits by itself), then the root filesystem is clean on the host."""
    g.check_reports()
    g.poweroff()
    rc, out = image.fsck(str(tmp_path / "root.qcow2"), str(tmp_path))
    assert rc == 0, f"e2fsck -fn of the root filesystem after poweroff: {rc}\n{out}"
    boots = ", ".join(f"{b:.0f}" for b in g.boots)
    report(f"distro {driver}: boots (s to @@READY) {boots}; the whole case {time.monotonic() - t0:.0f} s")
