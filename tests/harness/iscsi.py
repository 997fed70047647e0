# SPDX-License-Identifier: GPL-2.0
"""A private userspace iSCSI target (tgt's tgtd) for guests whose disks are real LUNs.

Each `Tgtd` runs its own `tgtd -f -C N --iscsi portal=127.0.0.1:PORT`: its own control channel N
(the socket /var/run/tgtd/socket.N) and a free port, so that a system tgtd, or another test's,
is irrelevant. Targets and LUNs are backed by files in a directory of the test; QEMU is the
initiator (its libiscsi block driver, qemu-block-extra), with one I_T nexus per drive
(`initiator-name`).

tgtd ignores SIGTERM while it has targets: `stop` deletes them (--force), then the system
(`--op delete --mode system`), and kills it only if it is still there after that.
"""

import os
import re
import signal
import socket
import subprocess
import time

from .topology import Disk

TGTD = os.environ.get("VSCSI_TGTD", "tgtd")
TGTADM = os.environ.get("VSCSI_TGTADM", "tgtadm")
IQN_PREFIX = "iqn.2026-01.rs.virtio-scsi"
MiB = 1 << 20


class TargetError(AssertionError):
    """tgtd did not start, or refused a command: a test that needs it fails with the reason."""


def free_port(host="127.0.0.1"):
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def control_in_use(control):
    """Whether a tgtd answers on control channel `control` (its socket accepts a connection)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(f"/var/run/tgtd/socket.{control}")
            return True
        except OSError:
            return False


def free_control(seed):
    """A control channel (tgtd takes 0..32767) no tgtd answers on, the first from `seed` on."""
    for i in range(64):
        control = (seed + i) % 32767 + 1
        if not control_in_use(control):
            return control
    raise TargetError("no free tgtd control channel")


def tgtd_cmdline(control, port, host="127.0.0.1"):
    return [TGTD, "-f", "-C", str(control), "--iscsi", f"portal={host}:{port}"]


def tgtadm_cmdline(control, *args):
    return [TGTADM, "-C", str(control)] + [str(a) for a in args]


def target_iqn(tid):
    return f"{IQN_PREFIX}:tgt{tid}"


def initiator_iqn(name):
    return f"{IQN_PREFIX}:init-{name}"


def iscsi_blockdev(port, iqn, lun, initiator, host="127.0.0.1"):
    """The `-blockdev driver=iscsi` options of one LUN seen through one I_T nexus."""
    return {"transport": "tcp", "portal": f"{host}:{port}", "target": iqn, "lun": lun, "initiator-name": initiator}


class Tgtd:
    """One private tgtd. `add_target(tid, {lun: MiB})`, `disk(...)` for a topology, `url(...)`
    for host tools (iscsi-inq, iscsi-test-cu), `pause`/`resume` (SIGSTOP/SIGCONT), `stop`."""

    def __init__(self, workdir, logdir=None, host="127.0.0.1"):
        self.workdir = str(workdir)
        self.logdir = str(logdir or workdir)
        self.host = host
        self.port = None
        self.control = None
        self.proc = None
        self.targets = {}  # tid: {lun: path}
        self.log = os.path.join(self.logdir, "tgtd.log")

    def start(self, timeout=20):
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.logdir, exist_ok=True)
        self.port = free_port(self.host)
        # The control channel is a number (at most 32767); the port makes a clash with another
        # test's tgtd unlikely, and one that answers is skipped.
        self.control = free_control(self.port)
        cmd = tgtd_cmdline(self.control, self.port, self.host)
        with open(self.log, "w") as log:
            log.write(" ".join(cmd) + "\n")
            log.flush()
            try:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            except OSError as e:
                raise TargetError(f"cannot run {TGTD} (install tgt: scripts/install-deps.sh): {e}") from None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise TargetError(f"tgtd exited with {self.proc.returncode} while starting (log: {self.log}):\n"
                                  + self._tail())
            if self._listening() and self._adm("--op", "show", "--mode", "sys", check=False)[0] == 0:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise TargetError(f"tgtd did not listen on {self.host}:{self.port} within {timeout} s"
                                  f" (log: {self.log}):\n" + self._tail())
            time.sleep(0.05)

    def _tail(self):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return ""

    def _listening(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _adm(self, *args, check=True):
        cmd = tgtadm_cmdline(self.control, *args)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        with open(self.log, "a") as log:
            log.write(f"$ {' '.join(cmd)} -> {p.returncode}\n")
            if p.returncode != 0:
                log.write(p.stdout + p.stderr)
        if check and p.returncode != 0:
            raise TargetError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stdout}{p.stderr}")
        return p.returncode, p.stdout + p.stderr

    def add_target(self, tid, luns):
        """Target `tid` with LUNs {lun: size in MiB}, each backed by a sparse file; bound to every
        initiator."""
        iqn = target_iqn(tid)
        self._adm("--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", tid, "-T", iqn)
        self.targets[tid] = {}
        for lun, mib in luns.items():
            path = os.path.join(self.workdir, f"tgt{tid}-lun{lun}.img")
            with open(path, "wb") as f:
                f.truncate(mib * MiB)
            self._adm("--lld", "iscsi", "--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", lun, "-b", path)
            self.targets[tid][lun] = path
        self._adm("--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", tid, "-I", "ALL")
        return iqn

    def url(self, tid, lun):
        return f"iscsi://{self.host}:{self.port}/{target_iqn(tid)}/{lun}"

    def disk(self, tid, lun, initiator, device="scsi-block", target=0, guest_lun=0, **kw):
        """A topology Disk for LUN `lun` of target `tid` seen through the I_T nexus of initiator
        `initiator` (a short name), as a QEMU `device` (scsi-block, scsi-generic or scsi-hd)."""
        bd = iscsi_blockdev(self.port, target_iqn(tid), lun, initiator_iqn(initiator), self.host)
        return Disk(backend="iscsi", device=device, target=target, lun=guest_lun, blockdev=bd, **kw)

    def pause(self):
        """Makes the target unresponsive (SIGSTOP): connections stay, nothing answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self, timeout=10):
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.resume()
                for tid in list(self.targets):
                    self._adm("--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", tid, "--force",
                              check=False)
                self._adm("--op", "delete", "--mode", "system", check=False)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with open(self.log, "a") as log:
                        log.write("tgtd still running: killed\n")
                    self.proc.kill()
                    self.proc.wait()
        finally:
            self.proc = None
            self.targets = {}
            for suffix in ("", ".lock"):
                try:
                    os.unlink(f"/var/run/tgtd/socket.{self.control}{suffix}")
                except OSError:
                    pass


def parse_cunit(text):
    """{suite.test: "pass" | "FAIL" | "skip"} of iscsi-test-cu's CUnit output. libiscsi reports a
    test it cannot run (the device lacks the command, or the test needs a second nexus) as passed,
    after a "[SKIPPED]" message."""
    results = {}
    suite = current = None
    for line in text.splitlines():
        m = re.match(r"\s*Suite: (\S+)", line)
        if m:
            suite, current = m.group(1), None
            continue
        if line.startswith("Run Summary"):
            current = None
            continue
        m = re.search(r"Test: (\S+) \.\.\.(.*)", line)
        if m:
            current = f"{suite}.{m.group(1)}"
            results[current] = "?"
            line = m.group(2)
        if current is None:
            continue
        if "FAILED" in line:
            results[current] = "FAIL"
        elif "[SKIPPED]" in line and results[current] != "FAIL":
            results[current] = "skip"
        elif re.search(r"\bpassed\b", line) and results[current] == "?":
            results[current] = "pass"
    return results
