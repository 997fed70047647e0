# SPDX-License-Identifier: GPL-2.0
"""pytest plugin: guest fixtures, guests shared between tests, the `driver` parameter, failing
tests on kernel reports, and the run's time budget.

Guests are shared inside a *guest group*: the tests of a module marked `shared_guests` (or of one
`shared_guests("name")`) run one after another on one pytest-xdist worker, and a test whose
`make_guest` asks for the same QEMU configuration as an earlier test of its group gets that guest
back, reset (`Guest.reset`), instead of a new boot. Kernel reports are checked after each test, so
a report still fails the test that caused it; a guest whose test failed, died, changed QEMU's state
over QMP or could not be reset is powered off, and the next test boots a fresh one.
"""

import json
import os
import re
import shutil
import time

import pytest

from .cpus import gate_for_run, run_file, update_json
from .guest import STUCK_AFTER_REPORT, BootFailure, Guest
from .iscsi import Tgtd
from .topology import Topology

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LEASES = pytest.StashKey[list]()
GROUP = pytest.StashKey[str]()
NEXT = pytest.StashKey[object]()

# Idle guests a worker keeps for later tests of the same group. An idle guest still costs CPU
# (timers, RCU): more than one would slow down the guests that work.
POOL_SIZE = 1
EXPEDITED_RCU = "rcupdate.rcu_expedited=1"
# 256 legacy BSD ptys cost 1.5 s of every boot under TCG (pty_init) and no test uses one.
NO_LEGACY_PTYS = "pty.legacy_count=0"
# vCPUs of a guest unless the test asks for more. Two workers run at once on two cores: a guest
# with two vCPUs then spins in IPIs and expedited grace periods on a vCPU whose thread waits for
# the core (a pair of 256-LUN scans took 99 s with two vCPUs each, 75 s with one).
DEFAULT_SMP = 1
# Memory of a guest unless the test asks for more. Every kernel-report check asks kmemleak for a
# scan, which reads all of the guest's memory maps: 2.4 s with 512 MiB, 3.2 s with 1 GiB (and a
# boot takes 1.4 s less); KASAN's shadow takes an eighth. No test needs more than 512 MiB but the
# scale tests, which ask for 2 GiB.
DEFAULT_MEM = "512M"
# Estimated seconds of a test without a measurement of an earlier run (see `cost`).
DEFAULT_COST = 40

_current = None  # the item running on this process, for `report`
_stats = None  # what this process gathers for the time budget


def expect_c_failure(request, driver, reason):
    """Marks the C driver's run of a test as a strict expected failure: C lacks the behaviour
    for `reason`, and the test must fail once it has it."""
    if driver == "c":
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"C driver: {reason}"))


def _cpu_waited(seconds):
    """Adds the seconds a guest of the current test waited for vCPU slots to its report."""
    if _current is not None and seconds > 0.05:
        _current.user_properties.append(("vscsi-cpu-wait", seconds))


def report(line):
    """Adds a line to the measurements printed at the end of the run (scan times and the like).
    The line travels with the test's report, so it reaches the end of the run from any worker."""
    if _current is not None:
        _current.user_properties.append(("vscsi-measurement", line))


def run_table(name, key, value):
    """Records `value` under `key` in the run's table `name` and returns the whole table as it
    is now: for the cases of one test that compare their results (each driver's, say) when
    pytest-xdist may run them on different workers at the same time (a file of the run, as the
    vCPU gate's state is); the case that finds the table complete compares."""

    def put(table):
        table[key] = value
        return dict(table)

    return update_json(run_file(name), put)


