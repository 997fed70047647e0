# SPDX-License-Identifier: GPL-2.0
"""The event queue, driven over QMP: hot-plug and hot-unplug (one, bursts larger than the event
ring, under load), capacity change with and without HOTPLUG, and removal of the whole controller.

Each scenario runs against both drivers. Where the C driver is known to lose an event, the C run is
marked as an expected failure with the reason (strict: if C starts passing, the mark must go).
"""

import pytest

from harness.guest import poll_loop
from harness.plugin import expect_c_failure, report
from harness.topology import Controller, Disk, Topology

GiB = 1 << 30


def disks(g):
    return int(g.sh("ls /sys/class/scsi_disk | wc -l").strip())


def node_args(name, size=GiB):
    return {"node-name": name, "driver": "null-co", "size": size, "read-zeroes": True}


def device_args(dev_id, node, target, lun=0):
    return {"driver": "scsi-hd", "id": dev_id, "bus": "vs0.0", "scsi-id": target, "lun": lun, "drive": node}


def sd_of(g, target, lun=0):
    """The sdX name of 0:0:target:lun on the last host."""
    return g.sh(f"ls /sys/class/scsi_host/$(ls /sys/class/scsi_host | tail -1)/device/target*:0:{target}/*:0:{target}:{lun}/block").strip()


def counters(g):
    """The Rust driver's debugfs counters, as {line-kind: {name: value}}."""
    out = g.sh("cat /sys/kernel/debug/virtio_scsi_rs/host*/queues")
    res = {}
    for line in out.splitlines():
        f = line.split()
        if f and f[0] in ("control", "event"):
            res[f[0]] = {f[i]: int(f[i + 1]) for i in range(1, len(f) - 1, 2)}
    return res


def one_disk(backend="null", **ctrl_props):
    return Topology([Controller(num_queues=2, disks=[Disk(backend=backend, size=GiB)], props=ctrl_props)])


def test_hot_add_one(make_guest, driver):
    # A hot-added LUN 0 makes both drivers scan its target (scsi_scan_target), which the midlayer
    # does only when it scans by itself: no scsi_mod.scan=manual here.
    g = make_guest(one_disk(), scan="all")
    g.load_driver(driver)
    g.wait_disks(1)
    g.qmp("blockdev-add", **node_args("hp0"))
    g.qmp("device_add", **device_args("hd-hp0", "hp0", 3))
    g.wait_disks(2, timeout=10)
    sd = sd_of(g, 3)
    g.sh(f"dd if=/dev/{sd} of=/dev/null bs=4k count=16 iflag=direct 2>/dev/null")


@pytest.mark.cost(90)
def test_hot_add_and_remove_16_in_one_burst(make_guest, driver):
    """16 device_add in one QMP burst (twice the event ring), then 16 device_del: the device
    drops events and says so (EVENTS_MISSED); the driver must still find every disk, and drop
    every removed one. A lost event makes the driver rescan the host, and a new LUN 0 its target,
    so the midlayer scans by itself here, as it does for users."""
    g = make_guest(one_disk(), scan="all")
    g.load_driver(driver)
    g.wait_disks(1)
    for i in range(16):
        g.qmp("blockdev-add", **node_args(f"hp{i}"))
    g.qmp_burst([("device_add", device_args(f"hd-hp{i}", f"hp{i}", 10 + i)) for i in range(16)])
    g.wait_disks(17, timeout=60)
    g.qmp_burst([("device_del", {"id": f"hd-hp{i}"}) for i in range(16)])
    g.wait_disks(1, timeout=60)
    # The remaining disk still works.
    g.sh("dd if=/dev/sda of=/dev/null bs=4k count=16 iflag=direct 2>/dev/null")
    if driver == "rust":
        # Every event buffer goes back to the device once its event is handled (the last may still
        # be in the event work when the last disk has gone).
        g.wait_for("grep -q '^event posted 8 ' /sys/kernel/debug/virtio_scsi_rs/host*/queues", timeout=60,
                   what="all 8 event buffers posted again", diagnose="cat /sys/kernel/debug/virtio_scsi_rs/host*/queues")
        c = counters(g)["event"]
        report(f"{driver}: 16+16 burst: {c['received']} events, {c['missed']} with EVENTS_MISSED")


@pytest.mark.parametrize("hotplug", [True, False], ids=["hotplug", "change-only"])
def test_capacity_change(make_guest, driver, request, hotplug):
    """block_resize → PARAM_CHANGE 2a/09 → the new size within 5 s (no I/O to the disk meanwhile:
    only the event can tell the guest)."""
    if not hotplug:
        expect_c_failure(request, driver, "posts event buffers only with HOTPLUG, so a CHANGE-only "
                         "device's PARAM_CHANGE is never delivered")
    props = {} if hotplug else {"hotplug": False}
    g = make_guest(one_disk("file", **props))  # null-co cannot be resized
    g.load_driver(driver)
    g.wait_disks(1)
    g.sh("[ $(cat /sys/block/sda/size) -eq 2097152 ]")
    g.qmp("block_resize", **{"node-name": "vs0-n0", "size": 2 * GiB})
    g.wait_for("[ $(cat /sys/block/sda/size) -eq 4194304 ]", timeout=5, what="sda grown to 2 GiB")


