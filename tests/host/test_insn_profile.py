# SPDX-License-Identifier: GPL-2.0
"""tests/plugins/insn_count.c in a real QEMU, and tests/insn_profile.py's accounting."""

import os
import shutil
import subprocess
import sys
import time

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS_DIR)

import insn_profile  # noqa: E402


def test_the_plugin_counts_a_guest_and_takes_snapshots(tmp_path):
    """Built as `make insn-profile` builds it, loaded by the QEMU the tests use: the firmware's
    instructions are counted, a snapshot writes them, and the counters start again from zero."""
    if not shutil.which("qemu-system-x86_64"):
        pytest.fail("qemu-system-x86_64 is not installed (scripts/install-deps.sh)")
    so = tmp_path / "insn_count.so"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-fvisibility=hidden",
                    "-o", str(so), os.path.join(TESTS_DIR, "plugins", "insn_count.c"), "-lpthread"], check=True)
    req = tmp_path / "snap"
    qemu = subprocess.Popen(["qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-nodefaults", "-display", "none",
                             "-icount", "shift=0,sleep=off", "-plugin", f"{so},req={req}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def snapshot():
        req.touch()
        deadline = time.monotonic() + 30
        while req.exists():
            assert qemu.poll() is None, qemu.communicate()
            assert time.monotonic() < deadline, "no snapshot within 30 s"
            time.sleep(0.02)
        return (tmp_path / "snap.out").read_text()

    def parse(text):
        blocks = [line.split() for line in text.splitlines()]
        for b in blocks:
            count, addrs = int(b[0]), [int(a, 16) for a in b[1:]]
            assert count > 0 and addrs and addrs == sorted(addrs), b
        return blocks

    try:
        # Snapshots until the firmware has run a while: the reset vector's block (once) and
        # thousands of instructions.
        blocks, total = [], 0
        deadline = time.monotonic() + 30
        while total < 100000:
            assert time.monotonic() < deadline, f"{total} instructions counted in 30 s"
            for b in parse(snapshot()):
                blocks.append(b)
                total += int(b[0]) * (len(b) - 1)
        later = parse(snapshot())
    finally:
        qemu.kill()
        qemu.wait()
    reset = [int(b[0]) for b in blocks if int(b[1], 16) == 0xFFFFFFF0]
    assert reset == [1], reset
    # Counted once: the counters start again from zero after each snapshot.
    assert not any(int(b[1], 16) == 0xFFFFFFF0 for b in later)


KALLSYMS = """\
ffffffff81000000 T scsi_queue_rq
ffffffff81000100 t sg_next
ffffffff81000200 D some_data
ffffffffc0000000 t virtscsi_queuecommand\t[virtio_scsi]
ffffffffc0001000 t _RNvqueuecommand\t[virtio_scsi_rs]
"""


def test_counts_are_charged_to_functions_and_modules():
    symbols = insn_profile.Symbols(KALLSYMS)
    # Three runs of a block of two scsi_queue_rq instructions and one of sg_next; two of a
    # block of the Rust module's; one of user space (below every symbol).
    text = ("3 ffffffff81000000 ffffffff81000004 ffffffff81000100\n"
            "2 ffffffffc0001000 ffffffffc0001008\n"
            "1 555555554000\n")
    per_fn, per_addr = insn_profile.parse_counts(text, symbols)
    assert per_fn == {("scsi_queue_rq", "vmlinux"): 6, ("sg_next", "vmlinux"): 3,
                      ("_RNvqueuecommand", "virtio_scsi_rs"): 4, ("[user]", "user"): 1}
    assert per_addr[("_RNvqueuecommand", 8)] == 2 and per_addr[("scsi_queue_rq", 4)] == 3
    # A data symbol does not take the instructions after it.
    assert symbols.lookup(0xFFFFFFFF81000300)[0] == "sg_next"
    c, _ = insn_profile.parse_counts("4 ffffffffc0000000\n", symbols)
    report = insn_profile.summary({"c": c, "rust": per_fn}, ios=2, per_addr={"rust": per_addr})
    assert "== rust: 7.0 instructions per I/O" in report
    # Entered twice (its first instruction) in two I/Os: one call per I/O.
    assert "virtio_scsi_rs functions (instructions, calls per I/O):" in report
    assert "     2.0  1.000  _RNvqueuecommand" in report
    assert "== c: 2.0 instructions per I/O" in report and "     2.0  0.000  virtscsi_queuecommand" in report
