# SPDX-License-Identifier: GPL-2.0
"""The same guest sees the same thing through either driver: lsscsi, /dev names, SG_IO answers.

Each test loads the C driver, records, unloads it, loads the Rust driver, records again, and
compares. Host numbers differ (each load makes a new host) and are normalised.
"""

import re

import pytest

from harness.guest import DRIVERS
from harness.plugin import report, run_table
from harness.topology import Controller, Disk, Topology

TOPOLOGY = Topology(
    [
        Controller(
            num_queues=2,
            disks=[
                Disk(target=0, lun=0, size=1 << 30),
                Disk(target=1, lun=0, size=2 << 30),
                Disk(target=1, lun=1, size=3 << 30),
                Disk(target=1, lun=3, size=4 << 30),
                Disk(target=4, lun=0, backend="file", size=16 << 20),
                Disk(target=7, lun=300, size=5 << 30),
                Disk(target=255, lun=0, size=6 << 30),
            ],
        )
    ]
)
NDEV = 7


def record(g, driver, script):
    name = g.load_driver(driver)
    g.wait_for(f"[ $(ls /sys/class/scsi_device | wc -l) -ge {NDEV} ]", what=f"{NDEV} SCSI devices")
    out = g.sh(script)
    g.sh(f"rmmod {name}")
    return re.sub(r"\[\d+:", "[H:", out)


def both(g, script):
    return record(g, "c", script), record(g, "rust", script)


@pytest.mark.shared_guests("parity")
def test_lsscsi_and_names_match(make_guest):
    g = make_guest(TOPOLOGY, scan="all")
    # sd probes disks asynchronously, so which H:C:T:L gets which sdX varies from
    # boot to boot under either driver; the devices, their sizes and the set of
    # names must match.
    script = (
        "lsscsi -s | awk '{$(NF-1)=\"\"; print}'; lsscsi -g | awk '{print $1}';"
        " for d in /sys/block/sd*; do echo $(basename $d); done;"
        " for d in /sys/block/sd*; do echo $(basename $(readlink $d/device)) $(cat $d/size); done | sort;"
        # Negotiated feature bits: device (HOTPLUG, CHANGE; QEMU offers no T10_PI) and transport.
        " cat /sys/bus/virtio/devices/virtio*/features"
    )
    c, rust = both(g, script)
    assert c == rust
    # LUN 300 is reported in the flat space: Linux numbers it 0x4000 + 300.
    assert "[H:0:7:16684]" in c, c
    assert len(re.findall(r"^sd[a-z]+$", c, re.M)) == NDEV, c


@pytest.mark.shared_guests("parity")
def test_sg_io_answers_match(make_guest):
    g = make_guest(TOPOLOGY, scan="all")
    script = (
        "set -e; d=$(lsscsi -g | awk '$3==\"QEMU\" && $0 ~ /:4:0\\]/ {print $NF}');"
        " sg_inq $d; sg_vpd -p 0x83 $d; sg_vpd -p bl $d; sg_readcap -l $d; sg_luns $d; sg_turs -v $d;"
        " echo '--- unsupported opcode';"
        " set +e; sg_raw -v $d 0xff 0 0 0 0 0 2>&1; echo rc=$?"
    )
    c, rust = both(g, script)
    assert c == rust
    # The unsupported opcode comes back as CHECK CONDITION with its sense intact:
    # ILLEGAL REQUEST, invalid command operation code (20/00).
    tail = c.split("--- unsupported opcode", 1)[1]
    assert re.search(r"Check Condition", tail, re.I), tail
    assert re.search(r"Illegal Request", tail, re.I), tail
    assert re.search(r"Invalid command operation code", tail, re.I), tail
    assert "rc=0" not in tail


# One controller with every target ID and a few targets full of LUNs: the target scan (256
# INQUIRYs, 252 of them answered by LUN 0 alone) and REPORT LUNS with 64 LUNs per target, 508
# disks in all (256 targets and 8 x 64 LUNs, the same paths at 768 disks, cost two minutes more of
# the debug kernel's probe and removal, about 0.1 s a disk per driver). Each driver's case boots a
# guest of its own, so the two run side by side on two workers: in one guest the C driver's rmmod
# stood between the two scans (52 s of 508 disks' removal, which is not this project's code).
SCALE_TARGETS = 256
SCALE_FULL_TARGETS = 4
SCALE_LUNS = 64
SCALE_DISKS = SCALE_FULL_TARGETS * SCALE_LUNS + SCALE_TARGETS - SCALE_FULL_TARGETS


def sd_name(index):
    """The sd driver's name of its index-th disk (sd_format_disk_name(): sda..sdz, sdaa..sdzz, ...)."""
    name = ""
    while index >= 0:
        name = chr(ord("a") + index % 26) + name
        index = index // 26 - 1
    return "sd" + name


@pytest.mark.cost(150)
def test_scale_256_targets_and_64_luns_per_target(make_guest, driver):
    """256 targets, 4 of them with 64 LUNs, on one controller: all 508 disks visible, with their
    /dev/sdX names; the insmod + scan time reported, beside the other driver's once both ran. The
    Rust driver's rmmod then removes every disk."""
    disks = [Disk(target=t, lun=lun, size=1 << 20)
             for t in range(SCALE_TARGETS) for lun in range(SCALE_LUNS if t < SCALE_FULL_TARGETS else 1)]
    assert len(disks) == SCALE_DISKS
    g = make_guest(Topology([Controller(num_queues=2, disks=disks)]), mem="2G", scan="all", shared=False)
    name, path = DRIVERS[driver]
    out = g.sh(f"s=$(cut -d' ' -f1 /proc/uptime); insmod {path}; e=$(cut -d' ' -f1 /proc/uptime);"
               " echo $s $e; ls /sys/class/scsi_device | wc -l; ls -d /sys/block/sd* | wc -l;"
               " ls /sys/class/scsi_device | cut -d: -f3 | sort -u | wc -l;"
               " ls /sys/class/scsi_device | awk -F: '$3 == 0' | wc -l; ls /sys/block | grep '^sd'", timeout=900)
    start, end, *counts = out.split()
    names, counts = set(counts[4:]), counts[:4]
    # Disks, sd nodes, distinct targets, LUNs of target 0; the names sd's first 508: sda to sdsn.
    assert counts == [str(SCALE_DISKS), str(SCALE_DISKS), str(SCALE_TARGETS), str(SCALE_LUNS)], (driver, out)
    assert names == {sd_name(i) for i in range(SCALE_DISKS)}, sorted(names ^ {sd_name(i) for i in range(SCALE_DISKS)})
    times = run_table("scale-scan", driver, float(end) - float(start))
    report(f"insmod + scan of 256 targets, {SCALE_DISKS} disks (guest uptime): {driver} {times[driver]:.1f} s")
    if len(times) == 2:
        report(f"insmod + scan of 256 targets, {SCALE_DISKS} disks: C {times['c']:.1f} s, Rust {times['rust']:.1f} s")
    if driver == "rust":
        g.sh(f"rmmod {name}", timeout=600)
        assert g.sh("ls /sys/class/scsi_device | wc -l; ls /sys/class/scsi_host | wc -l").split() == ["0", "0"]
