# SPDX-License-Identifier: GPL-2.0
"""The run's order: a guest group's tests are neighbours, the longest groups run first, and tests
asking for the same guest within a group are next to each other."""

import json
import os

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SOURCE = """
import pytest

@pytest.fixture(params=["rust", "c"])
def driver(request):
    return request.param

@pytest.mark.shared_guests("g")
@pytest.mark.parametrize("q", [1, 2])
def test_a(driver, q):
    pass

def test_b():
    pass

@pytest.mark.cost(500)
def test_c():
    pass

@pytest.mark.shared_guests("g")
def test_d():
    pass
"""


def collect(pytester, monkeypatch, cache):
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR)
    monkeypatch.setenv("VSCSI_CACHE", str(cache))
    pytester.makepyfile(test_order=SOURCE)
    result = pytester.runpytest_subprocess("-p", "harness.plugin", "-p", "no:cacheprovider", "--collect-only", "-q")
    return [line.split("::", 1)[1] for line in result.stdout.lines if "::" in line]


def test_groups_together_longest_first(pytester, monkeypatch, tmp_path):
    order = collect(pytester, monkeypatch, tmp_path)
    # test_c (500 s) first; the group g (5 tests x 40 s) next, its test_a cases by q with both
    # drivers side by side; test_b (40 s) last.
    assert order == ["test_c", "test_a[rust-1]", "test_a[c-1]", "test_a[rust-2]", "test_a[c-2]", "test_d",
                     "test_b"], order


def test_measured_durations_win(pytester, monkeypatch, tmp_path):
    (tmp_path / "guest-test-durations.json").write_text(json.dumps({"test_order.py::test_b": 1000.0}))
    order = collect(pytester, monkeypatch, tmp_path)
    assert order[0] == "test_b" and order[1] == "test_c", order
