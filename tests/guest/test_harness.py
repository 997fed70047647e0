# SPDX-License-Identifier: GPL-2.0
"""The harness itself can fail: a kernel report planted in the guest fails the test that caused it,
also in a guest shared between tests, and a test that breaks a shared guest does not fail the next."""

import os
import time

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INNER = """
def test_inner(make_guest):
    g = make_guest(smp=1)
    {expect}
    g.run("echo {crash} > /sys/kernel/debug/provoke-crash/DIRECT", check=False)
"""

# Three tests of one guest group, run in this order: the first and second share a guest; the second
# plants a report (or panics the guest); the third must pass, on a guest of its own.
SHARED = """
import pytest

pytestmark = pytest.mark.shared_guests


def lease(make_guest, name):
    g = make_guest(smp=1)
    with open({pids!r}, "a") as f:
        f.write(f"{{name}} {{g.proc.pid}}\\n")
    return g


def test_1_before(make_guest):
    assert lease(make_guest, "before").sh("echo ok") == "ok\\n"


def test_2_plant(make_guest):
    lease(make_guest, "plant").run("echo {crash} > /sys/kernel/debug/provoke-crash/DIRECT", check=False)


def test_3_after(make_guest):
    g = lease(make_guest, "after")
    assert g.sh("echo ok") == "ok\\n"
"""


# A command that outlives a report: it must not hold the run for its whole timeout.
STUCK = """
def test_inner(make_guest):
    g = make_guest(smp=1)
    g.run("echo WARNING > /sys/kernel/debug/provoke-crash/DIRECT", check=False)
    g.run("sleep 600", timeout=900)
"""


def run_inner(pytester, monkeypatch, source, *args):
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR)
    monkeypatch.setenv("VSCSI_LOGDIR", str(pytester.path / "logs"))
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest_subprocess("-p", "harness.plugin", "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize(
    "crash, report",
    [("WARNING", "*[[]warn[]] WARNING: CPU: * at *lkdtm*"), ("EXCEPTION", "*[[]oops[]] Oops: *")],
)
def test_planted_report_fails_the_test(pytester, monkeypatch, crash, report):
    result = run_inner(pytester, monkeypatch, INNER.format(crash=crash, expect=""))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*kernel report(s) in the guest*", report])


def test_expected_report_passes(pytester, monkeypatch):
    """A test that provokes a report on purpose and says so passes."""
    result = run_inner(pytester, monkeypatch, INNER.format(crash="WARNING", expect='g.expect_report(r"lkdtm")'))
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    "crash, report", [("WARNING", "*[[]warn[]] WARNING: CPU: * at *lkdtm*"), ("PANIC", "*[[]panic[]] Kernel panic*")]
)
def test_report_in_a_shared_guest(pytester, monkeypatch, crash, report):
    """In a shared guest, a planted WARN (or a panic) fails exactly the test that planted it: the
    test before it shared its guest and passed, the test after it passes on a fresh guest."""
    pids = pytester.path / "pids"
    result = run_inner(pytester, monkeypatch, SHARED.format(pids=str(pids), crash=crash), "-v")
    result.stdout.fnmatch_lines(["*test_1_before PASSED*", "*test_2_plant FAILED*", "*test_3_after PASSED*"])
    result.stdout.fnmatch_lines([report])
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 2 and outcomes.get("failed") == 1, outcomes
    pid = dict(line.split() for line in pids.read_text().splitlines())
    assert pid["before"] == pid["plant"], pid
    assert pid["after"] != pid["plant"], pid


def test_command_stuck_after_a_report_ends_early(pytester, monkeypatch):
    """A command still running 20 s after an unexpected kernel report fails its test then, with
    the report named, instead of at the end of its timeout (15 minutes here)."""
    # The inner run's guest boots at once rather than queueing for vCPU slots behind the outer
    # run's guests (up to cpus.MAX_WAIT, 900 s), which would count in the time bounded below.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    start = time.monotonic()
    result = run_inner(pytester, monkeypatch, STUCK)
    elapsed = time.monotonic() - start
    # The test fails, and the report fails its teardown as well.
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(["*guest stuck during command 'sleep 600' for 20 s after a kernel report*lkdtm*"])
    assert elapsed < 300, elapsed
