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


def host_attrs(g, host="host*"):
    out = g.sh(f"cd /sys/class/scsi_host/{host}/ && for a in can_queue sg_tablesize cmd_per_lun nr_hw_queues; do echo $a=$(cat $a); done")
    return dict(line.split("=", 1) for line in out.split())


def host_of_target(g, target):
    """(SCSI host, its virtio device, the disk) of the LUN 0 at `target`: the tests below give
    each controller's disk a target id of its own, so that it tells the hosts apart."""
    out = g.sh(f"d=$(ls -d /sys/class/scsi_device/*:0:{target}:0); h=${{d##*/}}; h=host${{h%%:*}};"
               f" echo $h $(basename $(dirname $(readlink -f /sys/class/scsi_host/$h/device))) $(ls $d/device/block)")
    host, vdev, disk = out.split()
    return host, vdev, disk


def wait_for_disks(g, n):
    g.wait_for(f"[ $(ls /sys/block | grep -c '^sd') = {n} ]", what=f"{n} disks")


# Request queues asked for and what a 2-vCPU guest gets (capped at the CPU count): one
# controller each, in one guest, controller i's disk at target i. The tests that share a guest
# have names that sort together (test_host_limits*, test_odd_*): a worker keeps one idle guest,
# and runs a group's tests in the order of their names.
LIMIT_QUEUES = [(1, 1), (2, 2), (4, 2)]


def limits_topology():
    return Topology([Controller(id=f"vs{i}", num_queues=n, disks=[Disk(target=i)]) for i, (n, _) in enumerate(LIMIT_QUEUES)])


def test_host_limits(make_guest, driver):
    """Both drivers derive the same host limits from the same devices (2 vCPUs: queues capped at
    2): three controllers asking for 1, 2 and 4 request queues, in one guest."""
    g = make_guest(limits_topology(), smp=2)
    g.load_driver(driver)
    wait_for_disks(g, len(LIMIT_QUEUES))
    log = g.sh("dmesg")
    for target, (num_queues, hw_queues) in enumerate(LIMIT_QUEUES):
        host, vdev, disk = host_of_target(g, target)
        assert host_attrs(g, host) == dict(QEMU_DEFAULT_LIMITS, nr_hw_queues=str(hw_queues)), num_queues
        assert g.sh(f"cat /sys/block/{disk}/queue/max_hw_sectors_kb").strip() == "32767"
        assert g.sh(f"cat /sys/block/{disk}/device/queue_depth").strip() == "128"
        assert g.sh(f"ls /sys/block/{disk}/mq | wc -l").strip() == str(hw_queues)
        if driver == "rust":
            # Improvement: a clamped value is reported once (C clamps num_queues silently).
            warned = f"virtio_scsi_rs {vdev}: num_queues exceeds the CPU count" in log
            assert warned == (num_queues > hw_queues), (num_queues, log)


# Odd but valid QEMU settings: (props, host attributes other than the defaults, max_hw_sectors_kb).
ODD_SETTINGS = {
    # seg_max_adjust=off: seg_max = 128 - 2 = 126 (QEMU's old behaviour).
    "seg_max_adjust_off": ({"seg_max_adjust": False}, {"sg_tablesize": "126"}, "32767"),
    # A small transfer limit from the device is honoured.
    "max_sectors_64": ({"max_sectors": 64}, {}, "32"),
    # cmd_per_lun above the queue size is clamped to it.
    "cmd_per_lun_1000": ({"cmd_per_lun": 1000}, {"cmd_per_lun": "256"}, "32767"),
    # A small ring: can_queue and seg_max follow it.
    "virtqueue_size_16": ({"virtqueue_size": 16}, {"can_queue": "16", "sg_tablesize": "14", "cmd_per_lun": "16"}, "32767"),
}


def odd_topology():
    """A controller for each of ODD_SETTINGS, controller i's disk (8 MiB, a file) at target i."""
    return Topology([
        Controller(id=f"vs{i}", num_queues=1, props=props, disks=[Disk(backend="file", size=8 << 20, target=i)])
        for i, (props, _, _) in enumerate(ODD_SETTINGS.values())
    ])


def test_odd_device_settings(make_guest, driver):
    """Odd but valid QEMU settings give a working disk with the limits the device asked for: a
    controller for each, in one guest."""
    g = make_guest(odd_topology(), smp=1)
    g.load_driver(driver)
    wait_for_disks(g, len(ODD_SETTINGS))
    g.sh("dd if=/dev/urandom of=/tmp/pat bs=1M count=4 2>/dev/null")
    for target, (name, (props, attrs, max_hw_kb)) in enumerate(ODD_SETTINGS.items()):
        host, _, disk = host_of_target(g, target)
        want = dict(QEMU_DEFAULT_LIMITS, nr_hw_queues="1")
        want.update(attrs)
        assert host_attrs(g, host) == want, name
        assert g.sh(f"cat /sys/block/{disk}/queue/max_hw_sectors_kb").strip() == max_hw_kb, name
        g.sh(f"dd if=/tmp/pat of=/dev/{disk} bs=1M conv=fsync 2>/dev/null"
             f" && echo 3 > /proc/sys/vm/drop_caches && cmp /tmp/pat /dev/{disk} -n 4194304")


def test_odd_queue_depth_is_clamped(make_guest, driver):
    """A queue depth asked for through sysfs is capped at cmd_per_lun; the disk keeps working."""
    g = make_guest(odd_topology(), smp=1)  # test_odd_device_settings' guest
    g.load_driver(driver)
    wait_for_disks(g, len(ODD_SETTINGS))
    _, _, disk = host_of_target(g, 0)  # seg_max_adjust=off: cmd_per_lun is the default 128
    dev = f"/sys/block/{disk}/device/queue_depth"
    rc, out = g.run(f"echo 100000 > {dev}", check=False)
    assert g.sh(f"cat {dev}").strip() == "128"
    rc, out = g.run(f"echo 0 > {dev}", check=False)
    assert rc != 0, "a zero queue depth must be refused"
    g.sh(f"echo 4 > {dev}")
    assert g.sh(f"cat {dev}").strip() == "4"
    g.sh(f"dd if=/dev/{disk} of=/dev/null bs=1M count=8 2>/dev/null")


def test_host_limits_logged_once_per_host(make_guest):
    """The Rust driver logs what it took from the device, once per host."""
    g = make_guest(limits_topology(), smp=2)  # test_host_limits' guest
    g.load_driver("rust")
    log = g.sh("dmesg")
    lines = re.findall(r"virtio_scsi_rs virtio\d+: host\d+: (\d+) request queues, ring 256, sg 254, max_sectors 65535, cmd_per_lun 128, max_target 255", log)
    assert sorted(lines) == sorted(str(hw) for _, hw in LIMIT_QUEUES), log


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
