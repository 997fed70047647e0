# SPDX-License-Identifier: GPL-2.0
"""The private iSCSI target of the guest tests (harness/iscsi.py): its command lines, the QEMU
arguments of its LUNs, and a real tgtd started, given a target and stopped."""

import os
import socket
import subprocess

import pytest

from harness import iscsi
from harness.topology import Controller, Topology


def test_command_lines():
    assert iscsi.tgtd_cmdline(7, 3261) == ["tgtd", "-f", "-C", "7", "--iscsi", "portal=127.0.0.1:3261"]
    assert iscsi.tgtadm_cmdline(7, "--op", "show", "--mode", "sys") == ["tgtadm", "-C", "7", "--op", "show", "--mode", "sys"]


def test_free_control_skips_none_below_the_limit():
    for seed in (0, 32766, 65535):
        assert 1 <= iscsi.free_control(seed) <= 32767


def test_lun_as_qemu_arguments(tmp_path):
    t = iscsi.Tgtd(tmp_path)
    t.port = 3333
    disks = [t.disk(1, 2, "a", "scsi-generic", target=1), t.disk(1, 2, "b", target=2, guest_lun=3)]
    a = Topology([Controller(disks=disks)]).qemu_args(str(tmp_path))
    iqn = iscsi.target_iqn(1)
    assert a[a.index("-blockdev") + 1] == (
        f"node-name=vs0-n0,driver=iscsi,transport=tcp,portal=127.0.0.1:3333,target={iqn},lun=2,"
        f"initiator-name={iscsi.initiator_iqn('a')}")
    assert "scsi-generic,drive=vs0-n0,bus=vs0.0,channel=0,scsi-id=1,lun=0,id=vs0-d0" in a
    assert "scsi-block,drive=vs0-n1,bus=vs0.0,channel=0,scsi-id=2,lun=3,id=vs0-d1" in a
    assert f"initiator-name={iscsi.initiator_iqn('b')}" in a[a.index("-blockdev", a.index("-blockdev") + 1) + 1]


def test_tgtd_starts_serves_and_stops(tmp_path):
    """A real tgtd: it listens on its port, answers on its own control channel, keeps a target
    with a LUN file, and is gone after stop (targets deleted, then the system)."""
    t = iscsi.Tgtd(tmp_path / "luns", tmp_path / "log").start()
    proc = t.proc
    try:
        t.add_target(1, {1: 4})
        assert os.path.getsize(tmp_path / "luns" / "tgt1-lun1.img") == 4 << 20
        with socket.create_connection(("127.0.0.1", t.port), timeout=5):
            pass
        shown = subprocess.run(iscsi.tgtadm_cmdline(t.control, "--lld", "iscsi", "--op", "show", "--mode", "target"),
                               capture_output=True, text=True, check=True).stdout
        assert iscsi.target_iqn(1) in shown and "Backing store path: " + str(tmp_path / "luns") in shown
    finally:
        t.stop()
    assert proc.returncode is not None
    assert "killed" not in (tmp_path / "log" / "tgtd.log").read_text()
    assert not iscsi.control_in_use(t.control)


def test_a_tgtd_that_cannot_start_fails_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(iscsi, "TGTD", "/nonexistent/tgtd")
    with pytest.raises(iscsi.TargetError, match="cannot run"):
        iscsi.Tgtd(tmp_path).start()


CUNIT = """
     CUnit - A unit testing framework for C - Version 2.1-3

Suite: Read10
  Test: Simple ...passed
  Test: BeyondEol ...FAILED
    1. test_read10_beyond_eol.c:58  - Expected ILLEGAL REQUEST
  Test: DpoFua ...[SKIPPED] Target does not support DPO/FUA
passed
Suite: Unmap
  Test: Simple ...[SKIPPED] UNMAP is not implemented.
passed

Run Summary:    Type  Total    Ran Passed Failed Inactive
              tests      4      4      3      1        0
"""


def test_parse_cunit():
    assert iscsi.parse_cunit(CUNIT) == {
        "Read10.Simple": "pass", "Read10.BeyondEol": "FAIL", "Read10.DpoFua": "skip", "Unmap.Simple": "skip"}
