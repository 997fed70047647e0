# SPDX-License-Identifier: GPL-2.0
"""Error handling: task management through sg_reset under I/O, and command timeouts on a slow
back end. QEMU's own trace of the control queue (virtio_scsi_tmf_req/resp) shows which task
management functions reached the device and how it answered, for either driver.

Where the C driver lacks the behaviour, its run is an expected failure with the reason (strict).
"""

import re

import pytest

from harness.plugin import report
from harness.topology import Controller, Disk, Topology

GiB = 1 << 30

TMF_NAMES = {0: "ABORT TASK", 4: "I_T NEXUS RESET", 5: "LOGICAL UNIT RESET"}


def expect_c_failure(request, driver, reason):
    if driver == "c":
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"C driver: {reason}"))


def trace_args(tmp_path):
    return ["-trace", f"enable=virtio_scsi_tmf_*,file={tmp_path / 'trace.log'}"]


def tmfs(tmp_path):
    """[(subtype, response)] of every TMF the device answered, from QEMU's trace (read after the
    guest stopped, so the file is complete)."""
    text = (tmp_path / "trace.log").read_text() if (tmp_path / "trace.log").exists() else ""
    reqs = {}
    done = []
    for line in text.splitlines():
        m = re.search(r"virtio_scsi_tmf_req lun=\d+ tag=(0x[0-9a-f]+) subtype=(\d+)", line)
        if m:
            reqs.setdefault(m.group(1), []).append(int(m.group(2)))
            continue
        m = re.search(r"virtio_scsi_tmf_resp lun=\d+ tag=(0x[0-9a-f]+) response=(\d+)", line)
        if m and reqs.get(m.group(1)):
            done.append((reqs[m.group(1)].pop(0), int(m.group(2))))
    return done


FIO_VERIFY = ("fio --name=v --filename=/dev/sda --direct=1 --ioengine=libaio --rw=randwrite --bs=4k"
              " --iodepth=16 --size=32m --verify=crc32c --verify_fatal=1 --verify_backlog=256"
              " --time_based --runtime=600")


def ios_done(g, dev="sda"):
    return int(g.sh(f"awk '$3==\"{dev}\" {{print $4 + $8}}' /proc/diskstats").strip())


@pytest.mark.parametrize("kind,flag,subtype", [("device", "-d", 5), ("target", "-t", 4), ("host", "-H", 4)])
def test_sg_reset_under_io(make_guest, driver, request, tmp_path, kind, flag, subtype):
    """sg_reset on a disk with fio verifying on it: the reset succeeds, the device was asked for the
    matching TMF and answered it, I/O continues, and the data verifies."""
    if kind != "device":
        expect_c_failure(request, driver, f"has no {kind} reset handler; the ioctl escalates and fails")
    topo = Topology([Controller(num_queues=2, disks=[Disk(backend="file", size=64 << 20)])])
    g = make_guest(topo, qemu_args=trace_args(tmp_path))
    g.load_driver(driver)
    g.wait_for("[ -b /dev/sda ]", what="/dev/sda")
    g.sh(f"({FIO_VERIFY} > /tmp/v.log 2>&1; echo $? > /tmp/v.rc) &")
    g.wait_for("[ $(awk '$3==\"sda\" {print $8}' /proc/diskstats) -gt 500 ]", what="fio writing")
    rc, out = g.run(f"sg_reset {flag} /dev/sda", check=False)
    before = ios_done(g)
    g.wait_for(f"[ $(awk '$3==\"sda\" {{print $4 + $8}}' /proc/diskstats) -gt {before + 500} ]",
               what="I/O to continue after the reset")
    assert not g.sh("ls /tmp/v.rc 2>/dev/null || true").strip(), g.sh("cat /tmp/v.log")
    g.sh("killall -INT fio || true")
    g.wait_for("[ -e /tmp/v.rc ]", timeout=60, what="fio to finish")
    log = g.sh("cat /tmp/v.log")
    assert "err= 0" in log and "verify failed" not in log and "bad magic" not in log, log
    g.stop()
    answered = tmfs(tmp_path)
    report(f"{driver}: sg_reset {flag}: rc {rc}; TMFs answered: "
           + ", ".join(f"{TMF_NAMES.get(s, s)}={r}" for s, r in answered))
    assert rc == 0, out
    assert any(s == subtype and r == 0 for s, r in answered), answered


def test_timeout_aborts_slow_command(make_guest, driver, request, tmp_path):
    """A back end slower than the disk's timeout (null-co latency 4 s, timeout 2 s): the timed-out
    command is aborted (ABORT TASK reaches the device and is answered), the command is retried or
    failed, and the guest stays responsive meanwhile; no endless timer resets."""
    expect_c_failure(request, driver, "eh_timed_out always resets the timer: a slow command is never aborted")
    slow = Disk(backend="null", size=GiB, target=1, blockdev={"latency-ns": 4_000_000_000})
    topo = Topology([Controller(num_queues=2, disks=[Disk(backend="null", size=GiB), slow])])
    g = make_guest(topo, qemu_args=trace_args(tmp_path))
    g.load_driver(driver)
    g.wait_for("[ $(ls /sys/class/scsi_disk | wc -l) -eq 2 ]", timeout=60, what="2 disks")
    sd = g.sh("ls /sys/class/scsi_host/*/device/target*:0:1/*:0:1:0/block").strip()
    fast = g.sh("ls /sys/class/scsi_host/*/device/target*:0:0/*:0:0:0/block").strip()
    g.sh(f"echo 2 > /sys/block/{sd}/device/timeout")
    g.sh(f"(s=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/{sd} of=/dev/null bs=4k count=1 skip=7 iflag=direct"
         f" > /tmp/dd.log 2>&1; echo $? $s $(cut -d' ' -f1 /proc/uptime) > /tmp/dd.rc) &")
    # Responsive meanwhile: the shell answers while the command times out and error handling runs
    # (I/O to the host's other disks waits while the midlayer's error handler owns the host).
    for _ in range(6):
        g.run("cat /proc/uptime", timeout=10)
        g.sh("usleep 500000")
    g.wait_for("[ -e /tmp/dd.rc ]", timeout=180, what="the slow read to be retried or failed")
    rc, start, end = g.sh("cat /tmp/dd.rc").split()
    tmo = g.sh(f"cat /sys/block/{sd}/device/iotmo_cnt").strip()
    # Afterwards both disks serve I/O again.
    g.sh(f"dd if=/dev/{fast} of=/dev/null bs=4k count=4 iflag=direct 2>/dev/null")
    g.sh(f"echo 30 > /sys/block/{sd}/device/timeout && dd if=/dev/{sd} of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null")
    g.stop()
    answered = tmfs(tmp_path)
    report(f"{driver}: slow command: dd rc {rc} after {float(end) - float(start):.1f} s, timeouts {int(tmo, 0)},"
           f" TMFs answered: " + ", ".join(f"{TMF_NAMES.get(s, s)}={r}" for s, r in answered))
    assert any(s == 0 for s, _ in answered), answered
