# SPDX-License-Identifier: GPL-2.0
"""harness/cpus.py: the vCPU slots shared by the workers of a run, with real processes."""

import json
import multiprocessing
import os
import time

from harness import cpus


def _hold(path, limit, slots, hold_s, started, log):
    gate = cpus.CpuGate(path, limit)
    n = gate.acquire(slots, "w")
    log.put(("got", os.getpid(), time.monotonic()))
    started.set()
    time.sleep(hold_s)
    log.put(("release", os.getpid(), time.monotonic()))
    gate.release(n)


def _holder(path, slots, hold_s, wait_started=True):
    """Another worker: a process that takes `slots` of a gate of 3, holds them `hold_s` seconds
    and gives them back; returns it and the queue of its ("got" | "release", pid, time)."""
    ctx = multiprocessing.get_context("fork")
    log, started = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(path, 3, slots, hold_s, started, log))
    proc.start()
    if wait_started:
        assert started.wait(10)
    return proc, log


def _released_at(log):
    events = [log.get(timeout=5) for _ in range(2)]
    return [t for what, _, t in events if what == "release"][0]


def _state(path):
    with open(path) as f:
        return json.load(f)


def test_a_guest_that_does_not_fit_waits_for_the_release(tmp_path):
    path = str(tmp_path / "gate.json")
    holder, log = _holder(path, 2, 1.0)
    waits = []
    gate = cpus.CpuGate(path, 3, waited=waits.append)
    t0 = time.monotonic()
    n = gate.acquire(2, "second")  # 2 + 2 > 3: waits for the holder
    got = time.monotonic()
    holder.join(10)
    assert got >= _released_at(log)
    assert len(waits) == 1 and 0 < waits[0] <= got - t0
    assert _state(path)["held"] == {str(os.getpid()): 2}
    gate.release(n)
    assert _state(path)["held"] == {}


def test_a_guest_that_fits_does_not_wait(tmp_path):
    path = str(tmp_path / "gate.json")
    holder, _ = _holder(path, 2, 3.0)
    gate = cpus.CpuGate(path, 3)
    n = gate.acquire(1, "second")  # 2 + 1 fits
    assert holder.is_alive()
    assert _state(path)["held"] == {str(holder.pid): 2, str(os.getpid()): 1}
    gate.release(n)
    holder.join(10)


def test_a_worker_that_holds_slots_never_waits(tmp_path):
    """A test with two guests: its second guest boots although the two exceed the limit (waiting
    would let two workers wait for each other)."""
    path = str(tmp_path / "gate.json")
    gate = cpus.CpuGate(path, 3)
    a = gate.acquire(2, "first")
    b = gate.acquire(2, "second")
    assert _state(path)["held"] == {str(os.getpid()): 4}
    gate.release(b)
    gate.release(a)
    assert _state(path)["held"] == {}


def test_slots_of_a_dead_worker_are_forgotten(tmp_path):
    path = str(tmp_path / "gate.json")
    ctx = multiprocessing.get_context("fork")
    dead = ctx.Process(target=cpus.CpuGate(path, 3).acquire, args=(2, "dies holding"))
    dead.start()
    dead.join(10)
    assert _state(path)["held"] == {str(dead.pid): 2}
    gate = cpus.CpuGate(path, 3)
    gate.acquire(2, "after")
    assert _state(path)["held"] == {str(os.getpid()): 2}


def test_waiting_is_first_come_first_served(tmp_path):
    """A worker that releases and boots again at once does not overtake one already waiting."""
    path = str(tmp_path / "gate.json")
    gate = cpus.CpuGate(path, 3)
    n = gate.acquire(2, "first")
    waiter, log = _holder(path, 2, 1.0, wait_started=False)
    deadline = time.monotonic() + 10
    while str(waiter.pid) not in _state(path)["queue"]:
        assert time.monotonic() < deadline, "the second worker never queued"
        time.sleep(0.05)
    gate.release(n)
    n = gate.acquire(2, "again")  # queued behind the waiter: runs after it
    again = time.monotonic()
    waiter.join(10)
    assert again >= _released_at(log)
    gate.release(n)


def test_the_wait_is_bounded(tmp_path, monkeypatch):
    path = str(tmp_path / "gate.json")
    holder, _ = _holder(path, 2, 5.0)
    monkeypatch.setattr(cpus, "MAX_WAIT", 0.5)
    reports = []
    gate = cpus.CpuGate(path, 3, reports.append)
    t0 = time.monotonic()
    gate.acquire(2, "impatient")
    assert time.monotonic() - t0 < 4
    assert holder.is_alive()
    assert len(reports) == 1 and "impatient" in reports[0]
    holder.join(10)


def test_a_guest_never_needs_the_whole_limit(tmp_path):
    """Three slots asked of a limit of 3 (two vCPUs and a vhost-user back end) take two: such a
    guest runs beside a one-vCPU guest instead of waiting for the other worker to stop them all."""
    path = str(tmp_path / "gate.json")
    holder, _ = _holder(path, 1, 3.0)
    gate = cpus.CpuGate(path, 3)
    t0 = time.monotonic()
    n = gate.acquire(3, "vhost-user, two vCPUs")
    assert n == 2 and time.monotonic() - t0 < 2
    assert holder.is_alive()
    gate.release(n)
    holder.join(10)
