# SPDX-License-Identifier: GPL-2.0
"""A limit on the vCPUs that the guests of one test run keep running at once, across its
pytest-xdist workers.

Under TCG each vCPU is a host thread that wants a whole core. Two workers on two cores each
running a guest with two vCPUs put four busy threads on two cores: a vCPU whose thread waits for
the core holds up the others in IPIs and expedited grace periods, and both tests take much longer
than they would one after the other (in a full run the hot-remove cases took 177 s and 165 s
beside the I/O tests' two-vCPU guests, 85 s and 99 s in the next run with this limit). A guest takes as many slots as it has vCPUs, plus one for each vhost-user back end
(a busy thread of its own during I/O), at most the limit less one, and waits for them when
booting; the run has the host's cores plus two. That again lets two two-vCPU guests run at once,
the case above, but a limit of the cores plus one kept the cores idle a quarter of a full run with
three workers (2,180 s of waiting in 5,702 s of test time): a slot is held by a guest that waits
on the device, a command timeout or a held request, as much as by a busy one. With the cores plus
two the guest tier took 1,712 s and 1,466 s, against 1,908 s (Documentation/testing.rst).

State: one JSON file per run (the slots held by each worker process and the queue of waiting
ones), changed under an exclusive flock. A worker that already holds slots (a test with two
guests) never waits, so that no two workers wait for each other; a worker that died is forgotten.
Waiting is first come, first served and bounded: past `MAX_WAIT` the guest boots anyway (the run
only gets slower) and the wait is reported.
"""

import fcntl
import json
import os
import time

MAX_WAIT = 900  # seconds
POLL = 0.2


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def run_file(name):
    """A file of this test run that all its pytest-xdist workers see (by the run's id; one
    process's own without xdist), under /tmp."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
    return os.path.join("/tmp", f"vscsi-{name}-{uid}.json")


def update_json(path, change):
    """Runs `change(state)` on the JSON object in `path` ({} if there is none yet) under an
    exclusive flock on `path`.lock, writes the state back atomically, and returns what `change`
    returns: state shared by the workers of a run."""
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = {}
        result = change(state)
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(path + ".tmp", path)
        return result


class CpuGate:
    def __init__(self, path, limit, report=None, waited=None):
        self.path = path
        self.limit = limit
        self.report = report or (lambda line: None)
        # Called with the seconds each acquire waited (the run's time budget adds them up).
        self.waited = waited or (lambda seconds: None)

    def _update(self, change):
        """Runs `change(state)` under the lock on the state file and writes the state back;
        returns what `change` returns."""

        def forget_the_dead(state):
            state.setdefault("held", {})
            state.setdefault("queue", [])
            for pid in [p for p in state["held"] if not _alive(int(p))]:
                del state["held"][pid]
            state["queue"] = [p for p in state["queue"] if _alive(int(p))]
            return change(state)

        return update_json(self.path, forget_the_dead)

    def acquire(self, slots, what):
        """Takes `slots` (at most the limit less one) for a guest about to boot; returns the number
        taken, for `release`."""
        # A guest never needs the whole limit: waiting for the other worker to power off every
        # guest, the idle one kept for its group's next test included, cost a vhost-user case
        # with two vCPUs and its back end 330 s of waiting in a run.
        slots = max(1, min(slots, self.limit - 1))
        me = str(os.getpid())
        start = time.monotonic()

        def try_take(state):
            held = state["held"]
            mine = held.get(me, 0)
            others = sum(n for p, n in held.items() if p != me)
            first = not state["queue"] or state["queue"][0] == me
            timed_out = time.monotonic() - start > MAX_WAIT
            if mine or (first and others + slots <= self.limit) or timed_out:
                held[me] = mine + slots
                if me in state["queue"]:
                    state["queue"].remove(me)
                return True
            if me not in state["queue"]:
                state["queue"].append(me)
            return False

        while not self._update(try_take):
            time.sleep(POLL)
        waited = time.monotonic() - start
        self.waited(waited)
        if waited > MAX_WAIT:
            self.report(f"{what}: booted after {waited:.0f} s without the {slots} vCPU slot(s) it waits for")
        return slots

    def release(self, slots):
        me = str(os.getpid())

        def give_back(state):
            left = state["held"].get(me, 0) - slots
            if left > 0:
                state["held"][me] = left
            else:
                state["held"].pop(me, None)

        self._update(give_back)


def gate_for_run(report, waited=None):
    """The run's gate, or None: only workers of a pytest-xdist run share the host (without
    workers, one guest runs at a time but for tests with several). VSCSI_VCPU_LIMIT sets the
    limit (0: none)."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not uid or not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    limit = int(os.environ.get("VSCSI_VCPU_LIMIT", (os.cpu_count() or 1) + 2))
    if limit <= 0:
        return None
    return CpuGate(run_file("vcpus"), limit, report, waited)
