# SPDX-License-Identifier: GPL-2.0
"""The harness itself can fail: a kernel report planted in the guest fails the test that caused it."""

import os

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INNER = """
def test_inner(make_guest):
    g = make_guest()
    {expect}
    g.run("echo {crash} > /sys/kernel/debug/provoke-crash/DIRECT", check=False)
"""


def run_inner(pytester, monkeypatch, crash, expect=""):
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR)
    monkeypatch.setenv("VSCSI_LOGDIR", str(pytester.path / "logs"))
    pytester.makepyfile(test_inner=INNER.format(crash=crash, expect=expect))
    return pytester.runpytest_subprocess("-p", "harness.plugin", "-p", "no:cacheprovider")


@pytest.mark.parametrize(
    "crash, report",
    [("WARNING", "*[[]warn[]] WARNING: CPU: * at *lkdtm*"), ("EXCEPTION", "*[[]oops[]] Oops: *")],
)
def test_planted_report_fails_the_test(pytester, monkeypatch, crash, report):
    result = run_inner(pytester, monkeypatch, crash)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*kernel report(s) in the guest*", report])


def test_expected_report_passes(pytester, monkeypatch):
    """A test that provokes a report on purpose and says so passes."""
    result = run_inner(pytester, monkeypatch, "WARNING", expect='g.expect_report(r"lkdtm")')
    result.assert_outcomes(passed=1)
