# SPDX-License-Identifier: GPL-2.0
"""Data path: integrity under fio, transfer limits, flush/discard/write same, ext4, CD-ROM."""

import hashlib
import os

import pytest

from harness.topology import Controller, Disk, Topology

# The tests of this module share guests of the same configuration (tests/harness/plugin.py).
pytestmark = pytest.mark.shared_guests

FIO = "fio --output-format=terse --terse-version=3 --ioengine=libaio --direct=1 --filename=/dev/sda --name=v"


def disk_guest(make_guest, driver, size=128 << 20, **disk):
    # Two vCPUs: fio's jobs submit on both request queues (and the tests share this guest).
    g = make_guest(Topology([Controller(num_queues=2, disks=[Disk(backend="file", size=size, **disk)])]), smp=2)
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    return g


def test_fio_verify(make_guest, driver):
    """Random writes of 512 B to 1 MiB at queue depths 1 to 64 read back with matching crc32c."""
    g = disk_guest(make_guest, driver)
    for args in (
        "--rw=randwrite --bsrange=512-1m --iodepth=64 --size=64m",
        "--rw=randwrite --bs=512 --iodepth=1 --size=1m --offset=64m",
        "--rw=randwrite --bs=4k --iodepth=16 --numjobs=2 --size=8m --offset=80m --offset_increment=16m",
    ):
        g.sh(f"{FIO} {args} --verify=crc32c --do_verify=1 --verify_fatal=1 --norandommap --serialize_overlap=1",
             timeout=900)


def test_max_transfer_and_segments(make_guest, driver):
    """Requests at seg_max segments and at max_sectors move intact data."""
    g = disk_guest(make_guest, driver)
    assert g.sh("cat /sys/block/sda/queue/max_segments").strip() == "254"
    # Let single requests grow to the device's max_sectors (32767 KiB).
    g.sh("cat /sys/block/sda/queue/max_hw_sectors_kb > /sys/block/sda/queue/max_sectors_kb")
    # 1016 KiB of separate 4 KiB pages: 254 segments in one request.
    g.sh(f"{FIO} --rw=write --bs=1016k --iodepth=4 --size=32m --verify=crc32c --do_verify=1 --verify_fatal=1", timeout=600)
    # 32 MiB writes: split at max_sectors and max_segments.
    g.sh(f"{FIO} --rw=write --bs=32m --iodepth=2 --size=96m --verify=crc32c --do_verify=1 --verify_fatal=1", timeout=600)


def test_flush_discard_write_same(make_guest, driver):
    """SYNCHRONIZE CACHE, UNMAP and WRITE SAME reach the device and do what they say."""
    g = disk_guest(make_guest, driver, size=64 << 20, blockdev={"discard": "unmap"})
    g.sh("dd if=/dev/urandom of=/tmp/blk bs=512 count=1 2>/dev/null")
    g.sh("dd if=/dev/urandom of=/dev/sda bs=1M count=8 oflag=direct 2>/dev/null")
    g.sh("sg_sync /dev/sda")
    g.sh("sync /dev/sda")
    # WRITE SAME(16): one block repeated over 64 blocks at LBA 1024.
    g.sh("sg_write_same --16 --lba=1024 --num=64 --in=/tmp/blk /dev/sda")
    out = g.sh("dd if=/dev/sda bs=512 skip=1024 count=64 iflag=direct 2>/dev/null | md5sum; "
               "for i in $(seq 64); do cat /tmp/blk; done | md5sum")
    a, b = out.split("\n")[:2]
    assert a.split()[0] == b.split()[0], out
    # UNMAP through blkdiscard: the file backend punches a hole, reads give zeroes.
    assert int(g.sh("cat /sys/block/sda/queue/discard_max_bytes")) > 0
    g.sh("blkdiscard -o 0 -l 4194304 /dev/sda")
    out = g.sh("dd if=/dev/sda bs=1M count=4 iflag=direct 2>/dev/null | md5sum; head -c 4194304 /dev/zero | md5sum")
    a, b = out.split("\n")[:2]
    assert a.split()[0] == b.split()[0], out


def test_ext4(make_guest, driver):
    """mkfs, mount, write, unmount, fsck clean."""
    g = disk_guest(make_guest, driver)
    g.sh("mkfs.ext4 -q -F /dev/sda && mkdir -p /mnt/t && mount -t ext4 /dev/sda /mnt/t", timeout=300)
    g.sh("dd if=/dev/urandom of=/tmp/f bs=1M count=8 2>/dev/null && cp /tmp/f /mnt/t/f && mkdir /mnt/t/d"
         " && for i in $(seq 100); do echo $i > /mnt/t/d/$i; done && sync")
    g.sh("umount /mnt/t && echo 3 > /proc/sys/vm/drop_caches && mount -t ext4 -o ro /dev/sda /mnt/t"
         " && cmp /tmp/f /mnt/t/f && [ $(ls /mnt/t/d | wc -l) = 100 ] && umount /mnt/t")
    g.sh("e2fsck -f -n /dev/sda", timeout=300)


def test_cdrom_reads_back(make_guest, driver, tmp_path):
    """A scsi-cd reads back byte-exact through /dev/sr0."""
    image = tmp_path / "cd.iso"
    data = os.urandom(6 << 20)
    image.write_bytes(data)
    g = make_guest(Topology([Controller(disks=[Disk(backend="cd", path=str(image), target=2)])]), smp=1)
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sr0 ]", what="/dev/sr0")
    assert "cd/dvd" in g.sh("lsscsi")
    out = g.sh("dd if=/dev/sr0 bs=2048 2>/dev/null | sha256sum")
    assert out.split()[0] == hashlib.sha256(data).hexdigest()
