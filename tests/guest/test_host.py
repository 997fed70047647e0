# SPDX-License-Identifier: GPL-2.0
"""Host setup: limits from the device configuration, queue counts, clamping of bad values."""

import re

import pytest

from harness.topology import Controller, Disk, Topology

# The tests of this module share guests of the same configuration (tests/harness/plugin.py).
pytestmark = pytest.mark.shared_guests

# What QEMU 7.2's defaults give, per the C driver: ring 256, seg_max 254,
# max_sectors 65535, cmd_per_lun 128, max_target 255, max_lun 16383.
QEMU_DEFAULT_LIMITS = {"can_queue": "256", "sg_tablesize": "254", "cmd_per_lun": "128"}


def host_attrs(g):
    out = g.sh("cd /sys/class/scsi_host/host*/ && for a in can_queue sg_tablesize cmd_per_lun nr_hw_queues; do echo $a=$(cat $a); done")
    return dict(line.split("=", 1) for line in out.split())


@pytest.mark.parametrize("num_queues, hw_queues", [(1, 1), (2, 2), (4, 2)])
def test_host_limits(make_guest, driver, num_queues, hw_queues):
    """Both drivers derive the same host limits from the same device (2 vCPUs: queues capped at 2)."""
    g = make_guest(Topology([Controller(num_queues=num_queues, disks=[Disk()])]), smp=2)
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    attrs = host_attrs(g)
    assert attrs == dict(QEMU_DEFAULT_LIMITS, nr_hw_queues=str(hw_queues))
    assert g.sh("cat /sys/block/sda/queue/max_hw_sectors_kb").strip() == "32767"
    assert g.sh("cat /sys/block/sda/device/queue_depth").strip() == "128"
    assert g.sh("ls /sys/block/sda/mq | wc -l").strip() == str(hw_queues)
    if driver == "rust":
        log = g.sh("dmesg")
        # Improvement: a clamped value is reported once (C clamps num_queues silently).
        warned = "num_queues exceeds the CPU count" in log
        assert warned == (num_queues > hw_queues), log


@pytest.mark.parametrize(
    "props, attrs, max_hw_kb",
    [
        # seg_max_adjust=off: seg_max = 128 - 2 = 126 (QEMU's old behaviour).
        ({"seg_max_adjust": False}, {"sg_tablesize": "126"}, "32767"),
        # A small transfer limit from the device is honoured.
        ({"max_sectors": 64}, {}, "32"),
        # cmd_per_lun above the queue size is clamped to it.
        ({"cmd_per_lun": 1000}, {"cmd_per_lun": "256"}, "32767"),
        # A small ring: can_queue and seg_max follow it.
        ({"virtqueue_size": 16}, {"can_queue": "16", "sg_tablesize": "14", "cmd_per_lun": "16"}, "32767"),
    ],
    ids=["seg_max_adjust_off", "max_sectors_64", "cmd_per_lun_1000", "virtqueue_size_16"],
)
def test_odd_device_settings(make_guest, driver, props, attrs, max_hw_kb):
    """Odd but valid QEMU settings give a working disk with the limits the device asked for."""
    g = make_guest(Topology([Controller(num_queues=1, props=props, disks=[Disk(backend="file", size=8 << 20)])]), smp=1)
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    want = dict(QEMU_DEFAULT_LIMITS, nr_hw_queues="1")
    want.update(attrs)
    assert host_attrs(g) == want
    assert g.sh("cat /sys/block/sda/queue/max_hw_sectors_kb").strip() == max_hw_kb
    g.sh("dd if=/dev/urandom of=/tmp/pat bs=1M count=4 2>/dev/null && dd if=/tmp/pat of=/dev/sda bs=1M conv=fsync 2>/dev/null"
         " && echo 3 > /proc/sys/vm/drop_caches && cmp /tmp/pat /dev/sda -n 4194304")


def test_absurd_queue_depth_is_clamped(make_guest, driver):
    """A queue depth asked for through sysfs is capped at cmd_per_lun; the disk keeps working."""
    g = make_guest(Topology([Controller(num_queues=1, disks=[Disk(backend="file", size=8 << 20)])]), smp=1)
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    rc, out = g.run("echo 100000 > /sys/block/sda/device/queue_depth", check=False)
    assert g.sh("cat /sys/block/sda/device/queue_depth").strip() == "128"
    rc, out = g.run("echo 0 > /sys/block/sda/device/queue_depth", check=False)
    assert rc != 0, "a zero queue depth must be refused"
    g.sh("echo 4 > /sys/block/sda/device/queue_depth")
    assert g.sh("cat /sys/block/sda/device/queue_depth").strip() == "4"
    g.sh("dd if=/dev/sda of=/dev/null bs=1M count=8 2>/dev/null")


def test_rust_reads_config_once_per_host(make_guest):
    """The Rust driver logs what it took from the device, once per host."""
    g = make_guest(Topology([Controller(num_queues=2), Controller(id="vs1", num_queues=1)]), smp=2)
    g.load_driver("rust")
    log = g.sh("dmesg")
    lines = re.findall(r"virtio_scsi_rs virtio\d+: host\d+: (\d+) request queues, ring 256, sg 254, max_sectors 65535, cmd_per_lun 128, max_target 255", log)
    assert sorted(lines) == ["1", "2"], log


def test_num_queues_zero_is_refused_by_qemu():
    """num_queues=0 never reaches a driver: QEMU 7.2 refuses the device. The driver's clamp of a
    zero (one warning, one queue) is covered by the protocol self-tests, on the host and in KUnit
    (`zero_values_are_clamped_and_reported`)."""
    import subprocess

    from harness.guest import QEMU

    r = subprocess.run(
        [QEMU, "-M", "q35", "-accel", "tcg", "-nodefaults", "-display", "none", "-S",
         "-device", "virtio-scsi-pci,num_queues=0"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode != 0
    assert "Invalid number of queues (= 0)" in r.stderr
