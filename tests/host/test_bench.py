# SPDX-License-Identifier: GPL-2.0
"""tests/bench.py's statistics: the paired interval and the repetitions a row would need."""

import json
import math
import os
import random
import subprocess
import sys

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TESTS_DIR)

import bench  # noqa: E402


def half_width(sd, n):
    return bench.t95(n - 1) * sd / math.sqrt(n)


def test_t95_between_and_beyond_the_table():
    """Student's t quantile at degrees of freedom the table does not list, against published values
    (to four decimals); it falls with every degree of freedom and tends to the normal quantile."""
    published = {21: 2.0796, 24: 2.0639, 25: 2.0595, 30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799}
    for df, t in published.items():
        assert abs(bench.t95(df) - t) < 2e-4, (df, bench.t95(df), t)
    ts = [bench.t95(df) for df in range(1, 400)]
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert abs(bench.t95(10**6) - 1.959966) < 1e-5


def test_reps_for_is_the_first_count_that_is_narrow_enough():
    """For each scatter, the count returned gives an interval of at most ±3 % and one fewer does
    not; more scatter never needs fewer repetitions."""
    half = math.log(1.03)
    last = 0
    for sd in (0.001, 0.01, 0.03, 0.05, 0.08, 0.147, 0.3):
        n = bench.reps_for(sd)
        assert half_width(sd, n) <= half
        assert n == 2 or half_width(sd, n - 1) > half
        assert n >= last
        last = n


def test_reps_for_matches_the_interval_of_simulated_runs():
    """Pairs drawn with a known scatter, summarised as make bench summarises a row: at the count
    reps_for gives, the interval's half-width is about ±3 % (within the scatter of the sample's
    own standard deviation)."""
    rng = random.Random(16)
    sd = 0.08
    n = bench.reps_for(sd)
    widths = []
    for _ in range(200):
        ratios = [math.exp(rng.gauss(0.0, sd)) for _ in range(n)]
        m, lo, hi = bench.ci(ratios)
        widths.append(math.log(hi / lo) / 2)
    widths.sort()
    assert abs(widths[len(widths) // 2] - math.log(1.03)) < 0.004, widths[len(widths) // 2]


def test_resummarise_keeps_the_runs_own_description(tmp_path):
    """--resummarise recomputes a row from its samples and keeps what only the run knew: its
    command line, the queue limits and multiqueue scaling, a back end's own cost per I/O."""
    c = [{"iops": 100.0 + i} for i in range(8)]
    r = [{"iops": 103.0 + i} for i in range(8)]
    meta = {"argv": ["bench.py", "--reps", "8"], "ratio": "> 1: Rust better", "queue_limits": {"c": {"max_segments": "254"}},
            "mq_scaling": [{"driver": "c", "iops_1q": 1.0, "iops_2q": 2.0, "scaling": 2.0}]}
    row = {"id": "randread_qd32_1j_vu1q", "description": "4k random read, QD32, 1 job", "backend": "vhost-user 1q",
           "measure": "iops", "samples": {"c": c, "rust": r, "blk": []}, "ratio": 0.5, "ci_low": 0.4, "ci_high": 0.6,
           "n": 8, "backend_us_per_io": 9.5, "backend_core_share": 0.25}
    old = tmp_path / "results.json"
    old.write_text(json.dumps({"meta": meta, "rows": [row]}))
    subprocess.run([sys.executable, os.path.join(TESTS_DIR, "bench.py"), "--resummarise", str(old),
                    "--out", str(tmp_path / "out"), "--kernel", "-", "--initrd", "-"], check=True, capture_output=True)
    (out,) = (tmp_path / "out").iterdir()
    new = json.loads((out / "results.json").read_text())
    assert {k: v for k, v in new["meta"].items() if k != "resummarised_by"} == meta
    (got,) = new["rows"]
    want = bench.ci([b["iops"] / a["iops"] for a, b in zip(c, r)])
    assert (got["ratio"], got["ci_low"], got["ci_high"]) == want
    assert got["backend_us_per_io"] == 9.5 and got["sd_log"] > 0
    md = (out / "results.md").read_text()
    assert "max_segments 254" in md and "| C | 1 | 2 | 2.000 |" in md and "9.5 µs" in md
    assert "Resolution: the standard deviation of a row's paired log ratios" in md


def test_bar_probability_agrees_with_simulated_runs():
    """The probability bar_probability() gives for one row is what drawing that row's repetitions
    many times gives (within sampling error), both where only the point must clear 1.00 (little
    scatter) and where the lower bound of 0.97 is what fails (the scatter of 2026-12-04); it grows
    with the true ratio, and rows multiply."""
    rng = random.Random(19)
    for sd, n, true in ((0.05, 16, 1.00), (0.05, 16, 1.02), (0.192, 16, 1.02), (0.192, 16, 1.05)):
        row = {"sd_log": sd, "n": n}
        want = bench.bar_probability([row], true)
        hits = 0
        for _ in range(4000):
            m, lo, _hi = bench.ci([true * math.exp(rng.gauss(0.0, sd)) for _ in range(n)])
            hits += m >= 1.0 and lo >= 0.97
        assert abs(hits / 4000 - want) < 0.025, (sd, n, true, hits / 4000, want)
    # Where the lower bound binds, the point alone would clear 1.00 two times in three.
    wide = {"sd_log": 0.192, "n": 16}
    assert bench.bar_probability([wide], 1.02) < 0.2
    row = {"sd_log": 0.05, "n": 16}
    assert bench.bar_probability([row], 1.00) < bench.bar_probability([row], 1.02) < bench.bar_probability([row], 1.05)
    assert bench.bar_probability([row, wide], 1.02) == bench.bar_probability([row], 1.02) * bench.bar_probability([wide], 1.02)
    assert bench.bar_probability([{"sd_log": 0.0, "n": 1}], 1.02) == 1.0  # a row of one repetition is left out
    # A row without scatter meets the bar exactly when its ratio does.
    assert bench.bar_probability([{"sd_log": 0.0, "n": 16}], 1.02) == 1.0
    assert bench.bar_probability([{"sd_log": 0.0, "n": 16}], 0.99) == 0.0
