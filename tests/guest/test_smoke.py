# SPDX-License-Identifier: GPL-2.0
"""Smoke tests: the harness works, and both drivers bind, unbind and read a disk."""

import hashlib
import os

import pytest

from harness.topology import Controller, Disk, Topology


@pytest.mark.shared_guests("no-controller")
def test_command_channel(make_guest):
    """Commands run in the guest with their output and exit status."""
    g = make_guest(Topology(controllers=[]), smp=1)
    assert g.sh("echo hello") == "hello\n"
    rc, out = g.run("echo to-stderr >&2; exit 3", check=False)
    assert (rc, out) == (3, "to-stderr\n")
    big = g.sh("seq 1 20000")
    assert big.split() == [str(i) for i in range(1, 20001)]


@pytest.mark.shared_guests
def test_bind_unbind_rmmod(make_guest, driver):
    """The driver binds to virtio device id 8, unbinds and rebinds through sysfs, and unloads."""
    g = make_guest(Topology([Controller(num_queues=2, disks=[Disk()])]))
    name = g.load_driver(driver)
    devs = g.sh(f"cd /sys/bus/virtio/drivers/{name} && ls -d virtio*").split()
    assert len(devs) == 1
    dev = devs[0]
    assert g.sh(f"cat /sys/bus/virtio/devices/{dev}/device").strip() == "0x0008"
    g.sh(f"echo {dev} > /sys/bus/virtio/drivers/{name}/unbind")
    g.sh(f"[ ! -e /sys/bus/virtio/devices/{dev}/driver ]")
    g.sh(f"echo {dev} > /sys/bus/virtio/drivers/{name}/bind")
    g.wait_for(f"[ -e /sys/bus/virtio/drivers/{name}/{dev} ]", what="rebind")
    g.sh(f"rmmod {name}")
    g.sh(f"[ ! -e /sys/bus/virtio/devices/{dev}/driver ] && [ ! -e /sys/module/{name} ]")


def test_disk_readable(make_guest, driver, tmp_path):
    """A raw-file disk shows up as /dev/sda and reads back what the host wrote."""
    image = tmp_path / "disk.img"
    data = os.urandom(4 << 20)
    image.write_bytes(data)
    g = make_guest(Topology([Controller(disks=[Disk(backend="file", path=str(image))])]), smp=1)
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", timeout=15, what="/dev/sda")
    assert "QEMU HARDDISK" in g.sh("lsscsi")
    out = g.sh("dd if=/dev/sda bs=1M count=4 2>/dev/null | sha256sum")
    assert out.split()[0] == hashlib.sha256(data).hexdigest()


@pytest.mark.shared_guests
@pytest.mark.parametrize("driver", ["rust"])
def test_bad_module_parameters(make_guest, driver):
    """The Rust driver's own parameters refuse what they cannot mean, with a message, at insmod
    and at run time, and keep their value; good values are taken. (C has neither parameter.)"""
    g = make_guest(Topology([Controller(num_queues=2, disks=[Disk()])]))
    path = "/lib/modules/virtio_scsi_rs.ko"
    for bad in ("timeout_policy=bogus", "stall_limit=0", "stall_limit=86401", "stall_limit=x", "tmf_timeout=0",
                "tmf_timeout=3601"):
        rc, out = g.run(f"insmod {path} {bad}", check=False)
        assert rc != 0, (bad, out)
        assert not g.sh("ls -d /sys/module/virtio_scsi_rs 2>/dev/null || true").strip()
    log = g.sh("dmesg | grep 'virtio_scsi_rs: \\(timeout_policy\\|stall_limit\\|tmf_timeout\\):' || true")
    assert "'bogus' is not one of stall, wait, abort" in log, log
    assert "'0' is not a number of seconds from 1 to 86400" in log, log
    assert "tmf_timeout: '3601' is not a number of seconds from 1 to 3600" in log, log
    g.load_driver(driver)
    params = "/sys/module/virtio_scsi_rs/parameters"
    assert g.sh(f"cat {params}/timeout_policy {params}/stall_limit {params}/tmf_timeout").split() == [
        "stall", "180", "30"]
    rc, _ = g.run(f"echo never > {params}/timeout_policy", check=False)
    assert rc != 0
    rc, _ = g.run(f"echo 0 > {params}/tmf_timeout", check=False)
    assert rc != 0
    g.sh(f"echo wait > {params}/timeout_policy && echo 600 > {params}/stall_limit && echo 10 > {params}/tmf_timeout")
    assert g.sh(f"cat {params}/timeout_policy {params}/stall_limit {params}/tmf_timeout").split() == [
        "wait", "600", "10"]
