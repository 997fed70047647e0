# SPDX-License-Identifier: GPL-2.0
"""pytest plugin: guest fixtures, the `driver` parameter, and failing tests on kernel reports."""

import os
import re
import shutil

import pytest

from .guest import BootFailure, Guest
from .topology import Topology

GUESTS = pytest.StashKey[list]()
_REPORT = []


def report(line):
    """Adds a line to the measurements printed at the end of the run (scan times and the like)."""
    _REPORT.append(line)


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("measurements")
        for line in _REPORT:
            terminalreporter.write_line(line)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _artifact(var, default):
    path = os.environ.get(var) or default
    if not path or not os.path.exists(path):
        pytest.exit(f"{var} not set or missing ({path!r}): run guest tests through 'make check'", returncode=2)
    return path


@pytest.fixture(scope="session")
def guest_kernel():
    return _artifact("VSCSI_KERNEL", None)


@pytest.fixture(scope="session")
def guest_initrd():
    return _artifact("VSCSI_INITRAMFS", os.path.join(ROOT, "build", "initramfs-debug.cpio"))


@pytest.fixture
def make_guest(request, guest_kernel, guest_initrd):
    """Factory: make_guest(topology=Topology(...), smp=2, mem="1G", append="") boots a guest whose
    logs go under build/logs/<test>/. Every guest is checked for kernel reports when the test body
    ends (a report fails the test) and again after it is powered off."""
    guests = request.node.stash.setdefault(GUESTS, [])
    logroot = os.environ.get("VSCSI_LOGDIR", os.path.join(ROOT, "build", "logs"))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)

    def make(topology=None, **kw):
        logdir = os.path.join(logroot, name + (f"-{len(guests)}" if guests else ""))
        for attempt in range(2):
            os.makedirs(logdir, exist_ok=True)
            for f in os.listdir(logdir):
                if os.path.isfile(os.path.join(logdir, f)):
                    os.unlink(os.path.join(logdir, f))
            g = Guest(guest_kernel, guest_initrd, logdir, topology or Topology(), **kw)
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
                report(f"{request.node.nodeid}: boot {attempt + 1} failed before the test started (logs in {kept})")
                if attempt == 1:
                    raise AssertionError(str(e)) from None
                continue
            guests.append(g)
            return g

    yield make
    errors = []
    for g in guests:
        try:
            g.stop()
            g.dead = True
            g.check_reports()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture(params=["rust", "c"])
def driver(request):
    """The driver under test; shared-behaviour tests run once per driver."""
    return request.param


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After a passing test body, any kernel report in its guests fails it."""
    result = yield
    for g in item.stash.get(GUESTS, []):
        g.check_reports()
    return result