def _cache_dir():
    return os.environ.get("VSCSI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "virtio-scsi-rs")


def _durations_path():
    return os.path.join(_cache_dir(), "guest-test-durations.json")


def _artifact(var, default):
    path = os.environ.get(var) or default
    if not path or not os.path.exists(path):
        pytest.exit(f"{var} not set or missing ({path!r}): run guest tests through 'make check'", returncode=2)
    return path


def _worker():
    return os.environ.get("PYTEST_XDIST_WORKER", "w")


def _plain_id(nodeid):
    """A nodeid without the `@group` suffix pytest-xdist gives grouped tests."""
    return nodeid.split("@", 1)[0] if "@" in nodeid.rsplit("]", 1)[-1] else nodeid


# --- ordering and grouping ------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "shared_guests(name=None): the tests share guests of the same configuration; they run on"
        " one worker, one after another (name: a group across modules; default: the module)",
    )
    config.addinivalue_line(
        "markers", "cost(seconds): the test's wall time on a 2-core machine, used to order the run until"
        " a run has measured it",
    )
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's group (added by this plugin)")
    global _stats
    _stats = _Stats()
    Guest.cpu_gate = gate_for_run(report, _cpu_waited)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Puts the tests of a guest group next to each other (and those that ask for the same guest
    configuration next to each other inside it, as far as their names tell), and the groups
    longest first, so that two workers end together. Runs before pytest-xdist reads the
    `xdist_group` marks it adds."""
    try:
        with open(_durations_path()) as f:
            measured = json.load(f)
    except (OSError, ValueError):
        measured = {}

    def cost(item):
        if item.nodeid in measured:
            return measured[item.nodeid]
        mark = item.get_closest_marker("cost")
        return mark.args[0] if mark else DEFAULT_COST

    groups = {}
    for index, item in enumerate(items):
        mark = item.get_closest_marker("shared_guests")
        if mark is None:
            name = item.nodeid
        else:
            name = (mark.args[0] if mark.args else None) or item.nodeid.split("::", 1)[0]
            name = "guests-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
            item.add_marker(pytest.mark.xdist_group(name))
        item.stash[GROUP] = name
        groups.setdefault(name, []).append((index, item))

    def sibling_key(entry):
        index, item = entry
        cs = getattr(item, "callspec", None)
        params = sorted((k, repr(v)) for k, v in cs.params.items() if k != "driver") if cs else []
        return (getattr(item, "originalname", item.name), params, index)

    ordered = sorted(groups.values(), key=lambda g: -sum(cost(item) for _, item in g))
    items[:] = [item for group in ordered for _, item in sorted(group, key=sibling_key)]


# --- the budget -----------------------------------------------------------------------------------


class _Stats:
    def __init__(self):
        self.start = time.monotonic()
        self.durations = {}
        self.boots = 0
        self.retries = 0
        self.reused = 0
        self.cpu_wait = 0.0
        self.waits = {}  # per test: seconds its guests waited for vCPU slots
        self.measurements = []


def pytest_runtest_logreport(report):
    """Runs where results are gathered (the controller under xdist): adds up each test's time and
    the boots its guests needed."""
    stats = _stats
    if stats is None:
        return
    nodeid = _plain_id(report.nodeid)
    stats.durations[nodeid] = stats.durations.get(nodeid, 0.0) + report.duration
    if report.when != "teardown":
        return
    for key, value in report.user_properties:
        if key == "vscsi-boots":
            stats.boots += value
        elif key == "vscsi-boot-retries":
            stats.retries += value
        elif key == "vscsi-reused":
            stats.reused += value
        elif key == "vscsi-cpu-wait":
            stats.cpu_wait += value
            stats.waits[nodeid] = stats.waits.get(nodeid, 0.0) + value
        elif key == "vscsi-measurement":
            stats.measurements.append(value)


def pytest_terminal_summary(terminalreporter, config):
    stats = _stats
    if stats is None or hasattr(config, "workerinput"):
        return
    if stats.measurements:
        terminalreporter.section("measurements")
        for line in stats.measurements:
            terminalreporter.write_line(line)
    guest_tests = {k: v for k, v in stats.durations.items() if k.startswith("guest/")}
    if not guest_tests:
        return
    terminalreporter.section("time budget")
    wall = time.monotonic() - stats.start
    terminalreporter.write_line(
        f"wall {wall:.0f} s ({wall / 60:.1f} min) for {len(guest_tests)} guest test cases;"
        f" test time {sum(guest_tests.values()):.0f} s; boots {stats.boots}, boots retried {stats.retries},"
        f" guests reused {stats.reused}; waited for vCPU slots {stats.cpu_wait:.0f} s (in the test time)"
    )
    terminalreporter.write_line("slowest cases:")
    for nodeid, seconds in sorted(guest_tests.items(), key=lambda kv: -kv[1])[:10]:
        terminalreporter.write_line(f"  {seconds:7.1f} s  {nodeid}")
    try:
        try:
            with open(_durations_path()) as f:
                known = json.load(f)
        except (OSError, ValueError):
            known = {}
        # A test's cost for the next run's order is its own time: what it waited for vCPU slots
        # depends on what ran beside it.
        known.update({k: round(v - stats.waits.get(k, 0.0), 1) for k, v in guest_tests.items()})
        os.makedirs(os.path.dirname(_durations_path()), exist_ok=True)
        with open(_durations_path() + ".tmp", "w") as f:
            json.dump(known, f, indent=0, sort_keys=True)
        os.replace(_durations_path() + ".tmp", _durations_path())
    except OSError:
        pass


# --- guests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def guest_kernel():
    return _artifact("VSCSI_KERNEL", None)


@pytest.fixture(scope="session")
def guest_initrd():
    return _artifact("VSCSI_INITRAMFS", os.path.join(ROOT, "build", "initramfs-debug.cpio"))


class _Pool:
    """Idle guests of this worker, by configuration, oldest first (at most POOL_SIZE)."""

    def __init__(self):
        self.idle = []  # [(key, guest, last test)]
        self.seq = 0

    def take(self, key):
        for i, (k, g, _) in enumerate(self.idle):
            if k == key and g.alive():
                del self.idle[i]
                return g
        return None

    def put(self, key, guest, nodeid):
        self.idle.append((key, guest, nodeid))

    def evict(self, keep):
        """Powers off idle guests until `keep` are left; returns the reports found in them."""
        errors = []
        while len(self.idle) > keep:
            _, g, last = self.idle.pop(0)
            g.stop()
            g.dead = True
            try:
                g.check_reports()
            except AssertionError as e:
                errors.append(f"while powering off the guest last used by {last}: {e}")
        return errors


_POOL = _Pool()


class _Lease:
    def __init__(self, guest, key, shared):
        self.guest = guest
        self.key = key
        self.shared = shared
        self.keep = False
        # The test failed (or failed as expected): its guest may be wedged.
        self.failed = False
        # The test failed as expected (the C driver's strict xfail): the guest is wedged by what
        # the test set out to show, and nothing its shutdown could print would change the result.
        self.xfailed = False


def _same_group(item, other):
    return other is not None and other.stash.get(GROUP, None) == item.stash.get(GROUP, object())


@pytest.fixture
def make_guest(request, guest_kernel, guest_initrd):
    """Factory: make_guest(topology=Topology(...), smp=1, mem="512M", append="", qemu_args=(),
    scan="targets", shared=True, kernel=None, initrd=None, cls=Guest, trace=()) returns a running
    guest.
    Logs go under build/logs/<test>/. kernel, initrd: other than the session's (VSCSI_KERNEL,
    VSCSI_INITRAMFS); cls: a Guest subclass (the distro guest, harness/distro.py).

    scan: "targets" boots with scsi_mod.scan=manual and `load_driver` scans the topology's targets
    (all their LUNs), which is what the midlayer's own scan finds without probing 250-odd absent
    target ids; "all" lets the midlayer scan every target id, for tests of the scan and of events
    that rescan the host. An `append` that sets scsi_mod.scan itself wins (the test scans).

    smp: one vCPU unless the test needs more: for more than one request queue in use, or for
    completions racing submissions and error handling on another CPU (see DEFAULT_SMP).

    shared: the guest may come from, and go back to, the worker's pool (see the module's doc).

    trace: QEMU trace events for `Guest.trace_lines()`, of this boot alone; such a guest is not
    shared (its trace would hold other tests' events).

    Every guest is checked for kernel reports when the test body ends (a report fails the test),
    and again after it is powered off."""
    item = request.node
    leases = item.stash.setdefault(LEASES, [])
    logroot = os.environ.get("VSCSI_LOGDIR", os.path.join(ROOT, "build", "logs"))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", _plain_id(item.nodeid))
    pending = []  # reports found in idle guests powered off on the way

    def make(
        topology=None, smp=DEFAULT_SMP, mem=DEFAULT_MEM, append="", qemu_args=(), scan="targets", shared=True,
        kernel=None, initrd=None, cls=Guest, trace=(),
    ):
        topology = topology or Topology()
        kernel = kernel or guest_kernel
        initrd = initrd or guest_initrd
        # Expedited RCU grace periods: every request queue the midlayer creates and frees (each
        # probed LUN, each removed disk) waits for grace periods, and normal ones are slow under
        # TCG; a scan of 128 LUNs takes half the time. Both drivers run on the same kernel.
        append = f"{EXPEDITED_RCU} {NO_LEGACY_PTYS} {append}".strip()
        scan_targets = None
        if "scsi_mod.scan=" not in append and scan == "targets":
            append = (append + " scsi_mod.scan=manual").strip()
            scan_targets = topology.targets()
        key = (cls, kernel, initrd, repr(topology), smp, mem, " ".join(append.split()), tuple(qemu_args))
        logdir = os.path.join(logroot, name + (f"-{len(leases)}" if leases else ""))
        shared = shared and not trace and item.get_closest_marker("shared_guests") is not None
        g = _POOL.take(key) if shared else None
        if g is not None:
            item.user_properties.append(("vscsi-reused", 1))
            g.attach(logdir)
        else:
            # Idle guests of other configurations would only compete with the new one.
            pending.extend(_POOL.evict(0))
            if shared:
                _POOL.seq += 1
                bootdir = os.path.join(logroot, "_shared", f"{_worker()}-{_POOL.seq}")
            else:
                bootdir = logdir
            g = _boot(item, bootdir, cls, kernel, initrd, topology, smp=smp, mem=mem, append=append, qemu_args=qemu_args,
                       trace=trace)
            if shared:
                g.attach(logdir)
        g.scan_targets = scan_targets
        leases.append(_Lease(g, key, shared))
        return g

    yield make
    errors = pending
    nextitem = item.stash.get(NEXT, None)
    for lease in leases:
        g = lease.guest
        if lease.keep and _same_group(item, nextitem):
            g.detach()
            _POOL.put(lease.key, g, item.nodeid)
            continue
        try:
            # A guest whose test failed often has I/O that never ends, which holds up the disks'
            # shutdown: it gets as long to power off as a guest with a kernel report; one whose
            # test failed as expected is killed (its console is still checked for reports).
            g.stop(timeout=0 if lease.xfailed else STUCK_AFTER_REPORT if lease.failed else 60)
            g.dead = True
            g.detach()
            g.check_reports()
        except AssertionError as e:
            errors.append(str(e))
    errors += _POOL.evict(POOL_SIZE if _same_group(item, nextitem) else 0)
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


def _boot(item, logdir, cls, kernel, initrd, topology, **kw):
    for attempt in range(2):
        os.makedirs(logdir, exist_ok=True)
        for f in os.listdir(logdir):
            if os.path.isfile(os.path.join(logdir, f)):
                os.unlink(os.path.join(logdir, f))
        g = cls(kernel, initrd, logdir, topology, **kw)
        item.user_properties.append(("vscsi-boots", 1))
        try:
            g.start()
        except BootFailure as e:
            # The guest failed before the test did anything. Seen here under TCG: a KASAN
            # report from an early-boot interrupt while the TSC is calibrated (heavy host
            # load), and QEMU 7.2 aborting in msix_table_mmio_write() during PCI enumeration.
            # Keep the evidence and boot once more; a second failure fails the test.
            g.stop()
            kept = logdir + f"-boot{attempt}"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(logdir, kept)
            item.user_properties.append(("vscsi-boot-retries", 1))
            report(f"{item.nodeid}: boot {attempt + 1} failed before the test started (logs in {kept})")
            if attempt == 1:
                raise AssertionError(str(e)) from None
            continue
        except BaseException:
            g.stop(timeout=0)
            raise
        return g


@pytest.fixture(scope="session")
def distro_image():
    """The distro guest's image (scripts/distro/mkimage.sh, `make distro`)."""
    from .distro import DistroImage

    return DistroImage(_artifact("VSCSI_DISTRO", os.path.join(ROOT, "build", "distro")))


@pytest.fixture(scope="module")
def tgtd(request, tmp_path_factory):
    """A private iSCSI target for the module's tests (harness/iscsi.py): its own tgtd on a free
    port and control channel, LUN files in a temporary directory, its log (and every tgtadm
    command) under build/logs/tgtd-<module>-<worker>/. Module-scoped, so that the guests of the
    module's tests see the same portal and can be shared. A test that needs it and cannot start it
    fails with the reason (TargetError)."""
    logroot = os.environ.get("VSCSI_LOGDIR", os.path.join(ROOT, "build", "logs"))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.module.__name__)
    target = Tgtd(tmp_path_factory.mktemp("tgtd"), os.path.join(logroot, f"tgtd-{name}-{_worker()}"))
    target.start()
    yield target
    target.stop()


