# SPDX-License-Identifier: GPL-2.0
"""The kernel report detector finds every kind of report, once, and nothing in clean logs."""

import pytest

from harness import splat

CLEAN = """\
[    0.000000] Linux version 6.12.117 (root@host) (Debian clang version 14.0.6) #1 SMP
[    5.259471] lkdtm: No crash points registered, enable through debugfs
[    6.100000] lkdtm: Performing direct entry WARNING
[    6.200000] virtio_scsi_rs virtio1: num_queues=1 max_target=255 hotplug=true change=true
[    6.300000] sd 0:0:0:0: [sda] Warning: unable to open an access log
[    6.400000] scsi host0: Virtio SCSI HBA
[    6.500000] kmemleak: Kernel memory leak detector initialized (mem pool available: 15203)
[    7.000000] INFO: lockdep self-tests skipped
"""

SAMPLES = {
    "warn": """\
[    6.767329] ------------[ cut here ]------------
[    6.767687] WARNING: CPU: 1 PID: 51 at drivers/misc/lkdtm/bugs.c:97 lkdtm_WARNING+0xe/0x20
[    6.768000] Modules linked in: virtio_scsi_rs
[    6.772176] Call Trace:
""",
    "bug": """\
[   12.000000] BUG: sleeping function called from invalid context at kernel/locking/mutex.c:283
[   12.000100] in_atomic(): 1, irqs_disabled(): 1, non_block: 0, pid: 60, name: sh
""",
    "oops": """\
[    6.540816] Oops: general protection fault, probably for non-canonical address 0xdffffc0000000000: 0000 [#1] SMP KASAN
[    6.541703] CPU: 1 UID: 0 PID: 51 Comm: sh Not tainted 6.12.117 #1
""",
    "kasan": """\
[   20.100000] ==================================================================
[   20.100001] BUG: KASAN: slab-use-after-free in virtscsi_complete_cmd+0x40/0x200
[   20.100002] Read of size 4 at addr ffff888012345678 by task swapper/0/0
""",
    "lockdep": """\
[   30.000000] ======================================================
[   30.000001] WARNING: possible circular locking dependency detected
[   30.000002] 6.12.117 #1 Not tainted
""",
    "hung-task": """\
[  130.000000] INFO: task kworker/0:1:42 blocked for more than 60 seconds.
[  130.000001]       Not tainted 6.12.117 #1
""",
    "kmemleak": """\
unreferenced object 0xffff888003a4b000 (size 64):
  comm "insmod", pid 70, jiffies 4294937296
  hex dump (first 32 bytes):
""",
    "kmemleak-summary": """\
[   40.000000] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)
""",
    "rcu-stall": """\
[   50.000000] rcu: INFO: rcu_preempt self-detected stall on CPU
""",
    "soft-lockup": """\
[   60.000000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:55]
""",
    "list-corruption": """\
[   70.000000] list_add corruption. prev->next should be next (ffff888003a4b000), but was 0000000000000000.
""",
}


def test_clean_log_has_no_report():
    assert splat.find_reports(CLEAN) == []


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_kind_is_found_once(name):
    text = CLEAN + SAMPLES[name] + CLEAN
    reports = splat.find_reports(text)
    assert len(reports) == 1, reports
    want = name.split("-summary")[0]
    if want == "kasan":
        assert reports[0].kind in ("bug", "kasan")
    elif want == "soft-lockup":
        assert reports[0].kind in ("bug", "soft-lockup")
    elif want == "lockdep":
        assert reports[0].kind in ("warn", "lockdep")
    else:
        assert reports[0].kind == want


def test_cut_here_splat_is_named_by_its_headline():
    (report,) = splat.find_reports(SAMPLES["warn"])
    assert report.line.startswith("WARNING: CPU: 1 PID: 51 at drivers/misc/lkdtm/bugs.c:97")


def test_two_separate_splats_are_two_reports():
    text = SAMPLES["warn"] + CLEAN + SAMPLES["kasan"]
    assert [r.kind for r in splat.find_reports(text)] in (["warn", "bug"], ["warn", "kasan"])


def test_prefix_variants():
    assert splat.strip_prefix("<4>[   1.5] WARNING: x") == "WARNING: x"
    assert splat.strip_prefix("[    1.000000] [  T42] BUG: y") == "BUG: y"
    assert splat.strip_prefix("BUG: z") == "BUG: z"