FIO_VERIFY = ("fio --name=v --filename=/dev/{dev} --direct=1 --ioengine=libaio --rw=randwrite --bs=4k"
              " --iodepth=8 --size=32m --verify=crc32c --verify_fatal=1 --verify_backlog=256 --time_based")


@pytest.mark.cost(260)
def test_hot_remove_under_load(make_guest, driver):
    """Unplug a disk while fio runs on it and on a neighbour: the removed disk's I/O ends with
    errors within 30 s, the neighbour's verify passes; then 50 plug/unplug cycles while the
    neighbour keeps verifying (fio rounds of 5 s, each checking its data and exiting 0)."""
    topo = Topology([Controller(num_queues=2, disks=[Disk(backend="file", size=64 << 20),
                                                     Disk(backend="null", size=GiB, target=1)])])
    g = make_guest(topo, smp=2, scan="all")  # hot-added LUN 0s: see test_hot_add_one
    g.load_driver(driver)
    g.wait_disks(2)
    victim = sd_of(g, 1)
    neighbour = sd_of(g, 0)
    g.sh(f"(fio --name=r --filename=/dev/{victim} --direct=1 --ioengine=libaio --rw=randread --bs=4k"
         f" --iodepth=16 --time_based --runtime=600 > /tmp/victim.log 2>&1; echo $? > /tmp/victim.rc) &")
    g.start_fio_rounds("n", FIO_VERIFY.format(dev=neighbour))
    g.wait_for(f"[ $(awk '$3==\"{victim}\" {{print $4}}' /proc/diskstats) -gt 100 ]",
               what="fio running on the victim")
    g.qmp("device_del", id="vs0-d1")
    g.wait_for("[ -e /tmp/victim.rc ]", timeout=30, what="fio on the removed disk to end")
    assert g.sh("cat /tmp/victim.rc").strip() != "0", g.sh("cat /tmp/victim.log")
    g.wait_disks(1)

    cycles = 50
    # One command a plug (the disk appears, it is read) and one an unplug: a command is a round
    # trip through the serial port and a fork of the guest's shell, 0.2 s each under TCG.
    host = "/sys/class/scsi_host/$(ls /sys/class/scsi_host | tail -1)/device"
    plugged = (poll_loop(f"d=$(ls {host}/target*:0:5/*:0:5:0/block 2>/dev/null) && [ -b /dev/$d ]", 30)
               + "; dd if=/dev/$d of=/dev/null bs=4k count=8 iflag=direct 2>/dev/null")
    for i in range(cycles):
        g.qmp("blockdev-add", **node_args(f"c{i}"))
        g.qmp("device_add", **device_args(f"hd-c{i}", f"c{i}", 5))
        rc, out = g.run(plugged, timeout=90, check=False)
        assert rc == 0, f"cycle {i}: the plugged disk did not appear within 30 s, or did not read: {out}"
        g.qmp("device_del", id=f"hd-c{i}")
        g.wait_disks(1)
        g.qmp("blockdev-del", **{"node-name": f"c{i}"})
    # The neighbour's rounds never failed, and its I/O still moves: stop them, the last one clean.
    assert not g.sh("ls /tmp/n.rc 2>/dev/null || true").strip(), g.sh("cat /tmp/n.rc /tmp/n.log")
    writes = f"$(awk '$3==\"{neighbour}\" {{print $8}}' /proc/diskstats)"
    done = int(g.sh(f"echo {writes}"))
    g.wait_for(f"[ {writes} -gt {done + 100} ]", what="the neighbour's writes to go on",
               diagnose=g.io_state(neighbour, log="/tmp/n.log"))
    rounds = g.stop_fio_rounds("n", neighbour)
    report(f"{driver}: hot-remove under load + {cycles} plug/unplug cycles: neighbour verified clean"
           f" in {rounds} fio rounds")


def test_controller_removed_under_io(make_guest, driver):
    """device_del of the whole controller (q35, PCIe root port) while fio runs: fio ends, the
    host goes away, nothing hangs, no kernel report."""
    topo = Topology([Controller(id="vs0", num_queues=2, root_port=True,
                                disks=[Disk(backend="null", size=GiB), Disk(backend="null", size=GiB, target=1)])])
    g = make_guest(topo, smp=2)
    g.load_driver(driver)
    g.wait_disks(2)
    g.sh("(fio --name=r --filename=/dev/sda --direct=1 --ioengine=libaio --rw=randread --bs=4k --iodepth=32"
         " --numjobs=2 --time_based --runtime=600 > /tmp/f.log 2>&1; echo $? > /tmp/f.rc) &")
    g.wait_for("[ $(awk '$3==\"sda\" {print $4}' /proc/diskstats) -gt 200 ]", what="fio running")
    g.qmp("device_del", id="vs0")
    g.wait_for("[ -z \"$(ls /sys/class/scsi_host)\" ]", timeout=60, what="the SCSI host to go away")
    g.wait_for("[ -e /tmp/f.rc ]", timeout=30, what="fio to end")
    g.wait_for("[ -z \"$(ls /sys/bus/virtio/devices)\" ]", timeout=30, what="the virtio device to go away")