@pytest.fixture(params=["rust", "c"])
def driver(request):
    """The driver under test; shared-behaviour tests run once per driver."""
    return request.param


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    global _current
    _current = item
    item.stash[NEXT] = nextitem


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After a passing test body, any kernel report in its guests fails it. A guest that may serve
    the next test of its group is reset first, so that what the reset sets off (the driver's
    removal) is checked as part of this test too."""
    result = yield
    nextitem = item.stash.get(NEXT, None)
    for lease in item.stash.get(LEASES, []):
        g = lease.guest
        if lease.shared and _same_group(item, nextitem):
            why_not = g.reset()
            lease.keep = why_not is None
            if why_not:
                report(f"{item.nodeid}: its guest is not shared further: {why_not}")
        g.check_reports(leaks=_scans_leaks(item))
    return result


def _scans_leaks(item):
    """Whether the kernel-report check after `item` asks kmemleak for a scan: not for a case of
    the C driver alone. The scan looks for leaks of this project's code, the Rust driver's and its
    abstractions'; a case of the baseline only has kmemleak forget what is allocated (so that the
    next test on its guest starts clean) and saves the scan, 2.4 s of a 512 MiB guest under TCG.
    Every other report (WARN, KASAN, lockdep, ...) is looked for after C's cases too."""
    cs = getattr(item, "callspec", None)
    return cs is None or cs.params.get("driver") != "c"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A guest whose test failed is not shared any further."""
    rep = yield
    if call.when == "call" and not rep.passed:
        for lease in item.stash.get(LEASES, []):
            lease.keep = False
            lease.failed = True
            lease.xfailed = hasattr(rep, "wasxfail")
    return rep
