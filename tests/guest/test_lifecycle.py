# SPDX-License-Identifier: GPL-2.0
"""Load, bind and unbind cycles leave nothing behind: no kernel report, kmemleak clean."""

import pytest

from harness.guest import DRIVERS
from harness.topology import Controller, Disk, Topology

# The tests of this module share guests of the same configuration (tests/harness/plugin.py).
pytestmark = pytest.mark.shared_guests

CYCLES = 20

# Scanning all 256 targets takes seconds under TCG; these tests add target 0 by hand.
MANUAL_SCAN = "scsi_mod.scan=manual"


def add_and_read(g):
    g.sh("echo '0 0 0' > $(ls -d /sys/class/scsi_host/host* | tail -1)/scan")
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    g.sh("dd if=/dev/sda of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null")


def topology():
    return Topology([Controller(num_queues=2, disks=[Disk(backend="file", size=8 << 20)])])


def test_insmod_rmmod_cycles(make_guest, driver):
    g = make_guest(topology(), append=MANUAL_SCAN)
    name, path = DRIVERS[driver]
    for _ in range(CYCLES):
        g.sh(f"insmod {path}")
        add_and_read(g)
        g.sh(f"rmmod {name}")
        g.sh("[ ! -e /dev/sda ] && [ -z \"$(ls /sys/class/scsi_host)\" ]")


def test_unbind_bind_cycles(make_guest, driver):
    g = make_guest(topology(), append=MANUAL_SCAN)
    name = g.load_driver(driver)
    dev = g.sh(f"cd /sys/bus/virtio/drivers/{name} && ls -d virtio*").strip()
    add_and_read(g)
    for _ in range(CYCLES):
        g.sh(f"echo {dev} > /sys/bus/virtio/drivers/{name}/unbind")
        g.sh("[ ! -e /dev/sda ]")
        g.sh(f"echo {dev} > /sys/bus/virtio/drivers/{name}/bind")
        add_and_read(g)


def test_rmmod_refused_while_disk_open(make_guest, driver):
    """rmmod of a driver whose disk is mounted fails cleanly and the disk keeps working."""
    g = make_guest(topology())
    name = g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    g.sh("mkfs.ext4 -q -F /dev/sda && mkdir -p /mnt/t && mount /dev/sda /mnt/t && echo hi > /mnt/t/x")
    rc, out = g.run(f"rmmod {name}", check=False)
    assert rc != 0, out
    g.sh("sync && cat /mnt/t/x && umount /mnt/t")
    g.sh(f"rmmod {name}")
